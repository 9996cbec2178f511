"""The LOCAL engine: runs a job's executable as a process group on the monitor's machine.

Each attempt gets a folder ``<workspace>/.offload/job-<id>/attempt-<n>/`` holding the command, the
runner's pids, ``stdout.log``/``stderr.log`` and, once it ends, ``exit.json``. The job is started
through the detached runner (``local_runner.py``), so a monitor restart neither kills nor orphans
it: the next monitor reads the same files. At most ``max_jobs`` run at once; beyond that submissions
are deferred and retried next cycle.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from offload.engines import local_runner
from offload.engines.base import (
    Engine,
    JobHandle,
    JobSpec,
    NativeReport,
    SubmitOutcome,
    SubmitResult,
    attempt_dir,
    attempt_folder,
    validate_arguments,
    validate_environment,
)
from offload.errors import InvalidJobError, JobStateError
from offload.status import Status

#: Variables of the monitor's own environment a job inherits; the rest (database URLs, secret
#: keys) stays with the monitor. More can be listed in the ``inherit_environment`` option.
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")
RUNNER_FILE = local_runner.__file__
LOG_LIMIT = 2_000_000  # characters of a log returned by get_logs


def _folder_path(handle: JobHandle) -> str:
    """The folder of the handle's attempt: as recorded in its state when it started, else where
    it would be."""
    return str(
        handle.state.get("dir") or attempt_folder(handle.workspace, handle.job_id, handle.attempt)
    )


def _alive(pid: int, start: Any) -> bool:
    """Whether ``pid`` is still the process that started at ``start`` and has not ended."""
    stat = local_runner.proc_stat(pid)
    return stat is not None and stat[1] == start and stat[0] not in ("Z", "X")


def _exit_message(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with code {returncode}"


class LocalEngine(Engine):
    kind = "local"
    can_pause = True

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.max_jobs = int(self.options.get("max_jobs") or os.cpu_count() or 1)
        self.kill_grace = float(self.options.get("kill_grace", 10))
        state_dir = self.options.get("state_dir") or os.path.join(
            os.environ.get("OFFLOAD_HOME", ".offload"), "local-engine"
        )
        self.state_dir = Path(state_dir).resolve()
        self.host = socket.gethostname()
        self.inherit = tuple(INHERITED) + tuple(self.options.get("inherit_environment", ()))

    # -- validation ----------------------------------------------------------------------------
    def validate(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        params = dict(parameters)
        executable = params.get("executable")
        if not isinstance(executable, str) or not executable.strip():
            raise InvalidJobError("executable", "required: the program to run, e.g. 'python'")
        if "\x00" in executable:
            raise InvalidJobError("executable", "must not contain NUL characters")
        params["executable"] = executable
        params["arguments"] = validate_arguments(params.get("arguments"))
        params["environment"] = validate_environment(params.get("environment"))
        return params

    # -- submission -----------------------------------------------------------------------------
    def _resolve_executable(self, executable: str, workspace: str, path: str) -> str | None:
        if os.sep in executable:
            candidate = Path(workspace, executable) if not os.path.isabs(executable) else None
            full = candidate if candidate is not None else Path(executable)
            return str(full) if full.is_file() and os.access(full, os.X_OK) else None
        return shutil.which(executable, path=path)

    def _job_env(self, spec: JobSpec, params: Mapping[str, Any]) -> dict[str, str]:
        env = {k: os.environ[k] for k in self.inherit if k in os.environ}
        env.setdefault("PATH", os.defpath)
        env.update(params.get("environment") or {})
        env["OFFLOAD_JOB_ID"] = str(spec.job_id)
        env["OFFLOAD_ATTEMPT"] = str(spec.attempt)
        env["OFFLOAD_WORKSPACE"] = spec.workspace
        return env

    def _live_slots(self) -> int:
        slots = self.state_dir / "slots"
        count = 0
        for slot in slots.glob("*.json"):
            try:
                data = json.loads(slot.read_text())
            except (OSError, ValueError):
                continue
            pid = data.get("runner_pid")
            if pid and _alive(pid, data.get("runner_start")):
                count += 1
                continue
            if time.time() - slot.stat().st_mtime > 30 or pid:
                slot.unlink(missing_ok=True)  # a runner that is gone: free its slot
            else:
                count += 1  # being started right now
        return count

    def submit_batch(self, specs: Sequence[JobSpec]) -> list[SubmitResult]:
        (self.state_dir / "slots").mkdir(parents=True, exist_ok=True)
        lock_path = self.state_dir / "slots.lock"
        results: list[SubmitResult] = []
        with open(lock_path, "w") as lock:
            # Several monitors on one host share the slot count.
            fcntl.flock(lock, fcntl.LOCK_EX)
            running = self._live_slots()
            for spec in specs:
                adopted = self._adopt(spec)
                if adopted is not None:
                    results.append(adopted)
                    continue
                if running >= self.max_jobs:
                    results.append(
                        SubmitResult(
                            spec.job_id,
                            SubmitOutcome.DEFERRED,
                            message=f"waiting for a free local slot ({running} of "
                            f"{self.max_jobs} in use)",
                        )
                    )
                    continue
                result = self._start(spec)
                if result.outcome == SubmitOutcome.SUBMITTED:
                    running += 1
                results.append(result)
        return results

    def _adopt(self, spec: JobSpec) -> SubmitResult | None:
        """An attempt that was already started (the monitor crashed before recording it)."""
        folder = attempt_dir(spec.workspace, spec.job_id, spec.attempt)
        runner = self._read_json(folder / "runner.json")
        if runner is None:
            if (folder / "exit.json").exists():
                return SubmitResult(
                    spec.job_id,
                    SubmitOutcome.SUBMITTED,
                    native_id="0",
                    state=self._state(folder, {}),
                    status=Status.RUNNING,
                    adopted=True,
                )
            return None
        return SubmitResult(
            spec.job_id,
            SubmitOutcome.SUBMITTED,
            native_id=str(runner["pid"]),
            state=self._state(folder, runner),
            status=Status.RUNNING,
            native_status="running",
            adopted=True,
        )

    def _state(self, folder: Path, runner: Mapping[str, Any]) -> dict[str, Any]:
        return {"host": self.host, "dir": str(folder), **dict(runner)}

    def _start(self, spec: JobSpec) -> SubmitResult:
        try:
            params = self.validate(spec.parameters)
        except InvalidJobError as exc:
            return SubmitResult(spec.job_id, SubmitOutcome.REJECTED, message=str(exc))
        workspace = Path(spec.workspace)
        folder = attempt_dir(spec.workspace, spec.job_id, spec.attempt)
        folder.mkdir(parents=True, exist_ok=True)
        env = self._job_env(spec, params)
        executable = self._resolve_executable(params["executable"], spec.workspace, env["PATH"])
        if executable is None:
            return SubmitResult(
                spec.job_id,
                SubmitOutcome.REJECTED,
                message=f"executable: {params['executable']!r} was not found or is not executable",
            )
        slot = self.state_dir / "slots" / f"{spec.key}.json"
        command = {
            "argv": [executable, *params["arguments"]],
            "env": env,
            "cwd": str(workspace),
            "kill_grace": self.kill_grace,
            "slot_file": str(slot),
        }
        (folder / "command.json").write_text(json.dumps(command, indent=1))
        slot.write_text("{}")
        launcher = subprocess.run(
            [sys.executable, RUNNER_FILE, str(folder)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=30,
            check=False,
        )
        if launcher.returncode != 0:
            slot.unlink(missing_ok=True)
            return SubmitResult(
                spec.job_id,
                SubmitOutcome.UNAVAILABLE,
                message=f"could not start the local runner: {launcher.stderr.decode()[-500:]}",
            )
        runner = self._wait_for_runner(folder)
        if runner is None:
            exit_data = self._read_json(folder / "exit.json")
            if exit_data is not None and exit_data.get("error"):
                slot.unlink(missing_ok=True)
                return SubmitResult(
                    spec.job_id, SubmitOutcome.REJECTED, message=str(exit_data["error"])
                )
            # Started but not yet reporting: the next poll will find it (or its exit).
            return SubmitResult(
                spec.job_id,
                SubmitOutcome.SUBMITTED,
                native_id="0",
                state=self._state(folder, {}),
                status=Status.SUBMITTED,
            )
        slot.write_text(
            json.dumps({"runner_pid": runner["runner_pid"], "runner_start": runner["runner_start"]})
        )
        return SubmitResult(
            spec.job_id,
            SubmitOutcome.SUBMITTED,
            native_id=str(runner["pid"]),
            state=self._state(folder, runner),
            status=Status.RUNNING,
            native_status="running",
        )

    def _wait_for_runner(self, folder: Path, timeout: float = 10.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        delay = 0.002
        while time.monotonic() < deadline:
            runner = self._read_json(folder / "runner.json")
            if runner is not None:
                return runner
            if (folder / "exit.json").exists():
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        return None

    @staticmethod
    def _read_json(path: Path | str) -> dict[str, Any] | None:
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.loads(fh.read())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # -- polling --------------------------------------------------------------------------------
    def poll_batch(self, handles: Sequence[JobHandle]) -> dict[int, NativeReport]:
        reports: dict[int, NativeReport] = {}
        for handle in handles:
            report = self._poll_one(handle)
            if report is not None:
                reports[handle.job_id] = report
        return reports

    def _folder(self, handle: JobHandle) -> Path:
        return Path(_folder_path(handle))

    def _poll_one(self, handle: JobHandle) -> NativeReport | None:
        # Every running job is looked at every cycle: plain strings and os calls here, not
        # pathlib (whose parsing was a third of a cycle over 10,000 jobs).
        state = handle.state
        if state.get("host", self.host) != self.host:
            return None  # started on another machine: only a monitor there can see it (stale here)
        folder = _folder_path(handle)
        exit_file = os.path.join(folder, "exit.json")
        exit_data = self._read_json(exit_file)
        if exit_data is not None:
            return self._final_report(handle, Path(folder), exit_data)
        runner: Mapping[str, Any] | None
        if "runner_pid" in state and "pid" in state:
            # What runner.json says, recorded in the job's state when the engine first read it
            # (the runner writes that file once): no need to read it again.
            runner, state_update = state, None
        else:
            runner = self._read_json(os.path.join(folder, "runner.json"))
            if runner is None:
                if not os.path.isdir(folder):
                    return NativeReport(handle.job_id, None, "missing", "attempt folder is gone")
                return NativeReport(handle.job_id, Status.SUBMITTED, "starting")
            state_update = None if "pid" in state else self._state(Path(folder), runner)
        if self._runner_alive(runner):
            paused = os.path.exists(os.path.join(folder, "paused"))
            return NativeReport(
                handle.job_id,
                Status.PAUSED if paused else Status.RUNNING,
                "stopped" if paused else "running",
                state=state_update,
            )
        # The runner is gone; it may have written exit.json just now.
        exit_data = self._read_json(exit_file)
        if exit_data is not None:
            return self._final_report(handle, Path(folder), exit_data)
        return NativeReport(
            handle.job_id,
            Status.ERROR,
            "lost",
            "the local runner ended without recording an exit status (machine restart or kill -9?)",
        )

    @staticmethod
    def _runner_alive(runner: Mapping[str, Any]) -> bool:
        pid = runner.get("runner_pid")
        return isinstance(pid, int) and _alive(pid, runner.get("runner_start"))

    def _final_report(
        self, handle: JobHandle, folder: Path, exit_data: Mapping[str, Any]
    ) -> NativeReport:
        returncode = exit_data.get("returncode")
        if returncode is None:
            return NativeReport(
                handle.job_id,
                Status.ERROR,
                "failed",
                str(exit_data.get("error", "failed to start")),
            )
        if (folder / "cancelled").exists():
            return NativeReport(
                handle.job_id, Status.ABORTED, "cancelled", "stopped on request", returncode
            )
        if returncode == 0:
            return NativeReport(handle.job_id, Status.COMPLETE, "exited", "exited with code 0", 0)
        return NativeReport(
            handle.job_id, Status.ERROR, "exited", _exit_message(returncode), returncode
        )

    # -- control --------------------------------------------------------------------------------
    def _signal_group(self, handle: JobHandle, sig: signal.Signals) -> bool:
        folder = self._folder(handle)
        runner = self._read_json(folder / "runner.json")
        if runner is None or not self._runner_alive(runner):
            return False
        if local_runner.proc_start_time(runner["pid"]) != runner.get("start"):
            return False  # the job's leader is gone; its group may be too
        try:
            os.killpg(runner["pgid"], sig)
        except ProcessLookupError:
            return False
        return True

    def cancel(self, handle: JobHandle) -> None:
        folder = self._folder(handle)
        if (folder / "exit.json").exists():
            return
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cancelled").write_text(str(time.time()))
        runner = self._read_json(folder / "runner.json")
        if self._signal_group(handle, signal.SIGTERM):
            self._signal_group(handle, signal.SIGCONT)  # a stopped process handles TERM only now
            if runner is not None:
                try:
                    os.kill(runner["runner_pid"], signal.SIGUSR1)  # SIGKILL after the grace period
                except ProcessLookupError:
                    pass

    def pause(self, handle: JobHandle) -> None:
        if not self._signal_group(handle, signal.SIGSTOP):
            raise JobStateError(f"job {handle.job_id} is not running, so it cannot be paused")
        (self._folder(handle) / "paused").write_text(str(time.time()))

    def resume(self, handle: JobHandle) -> None:
        (self._folder(handle) / "paused").unlink(missing_ok=True)
        if not self._signal_group(handle, signal.SIGCONT):
            raise JobStateError(f"job {handle.job_id} is not running, so it cannot be resumed")

    def get_logs(self, handle: JobHandle) -> dict[str, str]:
        folder = self._folder(handle)
        logs: dict[str, str] = {}
        for name in ("stdout", "stderr"):
            path = folder / f"{name}.log"
            try:
                size = path.stat().st_size
                with open(path, "rb") as fh:
                    if size > LOG_LIMIT:
                        fh.seek(size - LOG_LIMIT)
                    logs[name] = fh.read().decode("utf-8", errors="replace")
            except FileNotFoundError:
                logs[name] = ""
        return logs

    def cleanup(self, handle: JobHandle) -> None:
        self.cancel(handle)
        shutil.rmtree(self._folder(handle), ignore_errors=True)
