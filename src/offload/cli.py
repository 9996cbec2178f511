"""The ``offload`` command: run the portal and monitors, submit jobs and look after them.

``offload --help`` lists the commands; ``docs/cli.md`` shows each with an example. Exit codes:
0 ok, 1 the job failed / does not exist / the action was refused, 2 a usage error, 3 the database
cannot be reached or the configuration is wrong, 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from offload.models import Job, JobEvent, Scheduler

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

#: The actor recorded on events and intents the CLI causes.
ACTOR = "cli"
DEFAULT_USER = "offload"
LOG_TAIL_LINES = 20

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class CommandError(Exception):
    """A failure to report as one line on stderr, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# -- argument types ---------------------------------------------------------------------------------
def _name_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a TCP port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1-65535)")
    return value


def _job_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a job id is a number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a job id is a positive number, got {text!r}")
    return value


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _status(text: str) -> str:
    from offload.status import Status

    parsed = Status.parse(text)
    if parsed is None:
        valid = ", ".join(s.display for s in Status)
        raise argparse.ArgumentTypeError(f"{text!r} is not a status (valid: {valid})")
    return parsed.value


# -- the parser -------------------------------------------------------------------------------------
def _common(*, suppress: bool) -> argparse.ArgumentParser:
    """Options every command accepts, before or after the command name."""
    default: Any = argparse.SUPPRESS if suppress else None
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("global options")
    group.add_argument(
        "--database",
        metavar="URL",
        default=default,
        help="database URL (sets OFFLOAD_DATABASE_URL), e.g. postgresql://user@host/db "
        "or sqlite:///path/offload.sqlite3",
    )
    group.add_argument(
        "--home",
        metavar="DIR",
        default=default,
        help="offload's home folder for workspaces and the SQLite database (sets OFFLOAD_HOME)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS if suppress else 0,
        help="more output (repeat for more)",
    )
    return parser


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def build_parser() -> argparse.ArgumentParser:
    from offload import __version__

    common = _common(suppress=True)
    parser = argparse.ArgumentParser(
        prog="offload",
        description="Run long jobs elsewhere and keep their state in a database.",
        parents=[_common(suppress=False)],
        epilog="exit codes: 0 ok, 1 job failed / not found / refused, 2 usage error, "
        "3 database unreachable or configuration error",
    )
    parser.add_argument("--version", action="version", version=f"offload {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        sub: Any, name: str, handler: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name, help=help_text, description=help_text, parents=[common]
        )
        p.set_defaults(handler=handler)
        return p

    p = command(commands, "serve", cmd_serve, "run the portal: migrations, web server and monitor")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8000, help="port to listen on (default 8000)")
    p.add_argument(
        "--no-monitor", action="store_true", help="do not run a monitor in the same process"
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="create a demo user (its new password is printed) and demo jobs",
    )

    p = command(commands, "monitor", cmd_monitor, "run a monitor in the foreground")
    p.add_argument("--until-idle", action="store_true", help="exit 0 as soon as no job is active")
    p.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="stop after this long (with --until-idle: exit 1 if jobs are still active)",
    )
    p.add_argument("--name", help="the monitor's name in leases and logs (default: host:pid)")

    command(commands, "migrate", cmd_migrate, "create or update the database tables")

    p = command(commands, "createuser", cmd_createuser, "create a user of the portal")
    p.add_argument("username")
    pw = p.add_mutually_exclusive_group()
    pw.add_argument("--password", help="the password (default: generate one and print it)")
    pw.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    p.add_argument("--email", default="", help="the user's e-mail address")
    p.add_argument(
        "--admin", action="store_true", help="make the user a staff superuser (Django admin)"
    )
    _json_flag(p)

    p = command(commands, "submit", cmd_submit, "create a job running CMD ARGS… and execute it")
    p.add_argument("--name", help="the job's name (default: the command line)")
    p.add_argument(
        "--user",
        help="owner of the job (default: $OFFLOAD_USER, else the first superuser, "
        f"else {DEFAULT_USER!r}, created if needed)",
    )
    p.add_argument("--app", default="cli", help="the app label the job belongs to (default cli)")
    p.add_argument("--type", dest="job_type", default="LOCAL", help="job type (default LOCAL)")
    p.add_argument(
        "--env",
        type=_name_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the job (repeatable)",
    )
    p.add_argument("--workspace", metavar="DIR", help="run in this folder (default: its own)")
    p.add_argument("--description", default="", help="the job's description")
    p.add_argument(
        "--wait", action="store_true", help="show progress until the job ends; exit 1 if it failed"
    )
    p.add_argument(
        "--no-monitor",
        action="store_true",
        help="with --wait: rely on a running monitor instead of running one in this process",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the job id")
    _json_flag(p)
    p.add_argument(
        "argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command to run"
    )

    jobs = command(commands, "jobs", cmd_help, "list jobs and act on them")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    p = command(jobs_sub, "list", cmd_jobs_list, "list jobs, newest first")
    p.add_argument("--user", help="only this user's jobs")
    p.add_argument("--app", help="only jobs of this app label")
    p.add_argument("--status", type=_status, help="only jobs in this status (name or code)")
    p.add_argument("--limit", type=_limit, default=50, help="at most this many (default 50)")
    _json_flag(p)
    p = command(jobs_sub, "show", cmd_jobs_show, "a job's fields and history")
    p.add_argument("id", type=_job_id)
    _json_flag(p)
    p = command(jobs_sub, "logs", cmd_jobs_logs, "a job's logs")
    p.add_argument("id", type=_job_id)
    p.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new output until the job ends"
    )
    p.add_argument("--stream", choices=["stdout", "stderr"], help="only this log")
    _json_flag(p)
    for name, handler, text in (
        ("cancel", cmd_jobs_cancel, "stop a job"),
        ("resubmit", cmd_jobs_resubmit, "run a job again as a new attempt"),
        ("delete", cmd_jobs_delete, "delete a job and its own workspace"),
    ):
        p = command(jobs_sub, name, handler, text)
        p.add_argument("id", type=_job_id)
        _json_flag(p)

    scheds = command(commands, "schedulers", cmd_help, "register the schedulers jobs run on")
    sched_sub = scheds.add_subparsers(dest="schedulers_command", metavar="ACTION", required=True)
    p = command(sched_sub, "list", cmd_schedulers_list, "list the registered schedulers")
    _json_flag(p)
    p = command(sched_sub, "add", cmd_schedulers_add, "register a scheduler")
    p.add_argument("name")
    p.add_argument(
        "--type",
        dest="scheduler_type",
        required=True,
        help="local, condor, slurm, pbs, sge, dask or agent",
    )
    p.add_argument("--host", default="", help="host name (empty: this machine)")
    p.add_argument("--port", type=_port, help="port (SSH or the scheduler's own)")
    p.add_argument("--username", default="", help="login name on the host")
    p.add_argument(
        "--password-stdin", action="store_true", help="read a password from standard input"
    )
    p.add_argument("--private-key", metavar="PATH", help="SSH private key file")
    p.add_argument(
        "--option",
        type=_name_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an engine option (repeatable); VALUE is read as JSON when it parses, else text",
    )
    _json_flag(p)
    p = command(sched_sub, "remove", cmd_schedulers_remove, "remove a scheduler record")
    p.add_argument("name")
    _json_flag(p)

    tokens = command(commands, "tokens", cmd_help, "API tokens for scripts using the REST API")
    tokens_sub = tokens.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    p = command(tokens_sub, "create", cmd_tokens_create, "create an API token for a user")
    p.add_argument("username", metavar="USER")
    p.add_argument("--name", default="", help="what the token is for (shown in the admin)")
    _json_flag(p)
    return parser


