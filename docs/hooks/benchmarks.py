"""An MkDocs hook that publishes the benchmark reports (``benchmarks/*.md``) as pages of the site.

The reports stay where the benchmark scripts write them, beside ``benchmarks/results/``; this hook
adds them, and the figures they link, to the site's files under ``benchmarks/``, so that the
method pages link to the measured figures and ``mkdocs build --strict`` checks every such link.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

__all__ = ["REPORTS", "on_files"]

REPORTS = "benchmarks"
"""The folder of the reports, relative to the repository root (where ``mkdocs.yml`` is)."""

_FIGURE = re.compile(r"\]\(([^)\s]+\.png)\)")


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    """Add every report and every figure a report links to ``files``."""
    root = Path(config.config_file_path).parent
    for report in sorted((root / REPORTS).glob("*.md")):
        paths = [report, *(report.parent / link for link in _FIGURE.findall(report.read_text()))]
        for path in paths:
            relative = path.resolve().relative_to(root).as_posix()
            if files.get_file_from_path(relative) is None:
                files.append(File(relative, str(root), config.site_dir, config.use_directory_urls))
    return files
