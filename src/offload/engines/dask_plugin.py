"""A Dask scheduler plugin that pushes offload's task transitions to the portal as they happen.

The monitor's poll (one call per cycle) is what offload relies on; this plugin only makes the portal
hear sooner. Load it when the scheduler starts::

    OFFLOAD_PUSH_TOKEN=ofl_… dask scheduler --preload offload.engines.dask_plugin \\
        --offload-url https://portal.example.org/jobs/api/push

(``--offload-token TOKEN`` works too, but a command line is visible to every local user), or
install it on a running scheduler from Python::

    from offload.engines.dask_plugin import OffloadPlugin
    client.register_plugin(OffloadPlugin(url, token))

The token is an API token (``offload tokens create USER``) of the user whose jobs run there, or of
a user who may act on every job. The URL is the portal's batched push endpoint,
``<site>/jobs/api/push``.

Which keys: offload's own (``offload-<job>-<attempt>``) and any key held by offload's holder on the
scheduler (the Futures DaskJobs were given). Which transitions: ``processing`` (reported as
Running), ``memory``, ``erred`` (with the exception text) and ``forgotten`` (after a cancel). Only
Running is applied as a status by the portal; the others ask the monitor to poll that scheduler at
once, because a result must be gathered (and an error or a cancel confirmed) by the monitor.

The scheduler's event loop is never blocked: :meth:`OffloadPlugin.transition` puts a small tuple on
a bounded queue (when it is full, the change is dropped and counted; the poll reconciles) and a
daemon thread sends batches (up to :attr:`OffloadPlugin.batch_size` changes, at most every
:attr:`OffloadPlugin.interval` seconds), retrying failed sends with exponential backoff. A batch the
portal refuses (400/401/403/404/422) is dropped and logged: sending it again would not help.

This module imports nothing from offload and only the standard library and ``distributed``: a
scheduler without offload installed runs it when the client pickles it by value
(:func:`register`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import click
from distributed.diagnostics.plugin import SchedulerPlugin

log = logging.getLogger("offload.engines.dask_plugin")

#: Keys offload submits under (``JobSpec.key``).
OFFLOAD_KEY = re.compile(r"offload-[0-9]+-[0-9]+")
#: The scheduler-side pseudo-client holding offload's tasks (``dask_remote.HOLDER``).
HOLDER = "offload-holder"
#: Task states reported.
WATCHED = frozenset({"processing", "memory", "erred", "forgotten"})
#: What a state is reported as: the offload status, or None (the monitor decides after a poll).
STATUS_OF = {"processing": "Running"}
#: Longest exception text sent.
MAX_MESSAGE = 8000
#: HTTP statuses after which a batch is dropped rather than sent again.
REFUSED = frozenset({400, 401, 403, 404, 405, 413, 422})


class OffloadPlugin(SchedulerPlugin):
    """Pushes the transitions of offload's keys to ``url`` with ``Authorization: Bearer token``."""

    name = "offload-push"
    idempotent = True

    def __init__(
        self,
        url: str,
        token: str,
        *,
        interval: float = 0.2,
        batch_size: int = 500,
        max_queue: int = 100_000,
        timeout: float = 10.0,
        max_backoff: float = 30.0,
    ) -> None:
        if not isinstance(url, str) or not re.match(r"https?://[^\s/]+", url):
            raise ValueError(f"offload url: an http(s) URL is needed, not {url!r}")
        if not isinstance(token, str) or not token.strip():
            raise ValueError("offload token: an API token is needed (offload tokens create USER)")
        self.url = url
        self.token = token.strip()
        self.interval = float(interval)
        self.batch_size = int(batch_size)
        self.max_queue = int(max_queue)
        self.timeout = float(timeout)
        self.max_backoff = float(max_backoff)
        self._setup()

    def _setup(self) -> None:
        self.scheduler: Any = None
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=self.max_queue)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        #: Future keys seen as held by offload (a forgotten task is no longer held).
        self.followed: set[str] = set()
        #: Counters, for tests and operators (``scheduler.plugins["offload-push"].stats``).
        self.stats = {"queued": 0, "sent": 0, "dropped": 0, "refused": 0, "failures": 0}

    # Pickled for register_plugin before it starts: configuration only.
    def __getstate__(self) -> dict[str, Any]:
        names = ("url", "token", "interval", "batch_size", "max_queue", "timeout", "max_backoff")
        return {name: getattr(self, name) for name in names}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    # -- the scheduler's side (event loop: nothing here blocks) ----------------------------------
    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        if self.thread is None or not self.thread.is_alive():
            self.stopping.clear()
            self.thread = threading.Thread(target=self._run, name="offload-push", daemon=True)
            self.thread.start()
        log.info("offload push: reporting offload's tasks to %s", self.url)

    async def close(self) -> None:
        self.stopping.set()
        thread = self.thread
        if thread is not None:
            # The thread sends what is queued first (bounded by one request's timeout).
            await asyncio.to_thread(thread.join, self.timeout + 1)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish not in WATCHED or not isinstance(key, str):
            return
        if not self._ours(key, finish):
            return
        change: dict[str, Any] = {"key": key, "native_status": finish, "time": time.time()}
        status = STATUS_OF.get(finish)
        if status:
            change["status"] = status
        if finish == "erred":
            text = self._error_text(key)
            if text:
                change["message"] = text[:MAX_MESSAGE]
        try:
            self.queue.put_nowait(change)
            self.stats["queued"] += 1
        except queue.Full:
            self.stats["dropped"] += 1
            if self.stats["dropped"] in (1, 10, 100, 1000) or self.stats["dropped"] % 10_000 == 0:
                log.warning(
                    "offload push: queue full, %d change(s) dropped (the monitor's poll "
                    "reconciles them)",
                    self.stats["dropped"],
                )

    def _ours(self, key: str, finish: str) -> bool:
        if OFFLOAD_KEY.fullmatch(key):
            return True
        if finish == "forgotten":
            if key in self.followed:
                self.followed.discard(key)
                return True
            return False
        scheduler = self.scheduler
        if scheduler is None:
            return False
        holder = scheduler.clients.get(HOLDER)
        ts = scheduler.tasks.get(key)
        if holder is None or ts is None or ts not in holder.wants_what:
            return False
        self.followed.add(key)
        return True

    def _error_text(self, key: str) -> str:
        ts = self.scheduler.tasks.get(key) if self.scheduler is not None else None
        if ts is None:
            return ""
        blame = getattr(ts, "exception_blame", None) or ts
        text = str(getattr(blame, "exception_text", "") or "")
        if blame is not ts:
            text = f"{text} (in task {blame.key})" if text else f"task {blame.key} failed"
        return text

    # -- the sending thread ----------------------------------------------------------------------
    def _take(self, wait: float) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        try:
            batch.append(self.queue.get(timeout=wait))
        except queue.Empty:
            return batch
        # Let a burst gather for a moment: one request for many transitions.
        deadline = time.monotonic() + self.interval
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self.queue.get(timeout=max(remaining, 0))
                    if remaining > 0
                    else self.queue.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        pending: list[dict[str, Any]] = []
        backoff = 0.0
        while True:
            if not pending:
                if self.stopping.is_set() and self.queue.empty():
                    return
                pending = self._take(0.5)
                if not pending:
                    continue
            outcome = self._send(pending)
            if outcome == "sent":
                self.stats["sent"] += len(pending)
                pending, backoff = [], 0.0
            elif outcome == "refused":
                self.stats["refused"] += len(pending)
                pending, backoff = [], 0.0
            else:
                self.stats["failures"] += 1
                if self.stopping.is_set():
                    return  # shutting down: the monitor's poll reconciles the rest
                backoff = min(max(backoff * 2, 0.5), self.max_backoff)
                self.stopping.wait(backoff)

    def _send(self, changes: list[dict[str, Any]]) -> str:
        body = json.dumps({"engine": "dask", "changes": changes}).encode()
        request = urllib.request.Request(  # noqa: S310 (__init__ checked it is http(s))
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.token}",
                "User-Agent": "offload-dask-plugin",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                response.read()
            return "sent"
        except urllib.error.HTTPError as exc:
            detail = exc.read(2000).decode("utf-8", "replace")
            if exc.code in REFUSED:
                log.error(
                    "offload push: %s refused %d change(s): HTTP %d %s",
                    self.url,
                    len(changes),
                    exc.code,
                    detail,
                )
                return "refused"
            log.warning("offload push: HTTP %d from %s; retrying", exc.code, self.url)
            return "failed"
        except (OSError, ValueError) as exc:
            log.warning("offload push: %s cannot be reached (%s); retrying", self.url, exc)
            return "failed"


