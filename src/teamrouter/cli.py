"""The `teamrouter` command: serve, migrate, manage users, and deployment-staff operations."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable
from typing import Annotated, TypeVar

import typer

from teamrouter.config import Settings, load_settings, resolve_secret
from teamrouter.errors import TeamrouterError
from teamrouter.runtime import build_runtime
from teamrouter.storage import migrate

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


def _settings() -> Settings:
    try:
        return load_settings()
    except TeamrouterError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc


def _run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    try:
        return asyncio.run(main())
    except TeamrouterError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes sharing the port.")] = 1,
) -> None:
    """Migrate the database, then serve the API (and dashboard)."""
    import uvicorn

    settings = _settings()
    problems = settings.problems_for_serving()
    if problems:
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    # Resolved here, before workers fork, so every worker reads the same generated dev secret.
    resolve_secret(settings)
    migrate.upgrade(settings.effective_database_url)
    typer.echo(f"teamrouter listening on http://{host}:{port} ({settings.env.value} mode)", err=True)
    uvicorn.run(
        "teamrouter.asgi:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,  # access logs would carry query strings; the activity feed is the record
        loop="uvloop",
        http="httptools",
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all migrations (SQLite or PostgreSQL, from TEAMROUTER_DATABASE_URL)."""
    settings = _settings()
    migrate.upgrade(settings.effective_database_url)
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

    settings = _settings()
    migrate.upgrade(settings.effective_database_url)

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


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    app()
