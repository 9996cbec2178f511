"""offload's URLs for a Django project: ``path("jobs/", include("offload.urls"))``.

Names live in the ``offload`` namespace: ``offload:jobs``, ``offload:job_detail``,
``offload:job_cancel``, ``offload:job_resubmit``, ``offload:job_delete`` and
``offload:update_job_status`` (here ``/jobs/update-job-status/<id>/``). A project that wants
Tethys's root-level ``/update-job-status/<id>/`` also includes ``offload.urls_root`` at ``""``.
"""

from __future__ import annotations

from offload.web.urls import urlpatterns

app_name = "offload"

__all__ = ["app_name", "urlpatterns"]
