"""A griffe extension that turns the reStructuredText idioms of equirelax's docstrings into the
Markdown that mkdocstrings renders.

equirelax's docstrings are numpydoc sections written in reStructuredText, read as they are by
``help()`` and by the doctests. mkdocstrings renders docstrings as Markdown, where these idioms
would show as raw text, so before rendering (griffe's ``on_object`` event, once the object tree
is complete) each docstring is rewritten:

* the roles ``:class:`~a.b.C```, ``:func:``, ``:meth:``, ``:attr:``, ``:mod:``, ``:data:`` and
  ``:exc:`` become optional cross-references (a link where the target is rendered in the site,
  plain code otherwise), with the name resolved in the docstring's own scope;
* ``.. math::`` blocks become ``$$ ... $$`` blocks (MathJax, through ``pymdownx.arithmatex``),
  rows separated by ``\\\\`` inside an ``aligned`` environment as Sphinx renders them;
* simple tables (columns under rules of ``=``) become Markdown tables;
* a paragraph ending in ``::`` (a literal block follows) ends in ``:``;
* the continuation lines of bullet items, indented by 2 spaces, are indented by 4.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

__all__ = ["RstMarkup", "rst_to_markdown"]

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj):`(~?)([^`<>]+)`")
_TABLE_RULE = re.compile(r"^( *)=+( +=+)+ *$")
_BULLET = re.compile(r"^ *[-*] \S")


def _resolve(obj: griffe.Object | griffe.Alias, name: str) -> str:
    """The full path of ``name`` as seen from ``obj``'s scope (``name`` itself if unknown)."""
    head, _, rest = name.partition(".")
    if head == obj.package.name:
        return name
    try:
        resolved = obj.resolve(head)
    except griffe.NameResolutionError:
        return name
    return f"{resolved}.{rest}" if rest else resolved


def _cross_references(text: str, obj: griffe.Object | griffe.Alias) -> str:
    def reference(match: re.Match[str]) -> str:
        short, name = match.group(1) == "~", match.group(2).strip()
        title = name.rpartition(".")[2] if short else name
        return f'<autoref identifier="{_resolve(obj, name)}" optional>`{title}`</autoref>'

    return _ROLE.sub(reference, text)


def _indented_block(lines: list[str], start: int) -> int:
    """The index after the indented block (blank lines inside it included) from ``start``."""
    end = start
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith(" ")):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return end


def _math_blocks(lines: list[str]) -> list[str]:
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.strip() != ".. math::":
            out.append(line)
            index += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        body_start = index + 1
        end = _indented_block([row.removeprefix(indent) for row in lines], body_start)
        body = textwrap.dedent("\n".join(row.removeprefix(indent) for row in lines[body_start:end]))
        rows = body.strip().split("\n")
        if "\\\\" in body and "\\begin" not in body:  # several aligned rows, as Sphinx wraps them
            rows = ["\\begin{aligned}", *rows, "\\end{aligned}"]
        out.extend(f"{indent}{row}" for row in ["$$", *rows, "$$"])
        index = end
    return out


def _markdown_table(rows: list[str], rule: str) -> list[str]:
    """A simple table (its lines between the opening and the closing rule) as Markdown; the
    rows above an inner rule are the header."""
    starts = [match.start() for match in re.finditer(r"=+", rule)]
    header = [""] * len(starts)
    records: list[list[str]] = []
    for row in rows:
        if _TABLE_RULE.match(row):
            header, records = records[0], []
            continue
        ends = [*starts[1:], None]
        cells = [row[start:end].strip() for start, end in zip(starts, ends, strict=True)]
        if records and not cells[0]:
            merged = zip(records[-1], cells, strict=True)
            records[-1] = [f"{old} {new}".strip() for old, new in merged]
        else:
            records.append(cells)
    lines = [header, ["---"] * len(starts), *records]
    return ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines]


def _table_end(lines: list[str], first: int) -> int | None:
    """The closing rule of a table opened at ``first``: a rule followed by a blank line."""
    for index in range(first + 1, len(lines)):
        if _TABLE_RULE.match(lines[index]) and not "".join(lines[index + 1 : index + 2]).strip():
            return index
    return None


def _tables(lines: list[str]) -> list[str]:
    out: list[str] = []
    index = 0
    while index < len(lines):
        end = _table_end(lines, index) if _TABLE_RULE.match(lines[index]) else None
        if end is None:
            out.append(lines[index])
            index += 1
            continue
        out.extend(["", *_markdown_table(lines[index + 1 : end], lines[index]), ""])
        index = end + 1
    return out


def _literal_markers(lines: list[str]) -> list[str]:
    """``text::`` before an indented block becomes ``text:``; ``text ::`` and ``::`` lose it."""
    out = []
    for index, line in enumerate(lines):
        following = next((row for row in lines[index + 1 :] if row.strip()), "")
        indent = len(line) - len(line.lstrip())
        if (
            line.endswith("::")
            and not line.lstrip().startswith("..")
            and len(following) - len(following.lstrip()) > indent
        ):
            text = line[:-2]
            line = text.rstrip() if not text.strip() or text[-1].isspace() else f"{text}:"
        out.append(line)
    return out


def _list_items(lines: list[str]) -> list[str]:
    """Bullet items indent their continuation by 2 spaces (reStructuredText); Python-Markdown
    needs 4, so every line inside ``n`` items moves ``2 n`` spaces to the right. An item after
    one with several blocks gets a blank line before it, which Python-Markdown needs too."""
    out: list[str] = []
    items: list[int] = []  # the indentation of each bullet the current line is inside
    blocks_in_item = False
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if not line.strip():
            blocks_in_item = bool(items)
            out.append(line)
            continue
        while items and items[-1] >= indent:
            items.pop()
        if _BULLET.match(line):
            if blocks_in_item and out and out[-1].strip():
                out.append("")
            blocks_in_item = False
        out.append(" " * (2 * len(items)) + line)
        if _BULLET.match(line):
            items.append(indent)
    return out


def rst_to_markdown(text: str, obj: griffe.Object | griffe.Alias) -> str:
    """``text`` (a docstring of ``obj``) with its reStructuredText idioms in Markdown."""
    lines = _list_items(_literal_markers(_tables(_math_blocks(text.split("\n")))))
    return _cross_references("\n".join(lines), obj)


class RstMarkup(griffe.Extension):
    """Rewrite every docstring with :func:`rst_to_markdown` once the tree is complete."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring in place."""
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value, obj)
