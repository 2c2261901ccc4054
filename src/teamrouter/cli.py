"""The `teamrouter` command: serve, migrate, manage users, and deployment-staff operations."""

from __future__ import annotations

import asyncio
import logging.config
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer
from sqlalchemy.exc import DBAPIError

from teamrouter.config import PREFIX, Settings, load_settings, resolve_secret
from teamrouter.errors import CannotListen, NotFound, TeamrouterError
from teamrouter.logs import logging_config
from teamrouter.runtime import Runtime, build_runtime
from teamrouter.storage import migrate
from teamrouter.storage.db import describe_failure

if TYPE_CHECKING:
    import uvicorn

T = TypeVar("T")

app = typer.Typer(
    help="teamrouter: a self-hostable OpenRouter-compatible LLM gateway for teams.",
    no_args_is_help=True,
)
db_app = typer.Typer(help="Database schema and integrity.", no_args_is_help=True)
users_app = typer.Typer(help="Manage people.", no_args_is_help=True)
staff_app = typer.Typer(help="Deployment-staff operations (audited).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(staff_app, name="staff")
keys_app = typer.Typer(help="API keys for automation.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


# Exit statuses: 2 for configuration or input refused before anything ran, 1 for an operation that
# failed (the database unreachable, a rule of the service). `serve` adds two of its own, so that a
# service manager can tell them apart: 4 when its address cannot be listened on (the port in use,
# an address not this machine's), before the database is touched; 3, uvicorn's, when the app's
# start-up failed in its one worker.
EXIT_WORKER_FAILED = 3
EXIT_CANNOT_LISTEN = 4


def _fail(message: str, status: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(status)


def _settings() -> Settings:
    try:
        return load_settings()
    except TeamrouterError as exc:
        _fail(exc.message, 2)


def _secret(settings: Settings) -> Settings:
    try:
        return resolve_secret(settings)
    except TeamrouterError as exc:
        _fail(exc.message, 2)


def _migrate(settings: Settings, *, quiet: bool = False) -> None:
    try:
        migrate.upgrade(settings.effective_database_url, quiet=quiet)
    except TeamrouterError as exc:
        _fail(exc.message, 1)


def _run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    try:
        return asyncio.run(main())
    except TeamrouterError as exc:
        _fail(exc.message, 1)
    except (OSError, DBAPIError) as exc:  # the database went away mid-command
        _fail(f"database (TEAMROUTER_DATABASE_URL): {describe_failure(exc)}", 1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free one, printed).")] = 8080,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes sharing the port.")] = 1,
) -> None:
    """Migrate the database, then serve the API (and dashboard)."""
    from teamrouter import serving

    # Everything that can be checked is checked here, before uvicorn starts: a worker that fails to
    # start makes uvicorn's supervisor exit 0 (with --workers > 1) after a traceback per worker.
    settings = _settings()
    problems = settings.problems_for_serving()
    if problems:
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    # Resolved here, before workers start, so every worker reads the same generated dev secret.
    _secret(settings)
    _check_catalog(settings)
    # Bound before migrating: an address we cannot have (another server on the port) leaves the
    # database as it was. Listening only after: until then a client is refused, not kept waiting.
    try:
        sock = serving.bind(host, port)
        _migrate(settings)
        serving.listen(sock)
    except CannotListen as exc:
        _fail(exc.message, EXIT_CANNOT_LISTEN)
    if settings.is_dev and "public_url" not in settings.model_fields_set:
        # Dev mail links lead back to this server, on whatever port it got (`--port 0` included);
        # the workers read their settings from the environment.
        os.environ[PREFIX + "PUBLIC_URL"] = serving.local_url(sock)
    # True from here: connections are accepted, and wait in the backlog until a worker has started.
    typer.echo(f"teamrouter listening on {serving.url(sock)} ({settings.env.value} mode)", err=True)
    try:
        started = serving.run(_uvicorn_config(settings, workers), sock)
    except KeyboardInterrupt:  # Ctrl-C: uvicorn has shut down cleanly; no traceback, as uvicorn.run
        return
    if not started:  # uvicorn logged why (the app's start-up failed); its status, as uvicorn.run
        raise typer.Exit(EXIT_WORKER_FAILED)


def _uvicorn_config(settings: Settings, workers: int) -> uvicorn.Config:
    import uvicorn

    from teamrouter.server import deadline_protocol
    from teamrouter.serving import BACKLOG

    return uvicorn.Config(
        "teamrouter.asgi:app_from_environment",
        factory=True,
        workers=workers,
        backlog=BACKLOG,
        log_config=logging_config(),  # applied in every worker, which inherits none of ours
        log_level="info",
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        access_log=False,  # access logs would carry query strings; the activity feed is the record
        loop="uvloop",
        # No `server: uvicorn` on every response: it tells a scanner what to try, and costs a
        # header per answer.
        server_header=False,
        # Idle keep-alive connections stay open longer than clients keep theirs (httpx and the
        # OpenAI SDK: 5 s, uvicorn's default too), so the client always closes first. Otherwise a
        # request sent just as the server closes an idle connection is lost to the client as a
        # connection error (seen under load in TESTPLAN A1). 75 s, as nginx, outlasts load
        # balancers' 60 s idle timeouts for the same reason.
        timeout_keep_alive=75,
        # httptools with deadlines for slow clients (what uvicorn's own lacks; see teamrouter.server).
        http=deadline_protocol(
            read_timeout=settings.request_read_timeout_seconds,
            write_timeout=settings.response_write_timeout_seconds,
        ),
    )


