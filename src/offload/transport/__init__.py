"""Command runners: where an engine's scheduler commands run (locally, or over SSH)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from offload.errors import ConfigurationError
from offload.transport.base import CommandResult, CommandRunner
from offload.transport.local import LocalRunner

#: ``host`` values that mean "this machine".
LOCAL_HOSTS = ("", "local")


def is_remote(options: Mapping[str, Any]) -> bool:
    """Whether an engine's options ask for SSH: a ``host`` other than ``""``/``"local"``
    (``"localhost"`` counts as remote only together with a port or a user name, which can only
    mean its sshd), unless the ``transport`` option says ``"local"`` or ``"ssh"`` explicitly."""
    transport = options.get("transport")
    if transport in ("local", "ssh"):
        return bool(transport == "ssh")
    if transport is not None and transport != "":
        raise ConfigurationError(f"transport={transport!r} is not one of local, ssh")
    host = str(options.get("host") or "").strip()
    if host in LOCAL_HOSTS:
        return False
    if host == "localhost":
        return bool(options.get("port") or options.get("username"))
    return True


def runner_for(options: Mapping[str, Any]) -> CommandRunner:
    """A local runner, or an SSH runner for a remote ``host`` (asyncssh is imported only then)."""
    if not is_remote(options):
        return LocalRunner()
    from offload.transport.ssh import SSHRunner

    return SSHRunner.from_options(options)


__all__ = ["CommandResult", "CommandRunner", "LocalRunner", "is_remote", "runner_for"]
