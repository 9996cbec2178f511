"""Site-root URLs the ready-made portal adds next to ``offload.urls`` (at ``jobs/``)::

    path("", include("offload.urls_root")),
    path("jobs/", include("offload.urls")),

``/update-job-status/<id>/`` where Tethys has it (``offload_root:update_job_status``), and ``/``
redirecting to the jobs list. The namespace is ``offload_root``, not ``offload``, so both modules
can be included side by side; :meth:`offload.manager.JobManager.get_job_status_callback_url`
prefers this root URL when it is installed and falls back to ``offload:update_job_status``.
"""

from __future__ import annotations

from django.urls import URLPattern, path
from django.views.generic import RedirectView

from offload.web import views

app_name = "offload_root"

urlpatterns: list[URLPattern] = [
    path("", RedirectView.as_view(pattern_name="offload:jobs", permanent=False), name="home"),
    path("update-job-status/<int:job_id>/", views.update_job_status, name="update_job_status"),
]
