"""``messagegate keys create|list|show|update|revoke|rotate``: the key verbs on the command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson

from messagegate.config import Config
from messagegate.config.keyspec import KeyFieldError, parse_duration
from messagegate.store.base import StoreError
from messagegate.store.keys import KeyAdmin, describe
from messagegate.store.location import managing_database, open_store, serving_database

_SETTING_HELP = {
    "models": "comma-separated model names or globs the key may use (default: any)",
    "budget": "USD the key may spend per --period (over its life without one)",
    "period": "the budget's period: day, week or month",
    "budget-mode": "soft (reserve an estimate) or hard (reserve max_tokens; never overshoots)",
    "rpm": "requests per minute",
    "tpm": "tokens per minute (input and output)",
    "concurrency": "requests at once",
    "expires": "lifetime from now, e.g. 90d, 12h",
}


def add_parser(commands: Any, config_help: str) -> None:
    keys = commands.add_parser("keys", help="create and manage gateway keys (kept in the database)")
    verbs = keys.add_subparsers(dest="verb", required=True)
    for verb, text in (
        ("create", "create a key and print it (once)"),
        ("list", "list the keys"),
        ("show", "show one key"),
        ("update", "change a key's settings"),
        ("revoke", "revoke a key (refused by every gateway within a second)"),
        ("rotate", "replace a key's secret; the old one works for --grace"),
    ):
        cmd = verbs.add_parser(verb, help=text)
        cmd.add_argument("--config", help=config_help)
        cmd.add_argument("--json", action="store_true", help="print JSON")
        if verb == "list":
            continue
        cmd.add_argument("name" if verb != "create" else "--name", help="the key's name")
        if verb in ("create", "update"):
            _setting_options(cmd, verb == "update")
        if verb == "rotate":
            cmd.add_argument("--grace", default="1h", help="how long the old key keeps working")


def _setting_options(cmd: argparse.ArgumentParser, unsettable: bool) -> None:
    for name, text in _SETTING_HELP.items():
        kind = int if name in ("rpm", "tpm", "concurrency") else float if name == "budget" else str
        cmd.add_argument(f"--{name}", type=kind, help=text)
    cmd.add_argument(
        "--routing",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a routing default, e.g. eu_native=true (repeatable)",
    )
    if unsettable:
        cmd.add_argument(
            "--unset", action="append", default=[], metavar="SETTING", help="remove a setting"
        )


def active_stored_keys(config: Config) -> int | None:
    """How many unrevoked keys the database `serve` would use holds; None without one."""
    location = serving_database(config)
    if location is None:
        return None
    return asyncio.run(_count_active(location))


async def _count_active(location: str) -> int:
    store = await open_store(location)
    try:
        _, keys = await store.keys()
    finally:
        await store.close()
    return sum(1 for key in keys if key.revoked_at is None)


def run(args: argparse.Namespace, config: Config) -> int:
    try:
        return asyncio.run(_run(args, config))
    except (StoreError, KeyFieldError, ValueError) as exc:
        print(f"messagegate: {exc}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace, config: Config) -> int:
    store = await open_store(managing_database(config))
    admin = KeyAdmin(store, reserved=frozenset(k.name for k in config.keys))
    try:
        secret, result = await _verb(admin, args)
    finally:
        await store.close()
    now = time.time()
    shown: Any = [describe(k, now) for k in result] if isinstance(result, list) else None
    if shown is None:
        shown = describe(result, now) | ({"key": secret} if secret else {})
    if args.json:
        print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
    elif isinstance(shown, list):
        _print_table(shown)
    else:
        _print_key(shown)
    return 0


async def _verb(admin: KeyAdmin, args: argparse.Namespace) -> tuple[str | None, Any]:
    verb = args.verb
    if verb == "list":
        return None, await admin.list()
    if verb == "show":
        return None, await admin.show(args.name)
    if verb == "revoke":
        return None, await admin.revoke(args.name)
    if verb == "rotate":
        return await admin.rotate(args.name, parse_duration(args.grace))
    fields = _fields(args)
    if verb == "create":
        return await admin.create(args.name, fields)
    for name in args.unset:
        fields[name.replace("-", "_")] = None
    return None, await admin.update(args.name, fields)


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for option in _SETTING_HELP:
        value = getattr(args, option.replace("-", "_"))
        if value is not None:
            fields[option.replace("-", "_")] = value
    if "expires" in fields:
        fields["expires"] = time.time() + parse_duration(fields["expires"])
    if args.routing:
        fields["routing"] = dict(_routing_pair(item) for item in args.routing)
    return fields


def _routing_pair(item: str) -> tuple[str, Any]:
    name, sep, value = item.partition("=")
    if not sep:
        raise ValueError(f"--routing expects FIELD=VALUE, got {item!r}")
    try:
        return name.strip(), orjson.loads(value)
    except orjson.JSONDecodeError:
        return name.strip(), value  # a bare word, e.g. preference=speed


def _print_key(shown: dict[str, Any]) -> None:
    secret = shown.pop("key", None)
    if secret is not None:
        print(secret)
        print("store this key now: it is not shown again", file=sys.stderr)
    for name, value in shown.items():
        if value not in (None, [], {}):
            print(f"{name}: {value}", file=sys.stderr if secret is not None else sys.stdout)


def _print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'NAME':<24} {'STATUS':<8} {'PREFIX':<14} SETTINGS")
    for row in rows:
        settings = {
            k: v
            for k, v in row.items()
            if k not in ("name", "status", "prefixes", "created_at", "revoked_at")
        }
        prefix = row["prefixes"][-1] if row["prefixes"] else "-"
        described = " ".join(f"{k}={v}" for k, v in settings.items())
        print(f"{row['name']:<24} {row['status']:<8} {prefix:<14} {described}")