def _check_catalog(settings: Settings) -> None:
    """Load the catalog as every worker will (same file, same environment for api_key_env)."""
    from teamrouter.config import upstream_credentials
    from teamrouter.gateway.catalog import CatalogError, load_catalog

    try:
        load_catalog(settings.catalog, env=upstream_credentials())
    except CatalogError as exc:
        _fail(f"catalog (TEAMROUTER_CATALOG): {exc}", 2)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all migrations (SQLite or PostgreSQL, from TEAMROUTER_DATABASE_URL)."""
    settings = _settings()
    _migrate(settings)
    typer.echo("database is up to date")


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Option(help="Email address (sign-in name).")],
    password: Annotated[str, typer.Option(help="Password (at least 10 characters).")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    verified: Annotated[bool, typer.Option("--verified", help="Mark the email as verified.")] = False,
    staff: Annotated[bool, typer.Option("--staff", help="Make the person deployment staff.")] = False,
) -> None:
    """Create a person directly (no verification email)."""
    from teamrouter.domain.accounts import service as accounts

    settings = _secret(_settings())
    # Migrates, so the first person can be made before the first start; quietly, as a side matter.
    _migrate(settings, quiet=True)

    async def work() -> str:
        rt = build_runtime(settings)
        try:
            user = await accounts.create_user(
                rt, email=email, password=password, name=name, verified=verified, staff=staff
            )
            return user.id
        finally:
            await rt.close()

    user_id = _run(work())
    typer.echo(user_id)


@users_app.command("set-password")
def users_set_password(
    email: Annotated[str, typer.Option(help="Email address of the account.")],
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the new password from the first line of standard input."),
    ] = False,
    verified: Annotated[bool, typer.Option("--verified", help="Also mark the email as verified.")] = False,
    disable_keys: Annotated[
        bool, typer.Option("--disable-keys", help="Also disable every API key the person created.")
    ] = False,
) -> None:
    """Give a person a new password (asked twice), end all their sessions and clear failed sign-ins."""
    from teamrouter.domain.accounts.reset import set_password

    # An unknown address is said before the password is asked for.
    _operate(lambda rt: _user_id(rt, email))
    password = _new_password(from_stdin=password_stdin)
    done = _operate(
        lambda rt: set_password(
            rt, actor=None, email=email, password=password, verified=verified, disable_keys=disable_keys
        )
    )
    said = [f"password of {done.email} set", _count(done.sessions_ended, "session") + " ended"]
    if done.verified_now:
        said.append("email marked verified")
    if done.keys_disabled:
        said.append(_count(done.keys_disabled, "API key") + " disabled")
    if done.keys_working:
        # Said, for a reset often follows a takeover, and keys outlive passwords.
        said.append(_count(done.keys_working, "API key") + " still working (--disable-keys disables them)")
    typer.echo("; ".join(said))


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def _new_password(*, from_stdin: bool) -> str:
    """Asked on the terminal, or read from standard input; never an argument, which any local user
    can read in `ps` and the shell keeps in its history."""
    if from_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        if not password:
            _fail("--password-stdin: standard input has no password on its first line", 2)
        return password
    if not sys.stdin.isatty():
        _fail("no terminal to ask for the new password: pass it on standard input with --password-stdin", 2)
    return str(typer.prompt("New password", hide_input=True, confirmation_prompt=True))


def _operate(work: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run one service call as the operator on the host (audited with no acting user)."""
    settings = _secret(_settings())

    async def run() -> T:
        # First, so an unreachable or unmigrated database is one line naming the setting.
        await migrate.require_current(settings.effective_database_url)
        rt = build_runtime(settings)
        try:
            return await work(rt)
        finally:
            await rt.close()

    return _run(run())


def _usd(value: str, option: str) -> int:
    """An amount option, by the HTTP API's rules (positive, exact, at most MAX_AMOUNT_USD)."""
    from teamrouter.domain.credits.schemas import parse_usd_amount

    try:
        return parse_usd_amount(value)
    except ValueError as exc:
        typer.echo(f"error: {option}: {exc}", err=True)
        raise typer.Exit(2) from exc


async def _user_id(rt: Runtime, email: str) -> str:
    from sqlalchemy import select

    from teamrouter.domain.accounts.models import User
    from teamrouter.domain.accounts.service import normalize_email

    async with rt.db.read() as session:
        user_id = await session.scalar(select(User.id).where(User.email == normalize_email(email)))
    if user_id is None:
        raise NotFound(f"No account with email {email}")
    return user_id


