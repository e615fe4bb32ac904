"""The documentation site (mkdocs.yml): it builds with ``--strict``, its API reference holds every
public name, a broken reference fails the build, and its quotes of the benchmark reports are
current. Needs the ``docs`` extra (``pip install -e ".[docs]"``)."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings_handlers.python")
pytest.importorskip("material")
griffe = pytest.importorskip("griffe")
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "equirelax"
BUILD_TIMEOUT_S = 120
_ANCHOR = re.compile(r'\sid="(equirelax[\w.]*)"')


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's site, built once for this module with ``--strict``."""
    site = tmp_path_factory.mktemp("site")
    result = _build(ROOT / "mkdocs.yml", site)
    assert result.returncode == 0, result.stderr[-4000:]
    return site


def _api_anchors(site: Path) -> set[str]:
    return {
        anchor
        for page in (site / "api").rglob("*.html")
        for anchor in _ANCHOR.findall(page.read_text())
    }


def _all_of(module_file: Path) -> list[str]:
    """A module's ``__all__``, read from its source (importing it would load torch)."""
    for node in ast.parse(module_file.read_text()).body:
        targets = [
            target.id for target in getattr(node, "targets", []) if isinstance(target, ast.Name)
        ]
        if "__all__" in targets or getattr(getattr(node, "target", None), "id", None) == "__all__":
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{module_file} has no __all__")


def _module_file(module: str) -> Path:
    path = SRC.parent.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


@pytest.mark.slow
def test_api_reference_documents_every_public_name_of_equirelax(site):
    anchors = _api_anchors(site)
    missing = [name for name in _all_of(SRC / "__init__.py") if f"equirelax.{name}" not in anchors]
    assert not missing, f"not in the API reference: {missing}"


@pytest.mark.slow
def test_api_reference_documents_every_name_of_each_public_module(site):
    """Each API page's module: every name of its ``__all__`` has an anchor on that page (under
    the module's path, or under the path of the submodule that defines it)."""
    pages = sorted((site / "api").rglob("index.html"))
    checked = 0
    for page in pages:
        html = page.read_text()
        roots = re.findall(r'<h1 id="(equirelax[\w.]*)"', html)
        if not roots or roots[0] == "equirelax":
            continue
        module = roots[0]
        anchors = set(_ANCHOR.findall(html))
        missing = [
            name
            for name in _all_of(_module_file(module))
            if f"{module}.{name}" not in anchors
            and not any(anchor.endswith(f".{name}") for anchor in anchors)
        ]
        assert not missing, f"{module}: not on its page: {missing}"
        checked += 1
    assert checked >= 20, f"only {checked} module pages found"


@pytest.mark.slow
def test_docstrings_render_without_raw_restructuredtext(site):
    """The griffe extension (docs/hooks/rst_markup.py) turns roles, math blocks and simple tables
    into Markdown: none is left as raw text, and the tables are HTML tables."""
    for page in (site / "api").rglob("*.html"):
        html = page.read_text()
        for raw in (":class:`", ":func:`", ":mod:`", ":meth:`", ".. math::", "\n====="):
            assert raw not in html, f"{page.relative_to(site)} shows {raw!r}"
    strategies = (site / "api" / "strategies" / "index.html").read_text()
    assert re.search(r"<td><code>recm</code></td>", strategies)


@pytest.mark.slow
def test_a_reference_to_a_missing_module_fails_the_strict_build(tmp_path):
    """The project's mkdocs.yml with its pages replaced by one that references a module that does
    not exist: the build fails and names it."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text().replace("!relative ", ""))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Broken\n\n::: equirelax.no_such_module\n")
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            python = plugin["mkdocstrings"]["handlers"]["python"]
            python["paths"] = [str(ROOT / path) for path in python["paths"]]
            extensions = python["options"].get("extensions", [])
            python["options"]["extensions"] = [str(ROOT / name) for name in extensions]
    config.update(docs_dir=str(docs), nav=["index.md"], hooks=[], watch=[])
    config["extra_javascript"] = []
    broken = tmp_path / "mkdocs.yml"
    broken.write_text(yaml.safe_dump(config))
    result = _build(broken, tmp_path / "site")
    assert result.returncode != 0
    assert "equirelax.no_such_module" in result.stdout + result.stderr


def test_which_strategy_guide_quotes_the_claims_report_as_it_stands():
    """Every line quoted in docs/guides/choosing.md is a line of benchmarks/claims.md."""
    report = (ROOT / "benchmarks" / "claims.md").read_text().split("\n")
    guide = (ROOT / "docs" / "guides" / "choosing.md").read_text().split("\n")
    quoted = [line[2:] for line in guide if line.startswith("> ")]
    assert len(quoted) >= 2
    stale = [line for line in quoted if line not in report]
    assert not stale, f"no longer in benchmarks/claims.md: {stale}"


def _rst_markup():
    spec = importlib.util.spec_from_file_location("rst_markup", ROOT / "docs/hooks/rst_markup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rst_to_markdown_turns_roles_math_tables_literal_blocks_and_lists_into_markdown():
    code = "from collections import OrderedDict\n\nclass Layer:\n    def loss(self): ...\n"
    module = griffe.visit("toy", filepath=Path("toy.py"), code=code)
    text = "\n".join(
        [
            "See :class:`~toy.Layer`, :meth:`Layer.loss` and :class:`OrderedDict`.",
            "",
            ".. math::",
            "",
            "    a &= b \\\\",
            "    c &= d",
            "",
            "=====  ======",
            "name   what",
            "=====  ======",
            "``a``  first",
            "       more",
            "``b``  second",
            "=====  ======",
            "",
            "The rule::",
            "",
            "    x <- y",
            "",
            "- an item with a literal block::",
            "",
            "      v <- v + dt F",
            "",
            "  and more text",
            "- the next item",
        ]
    )
    markdown = _rst_markup().rst_to_markdown(text, module)
    assert '<autoref identifier="toy.Layer" optional>`Layer`</autoref>' in markdown
    assert '<autoref identifier="toy.Layer.loss" optional>`Layer.loss`</autoref>' in markdown
    assert '<autoref identifier="collections.OrderedDict" optional>' in markdown
    assert "$$\n\\begin{aligned}\na &= b \\\\\nc &= d\n\\end{aligned}\n$$" in markdown
    assert "| name | what |\n| --- | --- |\n| ``a`` | first more |\n| ``b`` | second |" in markdown
    assert "The rule:\n\n    x <- y" in markdown
    assert (
        "- an item with a literal block:\n\n        v <- v + dt F\n\n    and more text\n\n- the"
        in markdown
    )
    assert ":class:" not in markdown
    assert "::" not in markdown
