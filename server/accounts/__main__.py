"""Accounts from the command line, on the hub's database (DATABASE_URL, or the SQLite ledger
in DISPATCH_DATA_DIR, as ``python -m server`` uses)::

    python -m server.accounts create --username alice --name "Alice" --role calltaker
    python -m server.accounts create --username desk1 --name "Water desk" --role unit --unit water
    python -m server.accounts token alice --label phone      # prints the token, once
    python -m server.accounts list
    python -m server.accounts disable alice

``create`` reads the password from standard input when it is not a terminal (one line), else
asks for it twice. Actions are recorded as ``cli:<user of the shell>``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import unicodedata
from datetime import UTC, datetime
from typing import Any

import msgspec

from server.accounts.model import NewAccount, unit_problems
from server.accounts.passwords import hash_password
from server.accounts.store import AccountStore, UsernameTaken
from server.city import load_city
from server.ledger import Ledger, default_database_url
from server.settings import Settings, SettingsError, load_settings


class CliError(Exception):
    """A message for the user; exit status 1."""


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise CliError("the two passwords differ")
    return first


async def _with_store(settings: Settings, action: Any) -> Any:
    ledger = await Ledger.open(settings.database_url or default_database_url(settings.data_dir))
    try:
        return await action(await AccountStore.open(ledger.engine))
    finally:
        await ledger.close()


def _by() -> str:
    return f"cli:{getpass.getuser()}"


def create(args: argparse.Namespace, settings: Settings) -> int:
    password = _read_password()
    try:
        new = msgspec.convert(
            {
                "username": args.username,
                "name": args.name,
                "role": args.role,
                "unit": args.unit,
                "password": password,
            },
            NewAccount,
        )
    except msgspec.ValidationError as exc:
        raise CliError(str(exc)) from None
    known = bool(new.unit) and load_city(settings.config_path).unit(new.unit or "") is not None
    problems = unit_problems(new.role, new.unit, known or (new.role == "unit" and bool(new.unit)))
    if problems:
        raise CliError(problems["unit"])
    if new.role == "unit" and not known:
        # Units added through the API live in Redis, which this command does not read.
        print(f"warning: unit {new.unit} is not in the city file", file=sys.stderr)
    password_hash = hash_password(new.password)

    async def action(store: AccountStore) -> None:
        try:
            await store.create(new.username, new.name, new.role, new.unit, password_hash, _by())
        except UsernameTaken:
            raise CliError(f"username {new.username} is taken") from None

    asyncio.run(_with_store(settings, action))
    print(f"created {new.role} account {new.username}")
    return 0


def token(args: argparse.Namespace, settings: Settings) -> int:
    async def action(store: AccountStore) -> tuple[str, str]:
        if await store.get(args.username) is None:
            raise CliError(f"no account {args.username}")
        return await store.add_token(args.username, args.label, _by())

    token_id, secret = asyncio.run(_with_store(settings, action))
    print(f"token {token_id} for {args.username} (shown once):", file=sys.stderr)
    print(secret)
    return 0


ACCOUNT_COLUMNS = ("USERNAME", "ROLE", "STATE", "TOKENS", "CREATED (UTC)", "BY", "NAME")


def account_row(person: dict[str, Any]) -> tuple[str, ...]:
    """One account of :meth:`AccountStore.everyone` as the cells of :data:`ACCOUNT_COLUMNS`
    (tokens: the ones not revoked)."""
    live = [t for t in person["tokens"] if t["revoked_at"] is None]
    unit = f" ({person['unit']})" if person["unit"] else ""
    return (
        person["username"],
        f"{person['role']}{unit}",
        "disabled" if person["disabled_at"] else "active",
        str(len(live)),
        datetime.fromtimestamp(person["created_at"], UTC).strftime("%Y-%m-%d %H:%M"),
        person["created_by"],
        person["name"],
    )


def text_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """The lines of a plain-text table: each column as wide as its widest cell (Chinese
    characters count two columns, as a terminal draws them), two spaces between columns,
    no spaces at the end of a line."""
    widths = [max(_width(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    return [
        "  ".join(
            cell + " " * (width - _width(cell)) for cell, width in zip(line, widths, strict=True)
        ).rstrip()
        for line in (header, *rows)
    ]


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def list_accounts(args: argparse.Namespace, settings: Settings) -> int:
    async def action(store: AccountStore) -> list[dict[str, Any]]:
        return await store.everyone()

    people = asyncio.run(_with_store(settings, action))
    for line in text_table(ACCOUNT_COLUMNS, [account_row(person) for person in people]):
        print(line)
    return 0


def disable(args: argparse.Namespace, settings: Settings) -> int:
    async def action(store: AccountStore) -> bool:
        return await store.disable(args.username, _by())

    if not asyncio.run(_with_store(settings, action)):
        raise CliError(f"no account {args.username}")
    print(f"disabled {args.username} (hubs stop accepting it within DISPATCH_AUTH_CACHE_S)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m server.accounts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("create", help="create an account (password from stdin)")
    made.add_argument("--username", required=True)
    made.add_argument("--name", required=True)
    made.add_argument(
        "--role", required=True, choices=["admin", "calltaker", "center", "unit", "wall"]
    )
    made.add_argument("--unit", help="the unit of a unit desk (role unit only)")
    made.set_defaults(run=create)
    tok = commands.add_parser("token", help="add an API token to an account; prints it once")
    tok.add_argument("username")
    tok.add_argument("--label", required=True)
    tok.set_defaults(run=token)
    commands.add_parser("list", help="list the accounts").set_defaults(run=list_accounts)
    off = commands.add_parser("disable", help="disable an account")
    off.add_argument("username")
    off.set_defaults(run=disable)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        return int(args.run(args, settings))
    except (CliError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
