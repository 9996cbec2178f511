"""Runs scheduler commands as local subprocesses."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
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
