"""The checked-in status documentation is generated from the table the code enforces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from offload.status import render_docs

ROOT = Path(__file__).resolve().parents[2]


def test_statuses_doc_matches_the_code() -> None:
    doc = ROOT / "docs" / "statuses.md"
    assert doc.read_text(encoding="utf-8") == render_docs(), (
        "docs/statuses.md is out of date: run `python -m offload.status > docs/statuses.md`"
    )


def test_python_m_offload_status_prints_the_doc() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "offload.status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout == render_docs()
    assert proc.stderr == ""  # no warning (e.g. runpy's about a module imported twice)
