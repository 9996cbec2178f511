"""Functions the Dask engine runs *on the Dask scheduler* (``Client.run_on_scheduler``) or on its
workers. They import nothing from offload: the engine pickles this module by value, so a scheduler
or a worker without offload installed runs them.

Every offload task is held by one pseudo-client, :data:`HOLDER`, the way ``publish_dataset`` holds
a published future: the task and its result survive the monitor's own client (a monitor that
restarts finds them by key). The holder lets go once the result is stored or the job is stopped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: The scheduler-side "client" that wants every offload task until offload has its result.
HOLDER = "offload-holder"
#: Attribute of the scheduler where the keys offload cancelled are remembered (so a stopped
#: task, which the scheduler forgets, still reads as cancelled rather than lost).
CANCELLED_ATTR = "_offload_cancelled"


def identity(value: Any) -> Any:
    """The task that gives a delayed object the job's own key."""
    return value


def _cancelled(dask_scheduler: Any) -> set[str]:
    marks: set[str] | None = getattr(dask_scheduler, CANCELLED_ATTR, None)
    if marks is None:
        marks = set()
        setattr(dask_scheduler, CANCELLED_ATTR, marks)
    return marks


def _error_text(ts: Any) -> str:
    blame = getattr(ts, "exception_blame", None) or ts
    text = str(getattr(blame, "exception_text", "") or "")
    if blame is not ts:
        text = f"{text} (in task {blame.key})" if text else f"task {blame.key} failed"
    return text


def task_states(
    dask_scheduler: Any, keys: Iterable[str] = (), release: Iterable[str] = ()
) -> dict[str, Any]:
    """One answer for many keys: ``{"id": scheduler id, "tasks": {key: [state, error text]}}``.
    Keys the scheduler does not know are left out, except keys offload cancelled ("cancelled").
    Every known key is held by :data:`HOLDER`; the keys in ``release`` are let go."""
    holder = dask_scheduler.clients.get(HOLDER)
    gone = [k for k in release if k in dask_scheduler.tasks]
    if gone and holder is not None:
        held = [k for k in gone if dask_scheduler.tasks[k] in holder.wants_what]
        if held:
            dask_scheduler.client_releases_keys(keys=held, client=HOLDER)
    released = set(release)
    known = [k for k in keys if k in dask_scheduler.tasks and k not in released]
    if known:
        holder = dask_scheduler.clients.get(HOLDER)
        missing = (
            known
            if holder is None
            else [k for k in known if dask_scheduler.tasks[k] not in holder.wants_what]
        )
        if missing:
            dask_scheduler.client_desires_keys(keys=missing, client=HOLDER)
    cancelled = _cancelled(dask_scheduler)
    tasks: dict[str, list[str]] = {}
    for key in keys:
        ts = dask_scheduler.tasks.get(key)
        if ts is None:
            if key in cancelled:
                tasks[key] = ["cancelled", ""]
            continue
        tasks[key] = [str(ts.state), _error_text(ts) if ts.state == "erred" else ""]
    return {"id": str(dask_scheduler.id), "tasks": tasks}


def cancel_keys(dask_scheduler: Any, keys: Iterable[str] = ()) -> list[str]:
    """Cancel tasks for every client that wants them (the running thread finishes on its own: Dask
    cannot interrupt it) and remember them as cancelled. Returns the keys that were known."""
    keys = list(keys)
    _cancelled(dask_scheduler).update(keys)
    known = [k for k in keys if k in dask_scheduler.tasks]
    if known:
        if HOLDER not in dask_scheduler.clients:
            dask_scheduler.client_desires_keys(keys=known, client=HOLDER)
        dask_scheduler.stimulus_cancel(
            known, client=HOLDER, force=True, reason="offload", msg="stopped by offload"
        )
    return known


def desire_keys(dask_scheduler: Any, keys: Iterable[str] = (), client: str = "") -> None:
    """Have ``client`` (the monitor's) want ``keys``, so the scheduler reports them to it and it
    can gather them: what ``Future(key, client, inform=True)`` once did. The client makes its
    ``Future`` objects first, so the report finds them."""
    known = [k for k in keys if k in dask_scheduler.tasks]
    if known and client in dask_scheduler.clients:
        dask_scheduler.client_desires_keys(keys=known, client=client)


def forget_cancelled(dask_scheduler: Any, keys: Iterable[str] = ()) -> None:
    """Drop the cancelled marks of jobs offload no longer watches."""
    _cancelled(dask_scheduler).difference_update(keys)
