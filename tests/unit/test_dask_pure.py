"""Pure parts of the Dask engine and its scheduler plugin, on output captured from a real Dask
2026.8 scheduler and worker (``Client.story``, ``get_scheduler_logs``, ``get_worker_logs``)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from offload.engines.dask import task_logs
from offload.engines.dask_plugin import OffloadPlugin

W = "tcp://127.0.0.1:38411"
#: A first task offload-2-1 (erred, forgotten), then a second task under the same key.
STORY: list[tuple[Any, ...]] = [
    (
        "scheduler",
        "offload-2-1",
        "released",
        "waiting",
        {"offload-2-1": "processing"},
        "update-graph-1",
        100.0,
    ),
    ("scheduler", "offload-2-1", "waiting", "processing", {}, "update-graph-1", 100.1),
    ("scheduler", "offload-2-1", "processing", "erred", {}, "task-erred-1", 100.2),
    ("scheduler", "offload-2-1", "erred", "released", {}, "remove-client-1", 101.0),
    ("scheduler", "offload-2-1", "released", "forgotten", {}, "remove-client-1", 101.1),
    (W, "free-keys", ("offload-2-1",), "remove-client-1", 101.0),
    (
        "scheduler",
        "offload-2-1",
        "released",
        "waiting",
        {"offload-2-1": "processing"},
        "update-graph-2",
        200.0,
    ),
    ("scheduler", "offload-2-1", "waiting", "processing", {}, "update-graph-2", 200.1),
    (W, "offload-2-1", "ready", "executing", "executing", {}, "compute-task-2", 200.2),
    ("scheduler", "offload-2-1", "processing", "memory", {}, "task-finished-2", 200.3),
    ("scheduler", "offload-2-10", "processing", "memory", {}, "task-finished-3", 200.4),
]
SCHEDULER_LOG = [  # newest first, as Dask gives them
    ("INFO", "2026-11-21 16:18:53,577 - distributed.scheduler - INFO - Task offload-2-10 done"),
    ("INFO", "2026-11-21 16:18:53,570 - distributed.scheduler - INFO - Task offload-2-1 done"),
]
WORKER_LOG = {W: [("WARNING", "Compute Failed Key: offload-2-1 Exception: ValueError('x')")]}


def test_task_logs_keep_the_latest_task_of_a_key_and_lines_naming_exactly_it() -> None:
    texts = task_logs(["offload-2-1"], STORY, SCHEDULER_LOG, WORKER_LOG)
    text = texts["offload-2-1"]
    lines = text.splitlines()
    assert lines[0] == "Dask task offload-2-1"
    story = lines[lines.index("-- story (scheduler and workers, UTC) --") + 1 :]
    story = story[: story.index("")]
    # Only the second task (from its last start on the scheduler); the key is not repeated.
    assert story == [
        "1970-01-01 00:03:20.000 scheduler: released waiting update-graph-2",
        "1970-01-01 00:03:20.100 scheduler: waiting processing update-graph-2",
        f"1970-01-01 00:03:20.200 {W}: ready executing executing compute-task-2",
        "1970-01-01 00:03:20.300 scheduler: processing memory task-finished-2",
    ]
    assert "Task offload-2-1 done" in text
    assert "offload-2-10" not in text  # a longer key is another task
    assert f"-- worker {W} log --\nCompute Failed Key: offload-2-1" in text


def test_task_logs_of_a_key_with_no_story() -> None:
    text = task_logs(["nowhere"], STORY, [], {})["nowhere"]
    assert text.startswith("Dask task nowhere\n")
    assert "-- worker" not in text


def test_the_plugin_pickles_its_configuration_only() -> None:
    plugin = OffloadPlugin("http://portal:8000/jobs/api/push", " ofl_token ", interval=0.1)
    plugin.stats["dropped"] = 5
    copy = pickle.loads(pickle.dumps(plugin))
    assert (copy.url, copy.token, copy.interval) == (plugin.url, "ofl_token", 0.1)
    assert copy.stats["dropped"] == 0 and copy.thread is None and copy.queue.empty()


def test_the_plugin_queues_only_watched_transitions_of_offload_keys() -> None:
    plugin = OffloadPlugin("http://portal/jobs/api/push", "ofl_t", max_queue=2)
    plugin.transition("offload-3-1", "waiting", "processing", stimulus_id="s")
    plugin.transition("offload-3-1", "released", "waiting", stimulus_id="s")  # not watched
    plugin.transition("someone-elses-key", "waiting", "processing", stimulus_id="s")  # not ours
    plugin.transition(("tuple", 0), "waiting", "processing", stimulus_id="s")
    plugin.transition("offload-3-1", "processing", "memory", stimulus_id="s")
    plugin.transition("offload-4-1", "processing", "memory", stimulus_id="s")  # queue full
    first, second = plugin.queue.get_nowait(), plugin.queue.get_nowait()
    assert (first["key"], first["native_status"], first["status"]) == (
        "offload-3-1",
        "processing",
        "Running",
    )
    assert second["native_status"] == "memory" and "status" not in second
    assert plugin.stats == {"queued": 2, "sent": 0, "dropped": 1, "refused": 0, "failures": 0}


@pytest.mark.parametrize("url", ["", "file:///etc/passwd", "ftp://x/y", "portal/jobs"])
def test_the_plugin_needs_an_http_url(url: str) -> None:
    with pytest.raises(ValueError, match="url"):
        OffloadPlugin(url, "ofl_t")


def test_the_plugin_needs_a_token() -> None:
    with pytest.raises(ValueError, match="token"):
        OffloadPlugin("http://127.0.0.1:1/jobs/api/push", " ")