# -- Django -----------------------------------------------------------------------------------------
def setup_django(args: argparse.Namespace) -> None:
    """Point Django at the portal settings (unless told otherwise) and set it up."""
    if getattr(args, "database", None):
        os.environ["OFFLOAD_DATABASE_URL"] = args.database
    if getattr(args, "home", None):
        os.environ["OFFLOAD_HOME"] = str(Path(args.home).expanduser().resolve())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "offload.portal.settings")
    import django

    try:
        django.setup()
    except Exception as exc:  # any settings problem is a configuration error, not a traceback
        raise CommandError(
            f"configuration error ({os.environ['DJANGO_SETTINGS_MODULE']}): "
            f"{type(exc).__name__}: {exc}",
            EXIT_UNREACHABLE,
        ) from exc


def database_description() -> str:
    """Where the database is, without its password."""
    try:
        from django.conf import settings

        db = settings.DATABASES["default"]
    except Exception:
        return os.environ.get("OFFLOAD_DATABASE_URL", "(unknown)")
    engine = str(db.get("ENGINE", ""))
    name = str(db.get("NAME", ""))
    if "sqlite" in engine:
        return f"sqlite:///{name}"
    vendor = engine.rsplit(".", 1)[-1]
    user = f"{db.get('USER')}@" if db.get("USER") else ""
    port = f":{db.get('PORT')}" if db.get("PORT") else ""
    return f"{vendor}://{user}{db.get('HOST') or 'localhost'}{port}/{name}"


