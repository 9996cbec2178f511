"""Runs scheduler commands on another machine over SSH (asyncssh), for engines whose scheduler
record names a remote ``host``.

One :class:`SSHRunner` holds ONE connection, opened on first use and reused by every command, file
transfer and monitor cycle after it; a connection that dropped is opened again on the next call.
asyncssh is asynchronous and the engine contract is not, so each runner owns a private event loop
in a daemon thread and the public methods wait for their coroutine there.

Commands are argument lists joined with :func:`shlex.join`, so the remote shell sees each argument
as one word, metacharacters and all. The server's host key is checked against a ``known_hosts``
file (the user's ``~/.ssh/known_hosts`` unless the ``known_hosts`` option names one). The option
``host_key_checking: false`` turns checking off: UNSAFE (anyone on the path can pose as the
cluster and receive the password and the jobs); only for throwaway test machines.

Every failure to reach the host (refused, unknown or changed host key, authentication refused,
timeout, a dropped connection) raises :class:`EngineUnavailableError` with a message saying which,
so the monitor marks jobs stale and retries instead of failing them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shlex
import stat
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import asyncssh

from offload.errors import ConfigurationError, EngineUnavailableError
from offload.transport.base import CommandResult, CommandRunner
from offload.transport.local import FileStamp, local_files, local_target

T = TypeVar("T")


def _flag(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off")
    return bool(value)


class SSHRunner(CommandRunner):
    """Options (as in a scheduler record's :meth:`~offload.models.Scheduler.engine_options`):
    ``host``, ``port`` (22), ``username``, ``password``, ``private_key_path``,
    ``private_key_pass`` (the key's passphrase), ``known_hosts`` (a file), ``host_key_checking``
    (default true), ``connect_timeout`` (seconds, 15) and ``remote_environment`` (variables set for
    every command, e.g. ``{"SLURM_CONF": "/etc/slurm/alt.conf"}``)."""

    def __init__(
        self,
        host: str,
        *,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        private_key_path: str | None = None,
        private_key_pass: str | None = None,
        known_hosts: str | None = None,
        host_key_checking: bool = True,
        connect_timeout: float = 15.0,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        if not host:
            raise ConfigurationError("an SSH transport needs a host")
        self.host = host
        self.port = int(port or 22)
        self.username = username or None
        self.password = password or None
        self.private_key_path = private_key_path or None
        self.private_key_pass = private_key_pass or None
        self.known_hosts = known_hosts or None
        self.host_key_checking = host_key_checking
        self.connect_timeout = float(connect_timeout)
        self.environment = {str(k): str(v) for k, v in (environment or {}).items()}
        #: How many connections this runner opened (one, unless one dropped).
        self.connections_opened = 0
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._conn_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SSHRunner:
        environment = options.get("remote_environment") or {}
        if not isinstance(environment, Mapping):
            raise ConfigurationError("remote_environment must be a dict of NAME → value")
        port = options.get("port")
        return cls(
            str(options.get("host") or ""),
            port=int(port) if port else None,
            username=options.get("username") or None,
            password=options.get("password") or None,
            private_key_path=options.get("private_key_path") or None,
            private_key_pass=options.get("private_key_pass") or None,
            known_hosts=options.get("known_hosts") or None,
            host_key_checking=_flag(options.get("host_key_checking"), True),
            connect_timeout=float(options.get("connect_timeout") or 15.0),
            environment=environment,
        )

    @property
    def target(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{user}{self.host}:{self.port}"

    # -- the private event loop --------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._closed:
                raise EngineUnavailableError(f"the SSH connection to {self.target} was closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=serve, name=f"ssh {self.target}", daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        try:
            loop = self._ensure_loop()
        except BaseException:
            coro.close()  # never started: no "was never awaited" warning
            raise
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            # The coroutine keeps its own deadlines; this one only guards against a hung loop.
            return future.result(timeout + self.connect_timeout + 10)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise EngineUnavailableError(
                f"{self.target} did not answer within {timeout:g} s"
            ) from None

    # -- the connection -------------------------------------------------------------------
    async def _connect(self) -> asyncssh.SSHClientConnection:
        if self._conn_lock is None:
            self._conn_lock = asyncio.Lock()
        async with self._conn_lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            await self._drop()
            known_hosts: Any = () if self.known_hosts is None else self.known_hosts
            if not self.host_key_checking:
                known_hosts = None
            kwargs: dict[str, Any] = {
                "port": self.port,
                "known_hosts": known_hosts,
                "connect_timeout": self.connect_timeout,
                "keepalive_interval": 30,
            }
            if self.username:
                kwargs["username"] = self.username
            if self.password:
                kwargs["password"] = self.password
            if self.private_key_path:
                kwargs["client_keys"] = [self.private_key_path]
                if self.private_key_pass:
                    kwargs["passphrase"] = self.private_key_pass
            try:
                conn = await asyncssh.connect(self.host, **kwargs)
            except asyncssh.HostKeyNotVerifiable as exc:
                where = self.known_hosts or "~/.ssh/known_hosts"
                raise EngineUnavailableError(
                    f"refusing {self.target}: its host key does not match {where} ({exc.reason}); "
                    "if the server's key really changed, update that file"
                ) from None
            except asyncssh.PermissionDenied as exc:
                raise EngineUnavailableError(
                    f"SSH login to {self.target} refused: {exc.reason} (check the user name, "
                    "password or private key)"
                ) from None
            except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
                raise EngineUnavailableError(
                    f"cannot use the private key {self.private_key_path}: {exc} (wrong passphrase?)"
                ) from None
            except TimeoutError:
                raise EngineUnavailableError(
                    f"cannot connect to {self.target}: no answer within {self.connect_timeout:g} s"
                ) from None
            except asyncssh.Error as exc:
                raise EngineUnavailableError(
                    f"SSH connection to {self.target} failed: {exc.reason}"
                ) from None
            except OSError as exc:
                raise EngineUnavailableError(
                    f"cannot connect to {self.target}: {exc.strerror or exc}"
                ) from None
            self.connections_opened += 1
            self._conn = conn
            return conn

    async def _drop(self) -> None:
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            conn.close()
            try:
                await asyncio.wait_for(conn.wait_closed(), 5)
            except (TimeoutError, OSError, asyncssh.Error):
                pass

    async def _with_connection(
        self,
        what: str,
        action: Callable[[asyncssh.SSHClientConnection], Awaitable[T]],
        *,
        retry: bool,
    ) -> T:
        """Run ``action(conn)``; a connection found dead is opened again and, when ``retry``
        (nothing can have happened yet on the remote side), the action is tried once more."""
        for attempt in (1, 2):
            conn = await self._connect()
            try:
                return await action(conn)
            except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost, BrokenPipeError) as exc:
                await self._drop()
                if attempt == 1 and (retry or isinstance(exc, asyncssh.ChannelOpenError)):
                    continue
                raise EngineUnavailableError(
                    f"the SSH connection to {self.target} dropped during {what}: {exc}"
                ) from None
            except asyncssh.DisconnectError as exc:
                await self._drop()
                raise EngineUnavailableError(
                    f"{self.target} disconnected during {what}: {exc.reason}"
                ) from None
            except (OSError, asyncssh.Error) as exc:
                await self._drop()
                raise EngineUnavailableError(
                    f"SSH to {self.target} failed during {what}: {exc}"
                ) from None
        raise AssertionError("unreachable")

    # -- commands ---------------------------------------------------------------------------
    def command_line(
        self, argv: Sequence[str], cwd: str | None = None, env: Mapping[str, str] | None = None
    ) -> str:
        """The one command line the remote shell runs: every word quoted by :func:`shlex.join`."""
        words = [str(a) for a in argv]
        if not words:
            raise ValueError("an empty command")
        variables = {**self.environment, **(env or {})}
        if variables:
            words = ["env", *(f"{k}={v}" for k, v in variables.items()), *words]
        line = shlex.join(words)
        if cwd:
            line = f"cd {shlex.quote(cwd)} && {line}"
        return line

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        input_text: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        line = self.command_line(argv, cwd, env)
        args = tuple(str(a) for a in argv)

        async def action(conn: asyncssh.SSHClientConnection) -> CommandResult:
            try:
                done = await conn.run(
                    line,
                    input=input_text,
                    check=False,
                    timeout=timeout,
                    encoding="utf-8",
                    errors="replace",
                )
            except asyncssh.TimeoutError:
                raise EngineUnavailableError(
                    f"{args[0]} on {self.target} did not answer within {timeout:g} s"
                ) from None
            code = done.exit_status
            if code is None or code < 0:
                code = 255 if not done.exit_signal else 128 + _signal_number(done.exit_signal[0])
            return CommandResult(args, code, str(done.stdout or ""), str(done.stderr or ""))

        # Not retried once the channel is open: the command (sbatch!) may have run.
        result: CommandResult = self._call(
            self._with_connection(f"{args[0]}", action, retry=False), timeout
        )
        return result

    # -- files over SFTP --------------------------------------------------------------------
    async def _sftp_client(self, conn: asyncssh.SSHClientConnection) -> asyncssh.SFTPClient:
        if self._sftp is None:
            self._sftp = await conn.start_sftp_client()
        return self._sftp

    def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        parent, _, name = path.rpartition("/")
        tmp = f"{parent}/.{name}.tmp"

        async def action(conn: asyncssh.SSHClientConnection) -> None:
            sftp = await self._sftp_client(conn)
            try:
                if parent:
                    await sftp.makedirs(parent, exist_ok=True)
                async with sftp.open(tmp, "wb") as fh:
                    await fh.write(text.encode())
                await sftp.chmod(tmp, mode)
                await sftp.posix_rename(tmp, path)
            except asyncssh.SFTPError as exc:
                raise EngineUnavailableError(
                    f"cannot write {path} on {self.target}: {exc.reason}"
                ) from None

        self._call(self._with_connection(f"writing {path}", action, retry=True), 60.0)

    def read_text(self, path: str, limit: int | None = None) -> str | None:
        async def action(conn: asyncssh.SSHClientConnection) -> str | None:
            sftp = await self._sftp_client(conn)
            try:
                async with sftp.open(path, "rb") as fh:
                    data = await fh.read(-1 if limit is None else limit)
            except asyncssh.SFTPNoSuchFile:
                return None
            except asyncssh.SFTPError as exc:
                raise EngineUnavailableError(
                    f"cannot read {path} on {self.target}: {exc.reason}"
                ) from None
            raw: Any = data  # bytes in binary mode (asyncssh types it as str | bytes)
            return bytes(raw).decode("utf-8", errors="replace")

        result: str | None = self._call(
            self._with_connection(f"reading {path}", action, retry=True), 60.0
        )
        return result

    # -- folders over SFTP (staging) ---------------------------------------------------------
    async def _remote_files(
        self, sftp: asyncssh.SFTPClient, folder: str, skip: Callable[[str], bool] | None
    ) -> dict[str, FileStamp]:
        """Relative path → (size, mtime) of the regular files below a remote folder; symbolic
        links are not followed (nothing outside it is read)."""
        found: dict[str, FileStamp] = {}

        async def walk(relative: str) -> None:
            where = f"{folder}/{relative}" if relative else folder
            try:
                entries = [entry async for entry in sftp.scandir(where)]
            except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
                return
            for entry in entries:
                name = str(entry.filename)
                if name in (".", "..") or "/" in name:
                    continue
                path = f"{relative}/{name}" if relative else name
                if skip is not None and skip(path):
                    continue
                mode = entry.attrs.permissions or 0
                if stat.S_ISDIR(mode):
                    await walk(path)
                elif stat.S_ISREG(mode):
                    found[path] = (int(entry.attrs.size or 0), int(entry.attrs.mtime or 0))

        await walk("")
        return found

    def download_tree(
        self, remote_folder: str, local_folder: str, skip: Callable[[str], bool] | None = None
    ) -> list[str]:
        remote_root = remote_folder.rstrip("/")

        async def action(conn: asyncssh.SSHClientConnection) -> list[str]:
            sftp = await self._sftp_client(conn)
            copied: list[str] = []
            try:
                wanted = await self._remote_files(sftp, remote_root, skip)
                have = local_files(local_folder, skip)
                for relative, stamp in sorted(wanted.items()):
                    if have.get(relative) == stamp:
                        continue
                    target = local_target(local_folder, relative)
                    tmp = target.with_name(f".{target.name}.part")
                    await sftp.get(f"{remote_root}/{relative}", str(tmp), preserve=True)
                    tmp.replace(target)
                    copied.append(relative)
            except asyncssh.SFTPError as exc:
                raise EngineUnavailableError(
                    f"copying {remote_root} from {self.target} failed after {len(copied)} "
                    f"file(s): {exc.reason}"
                ) from None
            except OSError as exc:
                raise EngineUnavailableError(
                    f"copying {remote_root} from {self.target} into {local_folder} failed: {exc}"
                ) from None
            return copied

        result: list[str] = self._call(
            self._with_connection(f"copying {remote_root}", action, retry=True), 600.0
        )
        return result

    def upload_tree(
        self, local_folder: str, remote_folder: str, skip: Callable[[str], bool] | None = None
    ) -> list[str]:
        remote_root = remote_folder.rstrip("/")

        async def action(conn: asyncssh.SSHClientConnection) -> list[str]:
            sftp = await self._sftp_client(conn)
            copied: list[str] = []
            try:
                wanted = local_files(local_folder, skip)
                if not wanted:
                    return copied
                have = await self._remote_files(sftp, remote_root, skip)
                folders: set[str] = set()
                for relative, stamp in sorted(wanted.items()):
                    if have.get(relative) == stamp:
                        continue
                    target = f"{remote_root}/{relative}"
                    parent, _, name = target.rpartition("/")
                    if parent not in folders:
                        await sftp.makedirs(parent, exist_ok=True)
                        folders.add(parent)
                    tmp = f"{parent}/.{name}.part"
                    await sftp.put(f"{local_folder.rstrip('/')}/{relative}", tmp, preserve=True)
                    await sftp.posix_rename(tmp, target)
                    copied.append(relative)
            except asyncssh.SFTPError as exc:
                raise EngineUnavailableError(
                    f"copying {local_folder} to {self.target}:{remote_root} failed after "
                    f"{len(copied)} file(s): {exc.reason}"
                ) from None
            except OSError as exc:
                raise EngineUnavailableError(
                    f"copying {local_folder} to {self.target}:{remote_root} failed: {exc}"
                ) from None
            return copied

        result: list[str] = self._call(
            self._with_connection(f"copying {local_folder}", action, retry=True), 600.0
        )
        return result

    # -- the end ----------------------------------------------------------------------------
    def close(self) -> None:
        with self._start_lock:
            self._closed = True
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._drop(), loop).result(10)
        except (concurrent.futures.TimeoutError, OSError, asyncssh.Error):
            pass
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(10)
        loop.close()


def _signal_number(name: str) -> int:
    import signal

    try:
        return int(signal.Signals[f"SIG{name}"])
    except KeyError:
        return 127
