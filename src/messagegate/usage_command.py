"""``messagegate usage --by key|model|provider|day --since 7d [--json]``: totals from the ledger's
daily rollups (UTC days)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson

from messagegate.config import Config
from messagegate.ledger.report import since_day, with_usd
from messagegate.store.base import USAGE_GROUPS, StoreError
from messagegate.store.location import managing_database, open_store


def add_parser(commands: Any, config_help: str) -> None:
    cmd = commands.add_parser("usage", help="usage and cost from the ledger")
    cmd.add_argument("--config", help=config_help)
    cmd.add_argument("--by", choices=USAGE_GROUPS, default="key")
    cmd.add_argument("--since", default="7d", help="how far back, e.g. 7d, 24h (whole UTC days)")
    cmd.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, config: Config) -> int:
    try:
        rows = asyncio.run(_usage(config, args.by, since_day(args.since, time.time())))
    except (StoreError, ValueError) as exc:
        print(f"messagegate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(orjson.dumps([with_usd(r) for r in rows], option=orjson.OPT_INDENT_2).decode())
        return 0
    print(
        f"{args.by.upper():<32} {'REQUESTS':>9} {'INPUT':>12} {'OUTPUT':>12} {'CACHE READ':>12} "
        f"{'CACHE WRITE':>12} {'COST USD':>12}"
    )
    for row in rows:
        writes = row["cache_write_5m_tokens"] + row["cache_write_1h_tokens"]
        print(
            f"{row[args.by]:<32} {row['requests']:>9} {row['input_tokens']:>12} "
            f"{row['output_tokens']:>12} {row['cache_read_tokens']:>12} {writes:>12} "
            f"{row['cost_micro_usd'] / 1_000_000:>12.6f}"
        )
    return 0


async def _usage(config: Config, by: str, since: str) -> list[dict[str, Any]]:
    store = await open_store(managing_database(config))
    try:
        return await store.usage(by, since)
    finally:
        await store.close()
