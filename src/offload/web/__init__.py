"""offload's web part: the jobs pages, the status endpoint and their templates.

The templates live in :data:`TEMPLATES_DIR` (``offload/web/templates``): ``offload/base.html``,
``offload/jobs.html``, ``offload/jobs_table.html`` (the ``{% jobs_table %}`` tag),
``offload/job_detail.html`` and ``registration/login.html``.
"""

from __future__ import annotations

from pathlib import Path

#: The folder holding the web part's templates.
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

__all__ = ["TEMPLATES_DIR"]
