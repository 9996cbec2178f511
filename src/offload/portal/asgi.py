"""ASGI entry point of the ready-made portal (``uvicorn offload.portal.asgi:application``)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "offload.portal.settings")

application = get_asgi_application()
