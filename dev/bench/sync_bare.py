"""The reference of the sync bench: the least a Snowflake -> Iterable sync must do, timed in rows/s.

    uv run python -m dev.bench.sync_bare --snowflake-port PORT --iterable-url URL [--batch-size 1000]

One query reads the shipped definition's identity and mapped columns from its source SQL (the same
warehouse the sync reads), and each fetchmany of ``--batch-size`` rows is posted as one
users/bulkUpdate through one httpx client, one request after another: no diff, no state, no limiter,
no retries, no Prefect. ``dev.bench.sync_throughput`` runs it beside the first sync with limits off
(``sync_vs_bare``). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson
import snowflake.connector
import yaml

from dev.bench.common import FAKESNOW_LOGIN, SANDBOX_ITERABLE_KEY, print_json_line
from iterable_recipes.sync.definitions import SYNCS_DIR

SHIPPED = SYNCS_DIR / "gitlab_marketing_contacts.yaml"


def plain(value: Any) -> Any:
    """A warehouse value as JSON wants it (orjson's ``default``): numbers, Iterable's date text."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date):
        return value.strftime("%Y-%m-%d %H:%M:%S +00:00")
    raise TypeError(type(value).__name__)


def query() -> tuple[str, list[str], set[str]]:
    """The SELECT of the identity and mapped columns, the Iterable field names in column order (the
    identity first), and the fields that hold JSON text (VARIANT)."""
    document = yaml.safe_load(SHIPPED.read_text())
    identity = document["identity"]["column"]
    fields = document["fields"]
    columns = [identity, *fields]
    sql = f"SELECT {', '.join(columns)} FROM ({document['source']['sql']}) AS model"
    names = [document["identity"]["kind"], *(spec["field"] for spec in fields.values())]
    variants = {spec["field"] for spec in fields.values() if spec.get("source_type") == "VARIANT"}
    return sql, names, variants


def run(
    snowflake_port: int, iterable_url: str, batch_size: int, database: str, schema: str
) -> dict[str, Any]:
    """Read every row and post it; returns rows, seconds (query to last answer) and rows/s."""
    sql, names, variants = query()
    identity, fields = names[0], names[1:]
    conn = snowflake.connector.connect(
        **FAKESNOW_LOGIN, host="127.0.0.1", port=snowflake_port, protocol="http", database=database,
        schema=schema, session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
        network_timeout=900,
    )  # fmt: skip
    headers = {"Api-Key": SANDBOX_ITERABLE_KEY, "Content-Type": "application/json"}
    sent = requests = accepted = 0
    try:
        with httpx.Client(base_url=iterable_url, headers=headers, timeout=120) as http:
            began = time.perf_counter()
            cpu_began = time.process_time()
            cursor = conn.cursor()
            cursor.execute(sql)
            while rows := cursor.fetchmany(batch_size):
                users = []
                for row in rows:
                    data = {
                        name: json.loads(value) if name in variants and isinstance(value, str) else value
                        for name, value in zip(fields, row[1:], strict=True)
                        if value is not None
                    }
                    users.append({identity: row[0], "dataFields": data})
                body = orjson.dumps({"users": users}, default=plain)
                response = http.post("/api/users/bulkUpdate", content=body)
                response.raise_for_status()
                accepted += int(response.json().get("successCount", 0))
                sent += len(users)
                requests += 1
            seconds = time.perf_counter() - began
            cpu = time.process_time() - cpu_began
    finally:
        conn.close()
    return {
        "bare_rows": sent,
        "bare_requests": requests,
        "bare_accepted": accepted,
        "bare_seconds": round(seconds, 3),
        "bare_rows_per_s": round(sent / seconds, 1) if seconds else 0.0,
        "bare_cpu_us_per_row": round(1e6 * cpu / sent, 1) if sent else None,
    }


def main(argv: list[str] | None = None) -> None:
    """Run once against the given warehouse and stand-in; print the figures as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m dev.bench.sync_bare", description=__doc__)
    parser.add_argument("--snowflake-port", type=int, required=True, help="fakesnow server port")
    parser.add_argument("--iterable-url", required=True, help="the stand-in's base URL")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--database", default="BENCH")
    parser.add_argument("--schema", default="PUBLIC")
    args = parser.parse_args(argv)
    print_json_line(run(args.snowflake_port, args.iterable_url, args.batch_size, args.database, args.schema))


if __name__ == "__main__":
    main()
