"""Django settings for the test suite; ``OFFLOAD_TEST_DB`` picks the database.

- ``sqlite`` (default): a file database, so monitor subprocesses can share it with the test process.
  Its path comes from ``OFFLOAD_TEST_SQLITE``, else a new temporary directory; either way it is put
  back into the environment, so subprocesses that load these settings use the same files.
- ``postgres``: the server of ``OFFLOAD_TEST_POSTGRES_URL`` (what ``scripts/start-postgres`` prints;
  default ``postgresql://postgres@127.0.0.1:5432/postgres``), database ``offload_test``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import dj_database_url

from offload.web import TEMPLATES_DIR


def _shared_temp_dir(env: str, prefix: str) -> Path:
    """The directory named by ``env``; else a new one, exported under ``env``, removed at exit."""
    if os.environ.get(env):
        return Path(os.environ[env])
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ[env] = str(path)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _database() -> dict[str, Any]:
    kind = os.environ.get("OFFLOAD_TEST_DB", "sqlite")
    if kind == "sqlite":
        if os.environ.get("OFFLOAD_TEST_SQLITE"):
            name = os.environ["OFFLOAD_TEST_SQLITE"]
        else:
            name = str(
                _shared_temp_dir("OFFLOAD_TEST_SQLITE_DIR", "offload-test-db-") / "db.sqlite3"
            )
            os.environ["OFFLOAD_TEST_SQLITE"] = name
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": name,
            "TEST": {"NAME": name},
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    if kind == "postgres":
        url = os.environ.get(
            "OFFLOAD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        )
        config: dict[str, Any] = dict(dj_database_url.parse(url))
        config["NAME"] = "offload_test"
        config["TEST"] = {"NAME": "offload_test"}
        config["OPTIONS"] = {"prepare_threshold": 5}  # as the portal sets it
        return config
    raise ValueError(f"OFFLOAD_TEST_DB={kind!r}: use 'sqlite' or 'postgres'")


SECRET_KEY = "offload-tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver"]

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

DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, tests only

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/jobs/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"

OFFLOAD_HOME = _shared_temp_dir("OFFLOAD_TEST_HOME", "offload-test-home-")
OFFLOAD: dict[str, Any] = {
    "HOME": str(OFFLOAD_HOME),
    "POLL_INTERVAL": 0.2,
    "IDLE_INTERVAL": 0.1,
    "LEASE_SECONDS": 10,
    "RETRY_INITIAL": 0.2,
}
