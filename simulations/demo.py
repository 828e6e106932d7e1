"""The README's run command: a hub with a small simulated Luoyang running on it.

    python -m simulations.demo [--host 127.0.0.1] [--port 8000] [--speed 5] [--data-dir var]

Starts the embedded Redis (data in ``<data-dir>/redis``) and one hub process on the
simulation's clock, registers the demo squads (``[demo] squads_per_unit_per_district`` of the
city file, at the depots), creates an account for each face (the wall map, the center, a
call-taker, the water unit's desk: :data:`FACES`, generated passwords), prints the pages and
usernames, and runs the city until Ctrl-C or SIGTERM. Then it writes the run's report and
stops the hub and Redis.

The simulated call-takers and the simulated center desk act through accounts of their own
(:data:`SIMULATED`), so that a request's timeline names them, not the start-up tokens.

Tokens, the passwords and the squads are kept in ``<data-dir>/demo.json`` (0600, like the
data directory, 0700; no password is printed): a restart with the same data keeps the
sign-ins, and the squads pick up the jobs they held.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from server.city import City, load_city
from server.launch import HubProc, spawn_hub, spawn_ledger, start_redis
from server.private_files import private_dir, write_private
from simulations.api import HubApi
from simulations.city import (
    Simulation,
    add_run_arguments,
    config_from,
    default_out_dir,
    hub_time_settings,
    register_squads,
    stop_on_signals,
)
from simulations.squad import Seat

ROLES = ("admin", "calltaker", "center", "wall")
log = logging.getLogger("simulations.demo")


# ---- what the demo keeps between runs --------------------------------------------------------


def new_tokens() -> dict[str, str]:
    return {role: secrets.token_urlsafe(18) for role in ROLES}


def load_state(path: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state


def save_state(
    path: Path,
    tokens: dict[str, str],
    seats: list[Seat],
    accounts: list[dict[str, str]],
    simulated: dict[str, dict[str, str]] | None = None,
) -> None:
    state = {"tokens": tokens, "accounts": accounts, "squads": [asdict(s) for s in seats]}
    write_private(
        path,
        json.dumps(state | {"simulated": simulated or {}}, ensure_ascii=False, indent=1),
    )


@dataclass(frozen=True)
class Face:
    """A page a person signs in to, and the demo account that opens it."""

    title: str
    page: str
    username: str
    role: str
    name: str
    unit: str | None = None


# One account a face: the wall map, the center's console, the call-takers' intake and one
# unit's desk (the center console, restricted to its unit).
FACES = (
    Face("wall map", "/wall.html", "wall", "wall", "Wall map (demo)"),
    Face("center", "/center.html", "center", "center", "Supervision center (demo)"),
    Face("call-taker", "/intake.html", "calltaker", "calltaker", "Call-taker (demo)"),
    Face("water desk", "/center.html", "water-desk", "unit", "Water desk (demo)", "water"),
)


# Who the simulation acts as: role -> (username, name). The people trying the demo sign in
# as FACES; what the simulated city does is recorded under these.
SIMULATED = {
    "calltaker": ("sim-calltaker", "Simulated call-takers (demo)"),
    "center": ("sim-center", "Simulated center desk (demo)"),
}


async def simulated_actors(api: HubApi, state: dict[str, Any]) -> dict[str, dict[str, str]]:
    """An account and an API token for each of :data:`SIMULATED` (the saved ones while the
    hub's database still has the account), set as ``api``'s token for that role."""
    saved = state.get("simulated")
    saved = saved if isinstance(saved, dict) else {}
    taken = await api.account_usernames()
    actors = {}
    for role, (username, name) in SIMULATED.items():
        kept = saved.get(role)
        if not (isinstance(kept, dict) and kept.get("username") in taken and kept.get("token")):
            chosen = username
            while chosen in taken:
                chosen = f"{username}-{secrets.token_hex(2)}"
            body = {"username": chosen, "name": name, "role": role}
            await api.create_account(body | {"password": secrets.token_urlsafe(24)})
            taken.add(chosen)
            kept = {"username": chosen, "token": await api.add_token(chosen, "demo simulation")}
        actors[role] = {"username": str(kept["username"]), "token": str(kept["token"])}
        api.tokens[role] = actors[role]["token"]
    return actors


def _saved_accounts(state: dict[str, Any]) -> list[dict[str, str]]:
    saved = [a for a in state.get("accounts", []) if isinstance(a, dict)]
    wall = state.get("wall")  # before the other faces had accounts: the wall's alone
    if isinstance(wall, dict) and wall.get("username"):
        saved.append({**wall, "role": "wall"})
    return saved


async def demo_accounts(api: HubApi, state: dict[str, Any]) -> list[dict[str, str]]:
    """A sign-in for each of :data:`FACES`: the saved one if the hub's database still has
    it, else a new account with a generated password (another name if the usual one is
    taken and its password is not ours)."""
    saved = _saved_accounts(state)
    taken = await api.account_usernames()
    accounts = []
    for face in FACES:
        unit = {"unit": face.unit} if face.unit else {}
        kept = next(
            (
                a
                for a in saved
                if a.get("role") == face.role
                and a.get("unit") == face.unit
                and a.get("password")
                and a.get("username") in taken
            ),
            None,
        )
        if kept is None:
            username, password = face.username, secrets.token_urlsafe(12)
            while username in taken:
                username = f"{face.username}-{secrets.token_hex(2)}"
            body = {"username": username, "name": face.name, "role": face.role}
            await api.create_account(body | {"password": password} | unit)
            taken.add(username)
            kept = {"username": username, "password": password}
        account = {"username": kept["username"], "password": kept["password"], "role": face.role}
        accounts.append(account | unit)
    return accounts


def seats_of(state: dict[str, Any]) -> list[Seat]:
    return [
        Seat(
            s["id"],
            s["token"],
            s["unit"],
            s["district"],
            tuple(s["depot"]),  # type: ignore[arg-type]
            s.get("name", ""),
        )
        for s in state.get("squads", [])
    ]


async def known_seats(api: HubApi, state: dict[str, Any]) -> list[Seat]:
    """The saved squads, if the hub (its Redis) still knows them; else none."""
    seats = seats_of(state)
    if not seats or await api.get_squad(seats[0].id) is None:
        return []
    return seats


# ---- the run ---------------------------------------------------------------------------------


def print_banner(
    hub: HubProc,
    accounts: list[dict[str, str]],
    seats: list[Seat],
    city: City,
    speed: float,
    redis_url: str,
    state_path: Path,
) -> None:
    base = hub.http
    lines = [
        f"{city.name_zh} {city.name_en}: simulated city at x{speed:g} "
        f"({len(seats)} squads, offer window {60 / speed:.3g} s real)",
        *(
            f"  {face.title:<14}{base}{face.page:<14} sign in as {account['username']}"
            for face, account in zip(FACES, accounts, strict=True)
        ),
        f"                (passwords in {state_path}, readable by you only; ?lang=en: English)",
        f"  API           {base}/api/v1/health",
        f"  field socket  ws://{hub.host}:{hub.port}/ws/field",
        f"  Redis         {redis_url}",
        f"  hub log       {hub.log_path}",
        f"  API tokens    in {state_path} (readable by you only)",
    ]
    lines.append("Ctrl-C stops the city, writes the report, then stops the hub and Redis.")
    print("\n".join(lines), flush=True)


async def run_city(
    args: argparse.Namespace,
    hub: HubProc,
    tokens: dict[str, str],
    state_path: Path,
    public_url: str,
) -> int:
    city = load_city()
    api = HubApi(hub.http, tokens)
    try:
        await api.wait_healthy(30)
        state = load_state(state_path)
        seats = await known_seats(api, state)
        resume = bool(seats)
        accounts = await demo_accounts(api, state)
        simulated = await simulated_actors(api, state)
        if not seats:
            seats = await register_squads(api, city, city.demo.squads_per_unit_per_district)
        save_state(state_path, tokens, seats, accounts, simulated)
        print_banner(hub, accounts, seats, city, args.speed, public_url, state_path)
        stop = asyncio.Event()
        stop_on_signals(stop)
        simulation = Simulation(api, city, seats, config_from(args), resume=resume)
        run = await simulation.run(stop)
        print("city stopped: squads disconnected", flush=True)
        if not args.no_report:
            from simulations.report import collect_and_write

            files = await collect_and_write(api, city, run, Path(args.out or default_out_dir()))
            print(f"report: {files.html}", flush=True)
    finally:
        await api.close()
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--data-dir", default="var")
    parser.add_argument("--no-report", action="store_true", help="skip the end-of-run report")
    # A demo at 3 a.m. Luoyang time would show an empty city: start at the morning rush.
    add_run_arguments(parser, start_hour=8.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    data_dir = Path(args.data_dir).resolve()
    private_dir(data_dir)
    state_path = data_dir / "demo.json"
    tokens = load_state(state_path).get("tokens") or new_tokens()
    if os.environ.get("DISPATCH_TOKENS"):  # the hub's log would say it used them
        print(
            f"demo: DISPATCH_TOKENS is not used: the demo's own tokens are in {state_path}",
            file=sys.stderr,
        )
    # Redis and the hub are kept out of the terminal's Ctrl-C (detach) so that the demo
    # decides the order of shutdown: squads first, then the report (which still needs the hub
    # and Redis), then the hub, then Redis.
    redis = start_redis(data_dir / "redis", detach=True)
    hub: HubProc | None = None
    ledger: subprocess.Popen[bytes] | None = None
    try:
        # The ledger writer in its own process: the hub's CPU stays with its sockets.
        ledger = spawn_ledger(redis.url, data_dir, log_path=data_dir / "ledger.log")
        settings = {"ledger_in_hub": "0", **hub_time_settings(args.speed)}
        hub = spawn_hub(
            redis.url,
            tokens,
            data_dir,
            settings,
            host=args.host,
            port=args.port,
            log_path=data_dir / "hub.log",
            detach=True,
        )
        return asyncio.run(run_city(args, hub, tokens, state_path, redis.public_url))
    except KeyboardInterrupt:  # Ctrl-C before the city's own handler was installed
        return 130
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}\n{hub.log_tail() if hub else ''}", file=sys.stderr)
        return 1
    finally:
        # Each part says when it is down: a slow stop shows where it was slow.
        started = time.monotonic()
        if hub is not None:
            hub.stop()
            _stopped("hub", started)
        if ledger is not None:
            ledger.terminate()
            ledger.wait(timeout=10)
            _stopped("ledger writer", started)
        redis.stop()
        _stopped("Redis", started)


def _stopped(what: str, started: float) -> None:
    print(f"{what} stopped ({time.monotonic() - started:.1f} s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