def _tables_missing() -> bool:
    try:
        from django.db import connection

        return "offload_job" not in connection.introspection.table_names()
    except Exception:
        return False


# -- output helpers ---------------------------------------------------------------------------------
def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _iso(value: datetime.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _local(value: datetime.datetime | None) -> str:
    if value is None:
        return ""
    from django.utils import timezone

    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")


def _duration(value: datetime.timedelta | str | None) -> str:
    if not isinstance(value, datetime.timedelta):
        return ""
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def make_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Text | str]],
    *,
    flexible: str,
    wrap: bool = False,
) -> Table:
    """A borderless table whose columns keep their width, except ``flexible``, which is cut
    (or wrapped, with ``wrap``) to fit the terminal."""
    cells = [[c if isinstance(c, Text) else Text(c) for c in row] for row in rows]
    widths = [
        max([len(header), *(row[i].cell_len for row in cells)]) for i, header in enumerate(headers)
    ]
    fixed = sum(w for w, h in zip(widths, headers, strict=True) if h != flexible)
    room = max(12, out.width - fixed - 2 * (len(headers) - 1) - 1)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for header, width in zip(headers, widths, strict=True):
        if header == flexible:
            table.add_column(
                header,
                no_wrap=not wrap,
                overflow="fold" if wrap else "ellipsis",
                max_width=room,
            )
        else:
            table.add_column(
                header, no_wrap=True, min_width=width, justify="right" if header == "ID" else "left"
            )
    for row in cells:
        table.add_row(*row)
    return table


def _status_style(code: str) -> str:
    return {
        "COM": "green",
        "ERR": "red",
        "ABT": "yellow",
        "RUN": "cyan",
        "SUB": "blue",
        "PAS": "magenta",
    }.get(code, "")


def _username(job: Job) -> str:
    user = job.user
    return user.get_username() if user is not None else ""


def job_record(job: Job) -> dict[str, Any]:
    run_time = job.run_time
    return {
        "id": job.id,
        "name": job.name,
        "description": job.description,
        "app": job.label,
        "user": _username(job) or None,
        "type": job.job_type,
        "status": job.cached_status,
        "status_code": job._status,
        "status_message": job.status_message,
        "stale_since": _iso(job.stale_since),
        "attempt": job.attempt,
        "creation_time": _iso(job.creation_time),
        "execute_time": _iso(job.execute_time),
        "start_time": _iso(job.start_time),
        "completion_time": _iso(job.completion_time),
        "run_time": run_time.total_seconds() if isinstance(run_time, datetime.timedelta) else None,
        "workspace": job.workspace,
        "scheduler": job.scheduler.name if job.scheduler_id else None,  # type: ignore[union-attr]
        "native_id": job.native_id,
        "native_status": job.native_status,
        "parameters": job.parameters,
        "extended_properties": job.extended_properties,
    }


def event_record(event: JobEvent) -> dict[str, Any]:
    return {
        "time": _iso(event.time),
        "attempt": event.attempt,
        "from": event.from_display,
        "to": event.to_display,
        "source": event.source,
        "actor": event.actor,
        "native_status": event.native_status,
        "message": event.message,
    }


def _jobs_query() -> Any:
    from offload.models import Job

    return Job.objects.visible().select_related("user", "scheduler")


def get_job(job_id: int) -> Job:
    from offload.errors import JobNotFoundError

    job: Job | None = _jobs_query().filter(pk=job_id).first()
    if job is None:
        raise JobNotFoundError(job_id)
    return job


def _is_final(job: Job) -> bool:
    from offload import status as rules

    return rules.is_final(job.status_enum, job.other_category)


# -- commands: portal and monitor -------------------------------------------------------------------
def cmd_help(args: argparse.Namespace) -> int:  # pragma: no cover - subparsers are required
    raise CommandError("choose an action; see --help", EXIT_USAGE)


def cmd_serve(args: argparse.Namespace) -> int:
    from offload.server import serve

    return serve(
        args.host,
        args.port,
        monitor=not args.no_monitor,
        demo=args.demo,
        verbosity=args.verbose,
        console=out,
    )


