"""URLs of the web part, included by ``offload.urls`` (namespace ``offload``)::

    path("jobs/", include("offload.urls"))

gives ``/jobs/`` (the list), ``/jobs/<id>/`` (a job), ``/jobs/<id>/logs/`` (the live log tail, JSON),
``/jobs/<id>/files/<path>`` (a result file, with Range), ``/jobs/<id>/run|pause|resume|cancel|resubmit|delete/``
(POST), ``/jobs/update-job-status/<id>/``, the REST API under ``/jobs/api/`` (OpenAPI document
at ``/jobs/api/openapi.json``) and the event stream ``/jobs/events/stream``. The ready-made portal also mounts
``offload.urls_root`` at the site root for Tethys's ``/update-job-status/<id>/``.
"""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from offload.web import sse, views
from offload.web.api import api

app_name = "offload"

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.jobs, name="jobs"),
    path("<int:job_id>/", views.job_detail, name="job_detail"),
    path("<int:job_id>/logs/", views.job_logs_tail, name="job_logs"),
    path("<int:job_id>/files/<path:path>", views.job_file, name="job_file"),
    path("<int:job_id>/run/", views.job_action, {"action": "run"}, name="job_run"),
    path("<int:job_id>/pause/", views.job_action, {"action": "pause"}, name="job_pause"),
    path("<int:job_id>/resume/", views.job_action, {"action": "resume"}, name="job_resume"),
    path("<int:job_id>/cancel/", views.job_action, {"action": "cancel"}, name="job_cancel"),
    path("<int:job_id>/resubmit/", views.job_action, {"action": "resubmit"}, name="job_resubmit"),
    path("<int:job_id>/delete/", views.job_action, {"action": "delete"}, name="job_delete"),
    path("update-job-status/<int:job_id>/", views.update_job_status, name="update_job_status"),
    path("events/stream", sse.events_stream, name="events_stream"),
    path("api/", api.urls),
]
