"""``offload serve``: migrations, the ASGI web server and a monitor, all in one process.

The monitor runs in a daemon thread; uvicorn serves :mod:`offload.portal.asgi` in the main thread
and handles SIGINT/SIGTERM. When uvicorn has shut down, the monitor is told to stop (it finishes its
current step and releases its leases) and ``serve`` returns 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from types import FrameType
from typing import Any

from rich.console import Console
from rich.text import Text

log = logging.getLogger("offload.server")

MONITOR_JOIN_SECONDS = 15.0


def _run_monitor(monitor: Any) -> None:
    from django.db import connection

    try:
        monitor.run()
    except Exception:  # the web server keeps serving; the failure is logged
        log.exception("the embedded monitor stopped with an error")
    finally:
        connection.close()


def check_port(host: str, port: int) -> None:
    """Fail early, with a clear message, when ``host:port`` cannot be listened on."""
    from offload.errors import ConfigurationError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ConfigurationError(f"--host {host!r} cannot be resolved: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                "(choose another --port, or stop what uses it)"
            ) from None


def serve(
    host: str,
    port: int,
    *,
    monitor: bool = True,
    demo: bool = False,
    verbosity: int = 0,
    console: Console | None = None,
) -> int:
    """Run the portal until SIGINT/SIGTERM. Returns the exit code."""
    import uvicorn
    from django.core.management import call_command

    console = console or Console(highlight=False)
    check_port(host, port)
    call_command("migrate", verbosity=max(verbosity - 1, 0), interactive=False)

    # uvicorn re-raises the signal that stopped it once it has shut down; with these handlers in
    # place (uvicorn restores them before re-raising) that only records the signal.
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    thread: threading.Thread | None = None
    the_monitor: Any = None
    try:
        from offload.portal.asgi import application

        login = None
        if demo:
            from offload.demo import setup_demo

            login = setup_demo()
        if monitor:
            from offload.monitor import Monitor

            the_monitor = Monitor(name=f"serve:{socket.gethostname()}:{os.getpid()}")
            thread = threading.Thread(
                target=_run_monitor, args=(the_monitor,), name="offload-monitor", daemon=True
            )
            thread.start()
        console.print(Text.assemble("offload portal: ", (f"http://{host}:{port}/", "bold")))
        if login is not None:
            console.print(
                Text.assemble(
                    "demo login:     user ",
                    (login.username, "bold"),
                    "  password ",
                    (login.password, "bold"),
                )
            )
            if login.created_jobs:
                ids = ", ".join(str(i) for i in login.created_jobs)
                console.print(Text(f"demo jobs:      created and executed jobs {ids}"))
        console.print(
            Text(
                "monitor:        "
                + ("running in this process" if monitor else "off (run `offload monitor`)")
            )
        )
        console.print(Text("stop with Ctrl-C"), style="dim")
        if received:
            return 0
        config = uvicorn.Config(
            application,
            host=host,
            port=port,
            lifespan="off",
            log_level="info" if verbosity else "warning",
            access_log=verbosity > 0,
        )
        server = uvicorn.Server(config)
        try:
            server.run()
        except SystemExit as exc:  # uvicorn exits when it cannot start (e.g. bind the port)
            if exc.code:
                Console(stderr=True).print(
                    Text(f"offload: error: the web server could not start on {host}:{port}"),
                    style="red",
                )
                return 3
        return 0
    finally:
        if the_monitor is not None:
            the_monitor.stopping.set()
        if thread is not None:
            thread.join(MONITOR_JOIN_SECONDS)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