def register(client: Any, url: str, token: str, **options: Any) -> OffloadPlugin:
    """Install the plugin on ``client``'s scheduler, pickled by value (the scheduler need not have
    offload installed). The same as ``client.register_plugin(OffloadPlugin(url, token))`` there."""
    import sys

    import cloudpickle  # type: ignore[import-untyped]

    module = sys.modules[__name__]
    if __name__ not in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.register_pickle_by_value(module)
    plugin = OffloadPlugin(url, token, **options)
    client.register_plugin(plugin)
    return plugin


@click.command()
@click.option(
    "--offload-url",
    envvar="OFFLOAD_PUSH_URL",
    required=True,
    help="The portal's push endpoint, e.g. https://portal/jobs/api/push ($OFFLOAD_PUSH_URL).",
)
@click.option(
    "--offload-token",
    envvar="OFFLOAD_PUSH_TOKEN",
    required=True,
    help="An API token (offload tokens create USER); prefer $OFFLOAD_PUSH_TOKEN.",
)
@click.option(
    "--offload-interval",
    type=float,
    default=0.2,
    show_default=True,
    help="Seconds a batch gathers before it is sent.",
)
def dask_setup(
    scheduler: Any, offload_url: str, offload_token: str, offload_interval: float
) -> None:
    """``dask scheduler --preload offload.engines.dask_plugin --offload-url URL``."""
    try:
        plugin = OffloadPlugin(offload_url, offload_token, interval=offload_interval)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    scheduler.add_plugin(plugin)
