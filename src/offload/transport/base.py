"""The command-runner contract engines use to reach a scheduler: a local subprocess or SSH."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandRunner(abc.ABC):
    """Runs argument lists (never shell strings) where the scheduler's commands live.

    Raises :class:`offload.errors.EngineUnavailableError` when the host cannot be reached or a
    command times out, so the caller marks jobs stale instead of failed.
    """

    @abc.abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        input_text: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult: ...

    @abc.abstractmethod
    def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file where the commands run (creating parent folders)."""

    @abc.abstractmethod
    def read_text(self, path: str, limit: int | None = None) -> str | None:
        """Read a file where the commands run; None if it does not exist."""

    def download_tree(
        self, remote_folder: str, local_folder: str, skip: Callable[[str], bool] | None = None
    ) -> list[str]:
        """Copy the regular files below ``remote_folder`` (where the commands run) into
        ``local_folder`` (here), keeping their relative paths and times; files whose size and
        modification time already match are left alone, symbolic links are never followed.
        ``skip(relative_path)`` leaves out files and folders. Returns the relative paths copied;
        a folder that does not exist copies nothing. Raises ``EngineUnavailableError`` when a
        transfer fails (it can be tried again)."""
        raise NotImplementedError(f"{type(self).__name__} cannot copy folders")

    def upload_tree(
        self, local_folder: str, remote_folder: str, skip: Callable[[str], bool] | None = None
    ) -> list[str]:
        """The other way: files below ``local_folder`` (here) into ``remote_folder``."""
        raise NotImplementedError(f"{type(self).__name__} cannot copy folders")

    def close(self) -> None:
        """Release the connection, if any."""
