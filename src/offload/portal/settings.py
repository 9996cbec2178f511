"""Settings of the ready-made portal, read from ``OFFLOAD_*`` environment variables.

``OFFLOAD_HOME`` (default ``./.offload``) holds the SQLite database and the generated secret key;
``OFFLOAD_DATABASE_URL`` points at another database (``postgresql://user@host/db``);
``OFFLOAD_SECRET_KEY``, ``OFFLOAD_DEBUG``, ``OFFLOAD_ALLOWED_HOSTS``, ``OFFLOAD_POLL_INTERVAL``,
``OFFLOAD_IDLE_INTERVAL``, ``OFFLOAD_LEASE_SECONDS`` and ``OFFLOAD_DB_CONN_MAX_AGE`` override the
rest.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

import dj_database_url

from offload.conf import default_home
from offload.web import TEMPLATES_DIR


def _env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(
        f"{name}={os.environ[name]!r} is not a boolean: use 1/true/yes/on or 0/false/no/off"
    )


def _secret_key(home: Path) -> str:
    """``$OFFLOAD_SECRET_KEY``, else a key generated once into ``<home>/secret_key`` (mode 600)."""
    if os.environ.get("OFFLOAD_SECRET_KEY"):
        return os.environ["OFFLOAD_SECRET_KEY"]
    path = home / "secret_key"
    if not path.exists():
        # Written aside, then linked into place: two processes starting at once both end up with the
        # key of whichever linked first, and nobody reads a half-written file.
        fd, tmp = tempfile.mkstemp(dir=home, prefix=".secret_key.")  # mode 600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(50))
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    key = path.read_text().strip()
    if not key:
        raise RuntimeError(
            f"{path} is empty: delete it (a new key is generated) or set OFFLOAD_SECRET_KEY"
        )
    return key


def _database(url: str) -> dict[str, Any]:
    config: dict[str, Any] = dict(dj_database_url.parse(url))
    engine = config.get("ENGINE", "")
    if engine == "django.db.backends.sqlite3":
        # Several processes share the file (web tier, monitor, CLI): wait for locks instead of failing,
        # take the write lock up front so a read never has to be upgraded, and let readers run
        # alongside the writer (WAL).
        config["OPTIONS"] = {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            **config.get("OPTIONS", {}),
        }
    elif engine == "django.db.backends.postgresql":
        # Django's documentation: under ASGI (how `offload serve` runs) persistent connections should
        # stay disabled, so the default is 0; a WSGI deployment can raise it.
        config["CONN_MAX_AGE"] = int(os.environ.get("OFFLOAD_DB_CONN_MAX_AGE", "0"))
        config["CONN_HEALTH_CHECKS"] = True
        config["OPTIONS"] = {
            "prepare_threshold": _prepare_threshold(),
            **config.get("OPTIONS", {}),
        }
    return config


def _prepare_threshold() -> int | None:
    """psycopg prepares a statement on the server once a connection has run it this many times
    (``OFFLOAD_DB_PREPARE_THRESHOLD``, default 5). Django turns that off by default for the sake
    of poolers in transaction mode (PgBouncer before 1.21), which cannot keep prepared statements:
    behind one, set ``OFFLOAD_DB_PREPARE_THRESHOLD=off``."""
    text = os.environ.get("OFFLOAD_DB_PREPARE_THRESHOLD", "5").strip().lower()
    if text in ("off", "none", ""):
        return None
    try:
        threshold = int(text)
    except ValueError:
        raise RuntimeError(
            f"OFFLOAD_DB_PREPARE_THRESHOLD={text!r} is not a number of runs or 'off'"
        ) from None
    if threshold < 0:
        raise RuntimeError(f"OFFLOAD_DB_PREPARE_THRESHOLD={text!r} must not be negative")
    return threshold


HOME = default_home()
HOME.mkdir(parents=True, exist_ok=True)

SECRET_KEY = _secret_key(HOME)
DEBUG = _env_flag("OFFLOAD_DEBUG")
ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get(
        "OFFLOAD_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver"
    ).split(",")
    if host.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "offload",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "offload.portal.urls"
WSGI_APPLICATION = "offload.portal.wsgi.application"
ASGI_APPLICATION = "offload.portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # offload keeps its templates in offload/web/templates (offload/templates.py is a module).
        "DIRS": [TEMPLATES_DIR],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": _database(
        os.environ.get("OFFLOAD_DATABASE_URL") or f"sqlite:///{HOME / 'offload.sqlite3'}"
    ),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/jobs/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = HOME / "static"

OFFLOAD: dict[str, Any] = {"HOME": str(HOME)}
if os.environ.get("OFFLOAD_POLL_INTERVAL"):
    OFFLOAD["POLL_INTERVAL"] = float(os.environ["OFFLOAD_POLL_INTERVAL"])
if os.environ.get("OFFLOAD_IDLE_INTERVAL"):
    OFFLOAD["IDLE_INTERVAL"] = float(os.environ["OFFLOAD_IDLE_INTERVAL"])
if os.environ.get("OFFLOAD_LEASE_SECONDS"):
    OFFLOAD["LEASE_SECONDS"] = float(os.environ["OFFLOAD_LEASE_SECONDS"])