def cmd_monitor(args: argparse.Namespace) -> int:
    from offload.monitor import Monitor

    monitor = Monitor(name=args.name)
    mode = "until no job is active" if args.until_idle else "until stopped (Ctrl-C)"
    err.print(
        Text(f"offload monitor {monitor.name}: watching {database_description()} {mode}"),
        style="dim",
    )
    code = monitor.run(until_idle=args.until_idle, timeout=args.timeout)
    if code and args.until_idle:
        err.print(Text(f"offload monitor: jobs still active after {args.timeout:g} s"))
    return code


def cmd_migrate(args: argparse.Namespace) -> int:
    from django.core.management import call_command

    call_command("migrate", verbosity=args.verbose, interactive=False)
    if args.verbose:
        out.print(Text(f"database {database_description()} is up to date"))
    return EXIT_OK


def _read_stdin_secret(what: str) -> str:
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise CommandError(f"{what}: nothing was read from standard input")
    return value


def cmd_createuser(args: argparse.Namespace) -> int:
    import secrets

    from django.contrib.auth import get_user_model
    from django.core.exceptions import ValidationError
    from django.db.models import Field

    user_model = get_user_model()
    username = args.username
    field = user_model._meta.get_field(user_model.USERNAME_FIELD)
    try:
        if isinstance(field, Field):
            field.clean(username, None)
    except ValidationError as exc:
        raise CommandError(f"username: {' '.join(exc.messages)}") from None
    if user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).exists():
        raise CommandError(f"user {username!r} already exists; choose another name")
    generated = None
    if args.password_stdin:
        password = _read_stdin_secret("password")
    elif args.password is not None:
        if not args.password:
            raise CommandError("password: must not be empty")
        password = args.password
    else:
        password = generated = secrets.token_urlsafe(12)
    if generated is None:
        from django.contrib.auth.password_validation import validate_password

        try:
            validate_password(password, user_model(**{user_model.USERNAME_FIELD: username}))
        except ValidationError as exc:
            raise CommandError(f"password: {' '.join(exc.messages)}") from None
    if args.admin:
        user = user_model._default_manager.db_manager().create_superuser(
            username, args.email, password
        )
    else:
        user = user_model._default_manager.db_manager().create_user(username, args.email, password)
    if args.json:
        print_json(
            {
                "username": user.get_username(),
                "email": args.email,
                "admin": bool(args.admin),
                "password": generated,
            }
        )
        return EXIT_OK
    kind = "admin user" if args.admin else "user"
    out.print(Text(f"created {kind} {username}"))
    if generated:
        out.print(Text.assemble("password: ", (generated, "bold")))
    return EXIT_OK


