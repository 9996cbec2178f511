"""The README's table of the portal's environment variables names exactly the ones the code reads."""

from __future__ import annotations

import re
from pathlib import Path

from offload.conf import ENGINE_ENV_PREFIX

ROOT = Path(__file__).resolve().parents[2]
#: What the portal's settings read, and offload's own settings beneath them.
SOURCES = ("src/offload/portal/settings.py", "src/offload/conf.py")


def _read_by_the_code() -> set[str]:
    names: set[str] = set()
    for source in SOURCES:
        text = (ROOT / source).read_text(encoding="utf-8")
        names |= set(re.findall(r"""["'](OFFLOAD_[A-Z0-9_]*[A-Z0-9])["']""", text))
    names.add(ENGINE_ENV_PREFIX + "<KIND>")  # OFFLOAD_ENGINE_slurm, OFFLOAD_ENGINE_dask …
    return names


def _readme_table() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## The ready-made portal", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(OFFLOAD_[A-Z0-9_<>]+)` \| ([^|]+) \|", section, flags=re.M)
    return {name: default.strip() for name, default in rows}


def test_every_variable_the_portal_reads_is_in_the_readme_table_and_no_other() -> None:
    table = _readme_table()
    assert set(table) == _read_by_the_code()
    assert all(table.values())  # each with its default


def test_the_defaults_in_the_table_are_the_code_s() -> None:
    table = _readme_table()
    settings = (ROOT / "src/offload/portal/settings.py").read_text(encoding="utf-8")
    for name in ("OFFLOAD_DB_CONN_MAX_AGE", "OFFLOAD_DB_PREPARE_THRESHOLD"):
        [default] = re.findall(rf'"{name}", "([^"]*)"', settings)
        assert table[name] == f"`{default}`", name
    [hosts] = re.findall(r'"OFFLOAD_ALLOWED_HOSTS", "([^"]*)"', settings)
    assert table["OFFLOAD_ALLOWED_HOSTS"] == f"`{hosts}`"
    # The monitor's pace: the defaults of OffloadSettings, which the portal leaves alone.
    from offload.conf import OffloadSettings

    for name, field in (
        ("OFFLOAD_POLL_INTERVAL", "poll_interval"),
        ("OFFLOAD_IDLE_INTERVAL", "idle_interval"),
        ("OFFLOAD_LEASE_SECONDS", "lease_seconds"),
    ):
        value = OffloadSettings.__dataclass_fields__[field].default
        assert table[name] == f"`{value:g}`", name