@db_app.command("check-ledger")
def db_check_ledger() -> None:
    """Recompute every balance, hold and key window from the ledger; exit 1 on any mismatch."""
    from teamrouter.domain.credits.checker import check_ledger

    problems = _operate(check_ledger)
    for problem in problems:
        typer.echo(problem)
    if problems:
        typer.echo(f"{len(problems)} problem(s) found", err=True)
        raise typer.Exit(1)
    typer.echo("ledger is consistent")


@staff_app.command("transfer-credits")
def staff_transfer_credits(
    user: Annotated[str, typer.Option(help="Email of the person whose personal credits move.")],
    org: Annotated[str, typer.Option(help="Organization id (the person must be a member).")],
    amount: Annotated[str, typer.Option(help="USD, e.g. 25 or 12.50.")],
    note: Annotated[str, typer.Option(help="Why (kept in the ledger and audit log).")] = "",
) -> None:
    """Move credits from a person's personal balance into an organization's pool."""
    from teamrouter.domain.credits.service import transfer_personal_to_org

    units = _usd(amount, "--amount")

    async def work(rt: Runtime) -> object:
        user_id = await _user_id(rt, user)
        return await transfer_personal_to_org(
            rt, actor=None, user_id=user_id, organization_id=org, amount=units, note=note
        )

    _operate(work)
    typer.echo(f"moved ${amount} from {user} to {org}")


@staff_app.command("grant-credits")
def staff_grant_credits(
    org: Annotated[str, typer.Option(help="Organization id.")],
    amount: Annotated[str, typer.Option(help="USD, e.g. 500.")],
    reference: Annotated[str, typer.Option(help="Invoice reference; granting twice with it is a no-op.")],
) -> None:
    """Credit an organization for an invoice paid off-line (idempotent on the reference)."""
    from teamrouter.domain.credits.service import grant_credits

    units = _usd(amount, "--amount")
    grant = _operate(lambda rt: grant_credits(rt, actor=None, organization_id=org, amount=units, reference=reference))
    if grant.created:
        typer.echo(f"granted ${amount} to {org} (reference {reference})")
    else:  # an operator re-running the command must not believe the org was credited twice
        typer.echo(f"already granted: reference {reference} credited ${amount} to {org} before; nothing changed")


@staff_app.command("set-member-cap")
def staff_set_member_cap(
    org: Annotated[str, typer.Option(help="Organization id.")],
    cap: Annotated[int, typer.Option(min=1, max=100_000, help="Most members the org may have.")],
) -> None:
    """Raise (or lower) one organization's member cap."""
    from teamrouter.domain.orgs.service import set_member_cap

    changed = _operate(lambda rt: set_member_cap(rt, actor=None, organization_id=org, cap=cap))
    members = changed.member_count
    note = ""
    if members > cap:  # allowed, and said: nobody is removed, so it stays above its cap a while
        note = f"; it has {members} members: nobody is removed, and nobody can join until {members - cap + 1} leave"
    elif members == cap:
        note = f"; it is full ({_count(members, 'member')})"
    typer.echo(f"member cap of {org} is now {cap}{note}")


@keys_app.command("create")
def keys_create(
    email: Annotated[str, typer.Option(help="The person who owns the key.")],
    name: Annotated[str, typer.Option(help="A name to recognise the key by.")],
    org: Annotated[
        str | None, typer.Option(help="Organization id (the person must be an admin); default personal.")
    ] = None,
    limit: Annotated[str | None, typer.Option(help="Spending limit in USD.")] = None,
    limit_reset: Annotated[str | None, typer.Option(help="daily, weekly or monthly.")] = None,
    management: Annotated[bool, typer.Option("--management", help="A management key (for automation).")] = False,
) -> None:
    """Create an API key for a person and print it once."""
    from decimal import Decimal, InvalidOperation

    from sqlalchemy import select

    from teamrouter.domain.actor import Actor
    from teamrouter.domain.keys.service import create_key
    from teamrouter.domain.orgs.models import Membership
    from teamrouter.domain.roles import Role

    try:
        limit_usd = Decimal(limit) if limit is not None else None
    except InvalidOperation:
        _fail("--limit: must be a number of US dollars", 2)
    if limit_usd is not None and not limit_usd.is_finite():
        _fail("--limit: must be a finite number", 2)

    async def work(rt: Runtime) -> str:
        user_id = await _user_id(rt, email)
        role = None
        if org is not None:
            async with rt.db.read() as session:
                found = await session.scalar(
                    select(Membership.role).where(Membership.organization_id == org, Membership.user_id == user_id)
                )
            if found is None:
                raise NotFound(f"{email} is not a member of {org}")
            role = Role(found)
        actor = Actor(user_id=user_id, email_verified=True, organization_id=org, role=role)
        created = await create_key(
            rt, actor=actor, name=name, limit=limit_usd, limit_reset=limit_reset, management=management
        )
        return created.plaintext

    typer.echo(_operate(work))


def main() -> None:
    logging.config.dictConfig(logging_config())
    app()
