"""WSGI entry point of the ready-made portal, for WSGI servers (gunicorn, mod_wsgi)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "offload.portal.settings")

application = get_wsgi_application()