# -- commands: submit -------------------------------------------------------------------------------
def resolve_user(name: str | None) -> AbstractBaseUser:
    """The named user (which must exist), else $OFFLOAD_USER, else the first superuser, else the
    ``offload`` user, created on first use."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    manager = user_model._default_manager
    field = user_model.USERNAME_FIELD
    name = name or os.environ.get("OFFLOAD_USER") or None
    if name:
        user = manager.filter(**{field: name}).first()
        if user is None:
            raise CommandError(
                f"user {name!r} does not exist; create it with `offload createuser {name}`"
            )
        return user
    first_admin = manager.filter(is_superuser=True, is_active=True).order_by("pk").first()
    if first_admin is not None:
        return first_admin
    user = manager.filter(**{field: DEFAULT_USER}).first()
    if user is None:
        user = user_model(**{field: DEFAULT_USER})
        user.set_unusable_password()
        user.save()
    return user


def cmd_submit(args: argparse.Namespace) -> int:
    from offload import store
    from offload.manager import JobManager, resolve_job_class
    from offload.models import EventSource
    from offload.schedulers import engine_class_for_job

    argv: list[str] = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise CommandError(
            "submit: give the command after --, e.g. offload submit -- python x.py", EXIT_USAGE
        )
    try:
        cls = resolve_job_class(args.job_type)
    except ValueError as exc:
        raise CommandError(f"--type: {exc}", EXIT_USAGE) from None
    if "executable" not in cls.parameter_names:
        raise CommandError(
            f"--type: {cls.type_code} jobs do not run a command; use LOCAL", EXIT_USAGE
        )
    environment: dict[str, str] = {}
    for name, value in args.env:
        environment[name] = value
    user = resolve_user(args.user)
    name = args.name or _command_name(argv)
    kwargs: dict[str, Any] = {
        "executable": argv[0],
        "arguments": argv[1:],
        "environment": environment,
        "description": args.description,
    }
    if args.workspace:
        kwargs["workspace"] = str(Path(args.workspace).expanduser().resolve())
    job = JobManager(args.app).create_job(name, user, job_type=cls, **kwargs)
    # Validate before anything is stored, so bad input leaves no job behind.
    job.parameters = engine_class_for_job(job)(None).validate(job.parameters or {})
    store.execute(job, source=EventSource.USER, actor=ACTOR)
    if not args.wait:
        if args.json:
            print_json(job_record(get_job(job.id)))
        elif args.quiet:
            out.print(str(job.id))
        else:
            out.print(Text(f"submitted job {job.id}: {name}"))
        return EXIT_OK
    if not args.json and not args.quiet:
        err.print(Text(f"submitted job {job.id}: {name}"), style="dim")
    return wait_for_job(
        job.id, run_monitor=not args.no_monitor, as_json=args.json, quiet=args.quiet
    )


def _command_name(argv: Sequence[str]) -> str:
    text = " ".join(shlex.join([Path(argv[0]).name, *argv[1:]]).split())
    return text if len(text) <= 120 else text[:119] + "…"


@contextmanager
def _in_process_monitor(enabled: bool) -> Iterator[Callable[[], None]]:
    """A monitor whose ``run_cycle`` the caller drives (or a no-op when disabled)."""
    if not enabled:
        yield lambda: None
        return
    import dataclasses
    import socket

    from offload.conf import get_settings
    from offload.monitor import Monitor

    settings = get_settings()
    fast = dataclasses.replace(settings, poll_interval=min(settings.poll_interval, 1.0))
    monitor = Monitor(name=f"cli:{socket.gethostname()}:{os.getpid()}", settings=fast)

    def cycle() -> None:
        try:
            monitor.run_cycle()
        except Exception as exc:  # a failed cycle is retried next tick, as the monitor does
            err.print(Text(f"monitor cycle failed: {type(exc).__name__}: {exc}"), style="yellow")

    try:
        yield cycle
    finally:
        monitor.shutdown()


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    parts = text.splitlines()
    return "\n".join(parts[-lines:])


def _logs(job: Job) -> dict[str, str]:
    from offload.errors import OffloadError

    try:
        logs = job.get_logs()
    except OffloadError as exc:
        return {"error": str(exc)}
    return {k: (v() if callable(v) else str(v)) for k, v in logs.items()}


def wait_for_job(job_id: int, *, run_monitor: bool, as_json: bool, quiet: bool) -> int:
    """Show a live status line until the job is final; then its log tails. 0 if Complete."""
    from offload.models import Job

    started = time.monotonic()
    live = err.is_terminal and not as_json and not quiet
    last_seen = ""
    last_line = ""
    last_log_read = 0.0
    job: Job | None = None
    with _in_process_monitor(run_monitor) as cycle:
        status_cm = err.status(f"job {job_id}: starting") if live else None
        spinner = status_cm.__enter__() if status_cm is not None else None
        try:
            while True:
                cycle()
                job = Job.objects.select_related("user", "scheduler").filter(pk=job_id).first()
                if job is None or job.deleted_at is not None:
                    raise CommandError(f"job {job_id} was deleted while waiting for it")
                state = job.cached_status
                now = time.monotonic()
                if spinner is not None and now - last_log_read > 1.0:
                    last_log_read = now
                    lines = _logs(job).get("stdout", "").strip().splitlines()
                    last_line = lines[-1][:80] if lines else ""
                if spinner is not None:
                    elapsed = _duration(datetime.timedelta(seconds=now - started))
                    text = Text(f"job {job_id}: {state} · {elapsed}")
                    if last_line:
                        text.append(f" · {last_line}", style="dim")
                    spinner.update(text)
                elif state != last_seen and not as_json and not quiet:
                    err.print(Text(f"job {job_id}: {state}"), style="dim")
                last_seen = state
                if _is_final(job):
                    break
                time.sleep(0.2)
        except KeyboardInterrupt:
            raise CommandError(
                f"stopped waiting; job {job_id} goes on (see `offload jobs show {job_id}`, "
                f"stop it with `offload jobs cancel {job_id}`)",
                EXIT_INTERRUPTED,
            ) from None
        finally:
            if status_cm is not None:
                status_cm.__exit__(None, None, None)
    assert job is not None
    logs = _logs(job)
    ok = job.status_enum.value == "COM"
    if as_json:
        record = job_record(job)
        record["logs"] = {k: _tail(v) for k, v in logs.items()}
        print_json(record)
    elif quiet:
        out.print(str(job.id))
    else:
        for name in ("stdout", "stderr"):
            log_text = logs.get(name, "")
            if log_text.strip():
                out.rule(Text(f"{name} (last {LOG_TAIL_LINES} lines)"), style="dim")
                out.print(Text(_tail(log_text)))
        message = f" ({job.status_message})" if job.status_message else ""
        out.print(
            Text.assemble(
                f"job {job.id} ", (job.cached_status, _status_style(job._status)), message
            )
        )
    return EXIT_OK if ok else EXIT_FAILED


# -- commands: jobs ---------------------------------------------------------------------------------
def cmd_jobs_list(args: argparse.Namespace) -> int:
    qs = _jobs_query()
    if args.user:
        from django.contrib.auth import get_user_model

        qs = qs.filter(**{f"user__{get_user_model().USERNAME_FIELD}": args.user})
    if args.app:
        qs = qs.filter(label=args.app)
    if args.status:
        qs = qs.filter(_status=args.status)
    jobs: list[Job] = list(qs.order_by("-id")[: args.limit])
    if args.json:
        print_json([job_record(j) for j in jobs])
        return EXIT_OK
    if not jobs:
        err.print("no jobs")
        return EXIT_OK
    rows: list[list[Text | str]] = []
    for job in jobs:
        status = Text(job.cached_status, style=_status_style(job._status))
        if job.is_stale:
            status.append(" (stale)", style="dim")
        rows.append(
            [
                str(job.id),
                Text(job.name),
                Text(job.label),
                Text(_username(job)),
                job.job_type,
                status,
                _local(job.creation_time),
                _duration(job.run_time),
            ]
        )
    headers = ("ID", "NAME", "APP", "USER", "TYPE", "STATUS", "CREATED", "RUN TIME")
    out.print(make_table(headers, rows, flexible="NAME"))
    return EXIT_OK


def cmd_jobs_show(args: argparse.Namespace) -> int:
    job = get_job(args.id)
    events = job.events
    if args.json:
        record = job_record(job)
        record["events"] = [event_record(e) for e in events]
        print_json(record)
        return EXIT_OK
    fields = Table(box=None, show_header=False, pad_edge=False)
    fields.add_column(style="bold")
    fields.add_column()
    params = job.parameters or {}
    command = ""
    if params.get("executable"):
        command = shlex.join([str(params["executable"]), *map(str, params.get("arguments") or [])])
    rows: list[tuple[str, Text | str]] = [
        ("id", str(job.id)),
        ("name", Text(job.name)),
        ("description", Text(job.description)),
        ("status", Text(job.cached_status, style=_status_style(job._status))),
        ("message", Text(job.status_message)),
        ("type", job.job_type),
        ("app", Text(job.label)),
        ("user", Text(_username(job))),
        ("command", Text(command)),
        (
            "environment",
            Text(" ".join(f"{k}={v}" for k, v in (params.get("environment") or {}).items())),
        ),
        ("workspace", Text(job.workspace)),
        ("attempt", str(job.attempt)),
        ("scheduler", Text(job.scheduler.name if job.scheduler else "(default engine)")),
        ("native id", Text(job.native_id)),
        ("created", _local(job.creation_time)),
        ("executed", _local(job.execute_time)),
        ("started", _local(job.start_time)),
        ("completed", _local(job.completion_time)),
        ("run time", _duration(job.run_time)),
    ]
    if job.is_stale:
        rows.append(("stale since", _local(job.stale_since)))
    for label, value in rows:
        if value:
            fields.add_row(label, value)
    out.print(fields)
    out.print()
    history: list[list[Text | str]] = [
        [
            _local(event.time),
            str(event.attempt),
            event.from_display,
            Text(event.to_display, style=_status_style(event.to_status)),
            event.source,
            Text(event.actor),
            Text(event.message or event.native_status),
        ]
        for event in events
    ]
    headers = ("TIME", "ATTEMPT", "FROM", "TO", "SOURCE", "ACTOR", "MESSAGE")
    out.print(Text("history", style="bold"))
    out.print(make_table(headers, history, flexible="MESSAGE", wrap=True))
    return EXIT_OK


def _new_text(previous: str, current: str) -> str:
    """What ``current`` adds to ``previous`` (logs are read as a window of their last bytes)."""
    if current.startswith(previous):
        return current[len(previous) :]
    anchor = previous[-2000:]
    where = current.rfind(anchor) if anchor else -1
    if where >= 0:
        return current[where + len(anchor) :]
    return current


def cmd_jobs_logs(args: argparse.Namespace) -> int:
    job = get_job(args.id)
    streams = [args.stream] if args.stream else ["stdout", "stderr"]
    if args.json and not args.follow:
        logs = _logs(job)
        print_json({name: logs.get(name, "") for name in streams})
        return EXIT_OK
    if args.json:
        raise CommandError("--json and --follow cannot be combined", EXIT_USAGE)
    if not args.follow:
        logs = _logs(job)
        if "error" in logs:
            raise CommandError(f"job {job.id}: cannot read its logs: {logs['error']}")
        if not job.attempt:
            err.print(Text(f"job {job.id} has no logs yet ({job.cached_status})"))
            return EXIT_OK
        if args.stream:
            sys.stdout.write(logs.get(args.stream, ""))
            return EXIT_OK
        for name in streams:
            out.rule(Text(name), style="dim")
            sys.stdout.write(logs.get(name, ""))
            if logs.get(name) and not logs[name].endswith("\n"):
                sys.stdout.write("\n")
            sys.stdout.flush()
        return EXIT_OK
    return follow_logs(job.id, streams)


def follow_logs(job_id: int, streams: Sequence[str]) -> int:
    """Print new log text as it appears (job stdout to stdout, job stderr to stderr) until the
    job is final."""
    from offload.models import Job

    seen = dict.fromkeys(streams, "")
    attempt = None
    try:
        while True:
            job = Job.objects.filter(pk=job_id).first()
            if job is None or job.deleted_at is not None:
                err.print(Text(f"job {job_id} was deleted"))
                return EXIT_FAILED
            if attempt is not None and job.attempt != attempt:
                seen = dict.fromkeys(streams, "")  # a resubmit: new log files
            attempt = job.attempt
            final = _is_final(job)
            logs = _logs(job) if job.attempt else {}
            for name in streams:
                current = logs.get(name, "")
                new = _new_text(seen[name], current)
                seen[name] = current
                if new:
                    target = sys.stderr if name == "stderr" and len(streams) > 1 else sys.stdout
                    target.write(new)
                    target.flush()
            if final:
                return EXIT_OK
            time.sleep(0.25)
    except KeyboardInterrupt:
        return EXIT_OK


def _job_action(args: argparse.Namespace, action: str) -> int:
    from offload import store
    from offload.models import EventSource

    job = get_job(args.id)
    if action == "cancel":
        store.stop(job, source=EventSource.USER, actor=ACTOR)
        job = get_job(args.id)
        text = (
            f"job {job.id} {job.cached_status}"
            if _is_final(job)
            else f"job {job.id}: stop requested; a monitor stops it"
        )
    elif action == "resubmit":
        store.resubmit(job, source=EventSource.USER, actor=ACTOR)
        job = get_job(args.id)
        text = f"job {job.id} resubmitted (attempt {job.attempt})"
    else:
        store.delete(job, actor=ACTOR)
        if args.json:
            print_json({"id": args.id, "deleted": True})
        else:
            out.print(Text(f"job {args.id} deleted"))
        return EXIT_OK
    if args.json:
        print_json(job_record(job))
    else:
        out.print(Text(text))
    return EXIT_OK


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    return _job_action(args, "cancel")


def cmd_jobs_resubmit(args: argparse.Namespace) -> int:
    return _job_action(args, "resubmit")


def cmd_jobs_delete(args: argparse.Namespace) -> int:
    return _job_action(args, "delete")


# -- commands: schedulers ---------------------------------------------------------------------------
def scheduler_record(scheduler: Scheduler) -> dict[str, Any]:
    return {
        "name": scheduler.name,
        "type": scheduler.scheduler_type,
        "host": scheduler.host,
        "port": scheduler.port,
        "username": scheduler.username,
        "options": scheduler.options,
        "has_secrets": bool(scheduler.secrets_encrypted),
        "created": _iso(scheduler.created),
    }


def cmd_schedulers_list(args: argparse.Namespace) -> int:
    from offload.schedulers import list_schedulers

    schedulers = list_schedulers()
    if args.json:
        print_json([scheduler_record(s) for s in schedulers])
        return EXIT_OK
    if not schedulers:
        err.print("no schedulers registered (jobs run on their type's default engine)")
        return EXIT_OK
    rows: list[list[Text | str]] = [
        [
            Text(s.name),
            s.scheduler_type,
            Text(s.host),
            str(s.port or ""),
            Text(s.username),
            Text(" ".join(f"{k}={json.dumps(v)}" for k, v in s.options.items())),
        ]
        for s in schedulers
    ]
    headers = ("NAME", "TYPE", "HOST", "PORT", "USERNAME", "OPTIONS")
    out.print(make_table(headers, rows, flexible="OPTIONS", wrap=True))
    return EXIT_OK


RESERVED_OPTIONS = frozenset(
    {
        "name",
        "host",
        "scheduler_type",
        "username",
        "password",
        "private_key_path",
        "private_key_pass",
        "port",
    }
)


def _option_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_schedulers_add(args: argparse.Namespace) -> int:
    from offload.errors import InvalidJobError
    from offload.schedulers import create_scheduler

    options: dict[str, Any] = {}
    for key, value in args.option:
        if key in RESERVED_OPTIONS:
            raise InvalidJobError(f"option {key}", "is set with its own flag, not --option")
        options[key] = _option_value(value)
    key_path = None
    if args.private_key:
        path = Path(args.private_key).expanduser().resolve()
        if not path.is_file():
            raise InvalidJobError("private_key", f"no file at {path}")
        key_path = str(path)
    password = _read_stdin_secret("password") if args.password_stdin else None
    scheduler = create_scheduler(
        args.name,
        host=args.host,
        scheduler_type=args.scheduler_type,
        username=args.username,
        password=password,
        private_key_path=key_path,
        port=args.port,
        **options,
    )
    if args.json:
        print_json(scheduler_record(scheduler))
    else:
        out.print(Text(f"added scheduler {scheduler.name} ({scheduler.scheduler_type})"))
    return EXIT_OK


def cmd_schedulers_remove(args: argparse.Namespace) -> int:
    from offload.schedulers import remove_scheduler

    if not remove_scheduler(args.name):
        raise CommandError(f"scheduler {args.name!r} does not exist")
    if args.json:
        print_json({"name": args.name, "removed": True})
    else:
        out.print(Text(f"removed scheduler {args.name}"))
    return EXIT_OK


def cmd_tokens_create(args: argparse.Namespace) -> int:
    """Print a new API token (``Authorization: Bearer <token>``); only its hash is stored."""
    from django.contrib.auth import get_user_model

    from offload.web.access import create_api_token

    user = get_user_model().objects.filter(username=args.username).first()
    if user is None:
        raise CommandError(f"user {args.username!r} does not exist")
    record, token = create_api_token(user, args.name)
    if args.json:
        print_json({"user": user.get_username(), "name": record.name, "token": token})
    else:
        out.print(Text(f"API token for {user.get_username()} (shown once; keep it secret):"))
        print(token)
    return EXIT_OK


# -- entry point ------------------------------------------------------------------------------------
def _fail(message: str, code: int) -> int:
    err.print(Text(f"offload: error: {message}"), style="red", soft_wrap=True)
    return code


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        setup_django(args)
        return int(args.handler(args))
    except CommandError as exc:
        return _fail(str(exc), exc.code)
    except KeyboardInterrupt:
        err.print("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        return _handle_error(exc)


def _handle_error(exc: Exception) -> int:
    from django.core.exceptions import ImproperlyConfigured
    from django.db import DatabaseError, OperationalError

    from offload.errors import ConfigurationError, OffloadError

    if isinstance(exc, ConfigurationError | ImproperlyConfigured):
        return _fail(f"configuration error: {exc}", EXIT_UNREACHABLE)
    if isinstance(exc, OffloadError):
        return _fail(str(exc), EXIT_FAILED)
    if isinstance(exc, DatabaseError):
        where = database_description()
        if _tables_missing():
            return _fail(
                f"the database at {where} has no offload tables; run `offload migrate` first",
                EXIT_UNREACHABLE,
            )
        if isinstance(exc, OperationalError):
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return _fail(f"cannot reach the database at {where}: {detail}", EXIT_UNREACHABLE)
        return _fail(f"database error at {where}: {exc}", EXIT_FAILED)
    if isinstance(exc, ValueError):
        return _fail(str(exc), EXIT_FAILED)
    raise exc


def main(argv: Sequence[str] | None = None) -> NoReturn:
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
