"""Runs scheduler commands as local subprocesses."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from offload.errors import EngineUnavailableError
from offload.transport.base import CommandResult, CommandRunner


class LocalRunner(CommandRunner):
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        input_text: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        args = [str(a) for a in argv]
        full_env = {**os.environ, **env} if env is not None else None
        try:
            proc = subprocess.run(
                args,
                input=input_text,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=cwd,
                env=full_env,
                check=False,
            )
        except FileNotFoundError as exc:
            raise EngineUnavailableError(f"command not found: {args[0]}") from exc
        except subprocess.TimeoutExpired as exc:
            raise EngineUnavailableError(f"{args[0]} did not answer within {timeout:g} s") from exc
        return CommandResult(tuple(args), proc.returncode, proc.stdout, proc.stderr)

    def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(mode)
        tmp.replace(target)

    def read_text(self, path: str, limit: int | None = None) -> str | None:
        try:
            with open(path, errors="replace") as fh:
                return fh.read() if limit is None else fh.read(limit)
        except FileNotFoundError:
            return None

    def download_tree(
        self, remote_folder: str, local_folder: str, skip: Callable[[str], bool] | None = None
    ) -> list[str]:
        return copy_tree(remote_folder, local_folder, skip)

    def upload_tree(
        self, local_folder: str, remote_folder: str, skip: Callable[[str], bool] | None = None
    ) -> list[str]:
        return copy_tree(local_folder, remote_folder, skip)


#: A file's size and whole-second modification time: what "unchanged" means when staging.
FileStamp = tuple[int, int]


def local_files(folder: str, skip: Callable[[str], bool] | None = None) -> dict[str, FileStamp]:
    """Relative path → (size, mtime) of the regular files below ``folder``, never following a
    symbolic link (so nothing outside it); {} when it does not exist."""
    found: dict[str, FileStamp] = {}
    root = folder.rstrip("/")

    def walk(relative: str) -> None:
        try:
            entries = list(os.scandir(f"{root}/{relative}" if relative else root))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            path = f"{relative}/{entry.name}" if relative else entry.name
            if skip is not None and skip(path):
                continue
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                walk(path)
            elif stat.S_ISREG(info.st_mode):
                found[path] = (info.st_size, int(info.st_mtime))

    walk("")
    return found


def local_target(root: str, relative: str) -> Path:
    """Where ``relative`` goes below ``root`` here, its parent folders created; refused (an
    error) if a symbolic link on the way would lead the file out of ``root``."""
    base = Path(root).resolve()
    target = base / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    parent = target.parent.resolve()
    if parent != base and base not in parent.parents:
        raise EngineUnavailableError(f"refusing to write {relative!r}: it leads out of {root}")
    if target.is_symlink():
        target.unlink()
    return target


def copy_tree(source: str, target: str, skip: Callable[[str], bool] | None = None) -> list[str]:
    """Copy changed regular files from ``source`` to ``target`` on this machine."""
    if Path(source).resolve() == Path(target).resolve():
        return []
    existing = local_files(target, skip)
    copied: list[str] = []
    try:
        for relative, stamp in sorted(local_files(source, skip).items()):
            if existing.get(relative) == stamp:
                continue
            destination = local_target(target, relative)
            tmp = destination.with_name(f".{destination.name}.part")
            shutil.copy2(f"{source.rstrip('/')}/{relative}", tmp)
            tmp.replace(destination)
            copied.append(relative)
    except OSError as exc:
        raise EngineUnavailableError(f"copying {source} to {target} failed: {exc}") from exc
    return copied
