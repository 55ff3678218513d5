"""PostgreSQL's per-row floor for the events table: ingest and dispatch in plain SQL.

    python -m bench.floor                       # 200,000 rows, 5 rounds (~15-20 min)
    python -m bench.floor --rows 2000 --rounds 1 --ingest-rows 1000 --dispatch-rows 2000

What the app's Python costs is measured by ``python -m bench``; this measures what is left
when there is no Python at all: the same statements sent straight over psycopg, so the
difference between the two is what the app could still win, and the numbers here are what
only a schema change can move.

The database (``BENCH_FLOOR_POSTGRES_URL``, default
``postgres://postgres@127.0.0.1:5432/bench_floor``) is dropped, created and migrated by
Django at the start, so the table measured is always exactly the app's schema of this
checkout. Every round runs every variant once (order rotated each round), each on a freshly
loaded table (TRUNCATE, the variant's schema change, ``--rows`` pending events preloaded,
VACUUM ANALYZE, CHECKPOINT), and times only execute+commit. The table printed gives µs per
row: median and min-max over the rounds.

Ingest (``--ingest-rows`` more rows, in the app's 500-row chunks, one commit per chunk):

- A-a: multi-row ``INSERT … VALUES … ON CONFLICT DO NOTHING RETURNING id`` on the app's
  schema: the textbook form, the baseline the others are read against.
- A-d: COPY of the same rows: the floor, below which no INSERT form can go.
- A-app: the app's real form (``PostgreSQLEventStore.insert``): the whole chunk as one jsonb
  parameter unpacked by ``jsonb_to_recordset``, its records keyed ``c0``, ``c1``, … as the
  app's; how close the app is to A-d. Only the event rows: what the app's statement also
  carries (queue entries, click IDs, counters) is measured by ``python -m bench.ingest_statement``.
- A-c: A-a with the payload column as text instead of jsonb: what parsing and storing the
  payload as jsonb costs.

Dispatch (``--dispatch-rows`` rows, claimed and delivered in the app's 1,000-row claims):

- B-a: the app's claim, then a delivery that links every event to its attempt with a row in
  the M2M table: how deliveries were recorded before ``Event.delivered_by``; B-a minus B-c
  is what those link rows cost.
- B-c: the app's claim and delivery as they are now (issue 21): the claim leases entries of the
  narrow delivery queue (``QueuedEvent``) and reads the payloads by a join, writing nothing in
  the event table; the delivery deletes the entries and writes each event row once
  (``delivered_by_id`` set to the attempt's id, no row per event).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from bench.harness import fresh_postgres_database, machine_info

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_floor"
EV = "capi_destinations_event"
N_DEST = 50
INGEST_CHUNK = 500  # eventstore.CHUNK_SIZE
CLAIM_BATCH = 1000  # the app's default BATCH_SIZE
QUEUE = "capi_destinations_queuedevent"


@dataclass(frozen=True)
class Variant:
    key: str
    what: str
    mode: str  # ingest: upsert, copy, recordset; dispatch: link, delivered_by
    payload_text: bool = False

    @property
    def is_ingest(self) -> bool:
        return self.key.startswith("A-")


VARIANTS = [
    Variant(
        "A-a", "ingest, app schema: INSERT … VALUES … ON CONFLICT DO NOTHING RETURNING", "upsert"
    ),
    Variant("A-d", "ingest, COPY of the same rows (the floor)", "copy"),
    Variant(
        "A-app", "ingest, the app's form: one jsonb parameter + jsonb_to_recordset", "recordset"
    ),
    Variant("A-c", "ingest, A-a with payload text instead of jsonb", "upsert", payload_text=True),
    Variant("B-a", "dispatch, app schema, an M2M link row per delivered event", "link"),
    Variant(
        "B-c",
        "dispatch, the app: claim in the queue table, deliver deletes it and sets delivered_by_id",
        "delivered_by",
    ),
]

# ----------------------------------------------------------------------------- data

UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.3.1 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/123.0.6312.99 Mobile Safari/537.36",
]
EVENTS = ["Purchase", "AddToCart", "ViewContent", "Lead", "InitiateCheckout", "PageView"]
SRC_COLUMNS = (
    "destination_id, event_name, event_id, event_time, action_source, payload, payload_hash,"
    " consent, diagnostics, match_quality"
)


def _h(rng: random.Random) -> str:
    return hashlib.sha256(rng.getrandbits(64).to_bytes(8, "little")).hexdigest()


def make_row(n: int, rng: random.Random, base: datetime, dests: list[int]) -> tuple:
    """One realistic event (payload ~0.9-1.5 kB of JSON), in SRC_COLUMNS order."""
    name = rng.choice(EVENTS)
    event_time = base + timedelta(milliseconds=n)
    eid = str(uuid.UUID(int=rng.getrandbits(128)))
    keys = ["em", "ph", "fn", "ln", "ct", "st", "zp", "country", "external_id"]
    user = {k: _h(rng) for k in rng.sample(keys, rng.randint(6, 9))}
    octets = (rng.randint(1, 223), rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254))
    user["client_ip_address"] = ".".join(map(str, octets))
    user["client_user_agent"] = rng.choice(UAS)
    user["fbp"] = f"fb.1.{1700000000000 + rng.randint(0, 10**10)}.{rng.randint(10**9, 10**10)}"
    if rng.random() < 0.6:
        click = _h(rng)[: rng.randint(20, 60)]
        user["fbc"] = f"fb.1.{1700000000000 + rng.randint(0, 10**10)}.IwAR{click}"
    ids = [f"SKU-{rng.randint(10000, 99999)}" for _ in range(3)]

    def price() -> float:
        return round(rng.uniform(5, 200), 2)

    payload = {
        "event_name": name,
        "event_time": int(event_time.timestamp()),
        "event_id": eid,
        "action_source": "website",
        "event_source_url": f"https://shop{rng.randint(1, 50)}.example.com/products/"
        f"{rng.randint(1, 10**6)}?utm_source=fb&utm_campaign=c{rng.randint(1, 999)}",
        "user_data": user,
        "custom_data": {
            "currency": "EUR",
            "value": round(rng.uniform(5, 500), 2),
            "content_ids": ids,
            "contents": [
                {"id": ids[0], "quantity": rng.randint(1, 3), "item_price": price()},
                {"id": ids[1], "quantity": 1, "item_price": price()},
            ],
        },
    }
    text = json.dumps(payload, separators=(", ", ": "))
    r = rng.random()
    findings = [] if r < 0.6 else [{"code": "missing_fbc", "level": "info", "field": "fbc"}]
    if r > 0.85:
        findings.append({"code": "low_match", "level": "warning", "score": rng.randint(0, 99) / 10})
    consent = {"ad_storage": "granted", "ad_user_data": "granted"} if rng.random() < 0.5 else None
    return (
        rng.choice(dests),
        name,
        eid,
        event_time,
        "website",
        text,
        hashlib.sha256(text.encode()).hexdigest(),
        json.dumps(consent) if consent else None,
        json.dumps(findings),
        round(rng.uniform(3, 9.5), 1),
    )


def event_values(src: tuple, now: datetime) -> dict[str, object]:
    """Every column of a new event, as ingest stores it (the JSON columns as JSON text)."""
    dest, name, eid, event_time, source, payload, payload_hash, consent, diagnostics, mq = src
    return {
        "event_name": name,
        "event_id": eid,
        "event_time": event_time,
        "action_source": source,
        "payload": payload,
        "payload_hash": payload_hash,
        "consent": consent,
        "status": "pending",
        "status_reason": "",
        "attempts": 0,
        "diagnostics": diagnostics,
        "match_quality": mq,
        "delivered_at": None,
        "delivered_by_id": None,
        "created_at": now,
        "updated_at": now,
        "destination_id": dest,
    }


# The same columns for the preload's INSERT … SELECT FROM src: due in the past, oldest first.
DUE = "now() - interval '10 days' + n * interval '1 ms'"
PRELOAD = {
    **{c: c for c in ("event_name", "event_id", "event_time", "action_source", "payload_hash")},
    "payload": "payload::{ptype}",
    "consent": "consent::jsonb",
    "status": "'pending'",
    "status_reason": "''",
    "attempts": "0",
    "diagnostics": "diagnostics::jsonb",
    "match_quality": "match_quality",
    "delivered_at": "NULL",
    "delivered_by_id": "NULL",
    "created_at": DUE,
    "updated_at": DUE,
    "destination_id": "destination_id",
}


# ----------------------------------------------------------------------------- database


def create_database(url: str) -> None:
    """A new database with the app's current schema: Django's migrate, as the benchmarks do."""
    fresh_postgres_database(url, setting="BENCH_FLOOR_POSTGRES_URL")


def event_columns(conn: psycopg.Connection) -> dict[str, str]:
    """The event table's columns but id and the generated ones, in table order, with their
    SQL types.

    The floor fills each column itself (the database computes the generated ones), so a column
    it does not know (or one it fills that the app dropped) stops the run instead of measuring
    a table the app no longer has.
    """
    types = dict(
        conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
            " AND attgenerated = '' AND attname <> 'id' ORDER BY attnum",
            (EV,),
        ).fetchall()
    )
    if set(types) != set(PRELOAD):
        sys.exit(
            f"{EV} changed: columns {sorted(set(types) - set(PRELOAD))} are new and"
            f" {sorted(set(PRELOAD) - set(types))} are gone; teach bench/floor.py to fill them"
        )
    return types


def seed(conn: psycopg.Connection, total: int) -> list[int]:
    """N_DEST destinations and table src of `total` generated events (same seed every run)."""
    (tenant,) = conn.execute(
        "INSERT INTO capi_destinations_tenant (name, slug, created_at, exclude_staff,"
        " excluded_networks, test_flag)"
        " VALUES ('floor', 'floor', now(), false, '', 'test_order') RETURNING id"
    ).fetchone()
    dests = [
        row[0]
        for row in conn.execute(
            "INSERT INTO capi_destinations_destination (code, name, pixel_id, access_token,"
            " token_hint, token_fingerprint, blocked_token_fingerprint, app_secret, enabled,"
            " test_event_code, api_version, default_country,"
            " consent_policy, missing_consent, ingest_key, ingest_secret_hash, allowed_origins,"
            " health, health_reasons, health_notes, health_transient_failures, pixel_name,"
            " pause_reason,"
            " blocked_reason, block_kind, event_filter, event_filter_names, forward_to, created_at,"
            " updated_at, tenant_id)"
            " SELECT gen_random_uuid(), 'floor ' || d, (100000000000000 + d)::text,"
            " '', '', '', '', '',"
            " true, '', '', '', 'send_always', 'granted', 'floor-key-' || d, '', '', 'unknown',"
            " '[]', '[]', 0, '', '', '', '', 'all', '', '[]', now(), now(), %s"
            " FROM generate_series(1, %s) AS d"
            " RETURNING id",
            (tenant, N_DEST),
        ).fetchall()
    ]
    print(f"# generating {total} source rows ...", file=sys.stderr, flush=True)
    conn.execute(
        "CREATE TABLE src (n int PRIMARY KEY, destination_id bigint, event_name text,"
        " event_id text, event_time timestamptz, action_source text, payload text,"
        " payload_hash text, consent text, diagnostics text, match_quality float8)"
    )
    rng = random.Random(20240611)
    base = datetime(2025, 1, 1, tzinfo=UTC)
    with conn.cursor().copy(f"COPY src (n, {SRC_COLUMNS}) FROM STDIN") as copy:
        for n in range(1, total + 1):
            copy.write_row((n, *make_row(n, rng, base, dests)))
    conn.commit()
    return dests


def reset(conn: psycopg.Connection, v: Variant) -> None:
    """Empty tables (new relfilenodes), then bring the event table to the variant's schema."""
    conn.execute(
        "TRUNCATE capi_destinations_deliveryattempt_events, capi_destinations_deliveryattempt,"
        f" {QUEUE}, capi_destinations_event RESTART IDENTITY"
    )
    ptype = "text" if v.payload_text else "jsonb"
    conn.execute(f"ALTER TABLE {EV} ALTER COLUMN payload TYPE {ptype} USING payload::{ptype}")
    conn.commit()


def preload(conn: psycopg.Connection, rows: int, types: dict[str, str], v: Variant) -> None:
    """`rows` pending events (and their queue entries), due in the past, destinations
    interleaved; VACUUM, CHECKPOINT."""
    ptype = "text" if v.payload_text else "jsonb"
    exprs = ", ".join(PRELOAD[c].format(ptype=ptype) for c in types)
    conn.execute(
        f"INSERT INTO {EV} ({', '.join(types)}) SELECT {exprs} FROM src"  # noqa: S608
        " WHERE n <= %s ORDER BY n",
        (rows,),
    )
    conn.execute(
        f"INSERT INTO {QUEUE} (event_id, destination_id, due_at)"  # noqa: S608
        f" SELECT id, destination_id, created_at FROM {EV} ORDER BY id"
    )
    conn.commit()
    conn.autocommit = True
    conn.execute("VACUUM ANALYZE")  # the whole (small) database: events, queue, attempts
    conn.execute("CHECKPOINT")  # so no variant pays the previous one's dirty pages
    conn.autocommit = False


# ----------------------------------------------------------------------------- ingest


def _record_keys(types: dict[str, str]) -> dict[str, str]:
    """Each column's key in a record, as the app's (``c0``, ``c1``, … in table order, which is
    ``eventstore.base.INSERT_FIELDS``' order): the keys are text PostgreSQL parses per row."""
    return {column: f"c{number}" for number, column in enumerate(types)}


def _recordset_param(rows: list[dict[str, object]], types: dict[str, str]) -> str:
    # As eventstore.postgresql._json_record: JSON columns nested, times in ISO, the payload spliced.
    keys = _record_keys(types)
    records = []
    for row in rows:
        record = {}
        for column, value in row.items():
            if column == "payload":
                continue
            if isinstance(value, datetime):
                value = value.isoformat()
            elif types[column] == "jsonb" and value is not None:
                value = json.loads(value)
            record[keys[column]] = value
        text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        records.append(f'{text[:-1]},"{keys["payload"]}":{row["payload"]}}}')
    return f"[{','.join(records)}]"


def run_ingest(
    conn: psycopg.Connection, src: list[tuple], types: dict[str, str], v: Variant
) -> float:
    """Insert the rows in 500-row chunks, one commit per chunk; returns µs per row."""
    types = {**types, "payload": "text" if v.payload_text else "jsonb"}
    columns = ", ".join(types)
    total = 0.0
    cur = conn.cursor()
    for start in range(0, len(src), INGEST_CHUNK):
        now = datetime.now(UTC)
        rows = [event_values(r, now) for r in src[start : start + INGEST_CHUNK]]
        if v.mode == "copy":
            t0 = time.perf_counter()
            with cur.copy(f"COPY {EV} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([row[c] for c in types])
        else:
            if v.mode == "upsert":
                one = "(" + ", ".join(f"%s::{t}" for t in types.values()) + ")"
                sql = (
                    f"INSERT INTO {EV} ({columns}) VALUES {', '.join([one] * len(rows))}"  # noqa: S608
                    " ON CONFLICT (destination_id, event_name, event_id) DO NOTHING RETURNING id"
                )
                params = [row[c] for row in rows for c in types]
            else:  # recordset: PostgreSQLEventStore.insert
                keys = _record_keys(types)
                chunk = ", ".join(f"{keys[c]} {t}" for c, t in types.items())
                sql = (
                    f"INSERT INTO {EV} ({columns}) SELECT {', '.join(keys.values())}"  # noqa: S608
                    f" FROM jsonb_to_recordset(%s::jsonb) AS chunk({chunk})"
                    " ON CONFLICT DO NOTHING RETURNING id, event_name, event_id"
                )
                params = [_recordset_param(rows, types)]
            t0 = time.perf_counter()
            cur.execute(sql, params)
            cur.fetchall()
        conn.commit()
        total += time.perf_counter() - t0
    return total / len(src) * 1e6


# ----------------------------------------------------------------------------- dispatch


def claim_sql() -> str:
    """``PostgreSQLEventStore.claim``: the destination whose oldest due entry is the oldest,
    then its due entries oldest first, both skipping entries other workers hold; the lease
    written in the queue entry's unindexed lease columns only (a HOT update), the payloads read
    by a join."""
    due = "due_at <= %(now)s AND (lease_expires_at IS NULL OR lease_expires_at <= %(now)s)"
    first = (
        f"SELECT destination_id FROM {QUEUE} WHERE destination_id = ANY(%(dests)s) AND {due}"  # noqa: S608
        " ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED"
    )
    return (
        f"WITH due AS (SELECT event_id FROM {QUEUE} WHERE destination_id = ({first})"  # noqa: S608
        f" AND {due} ORDER BY due_at LIMIT %(lim)s FOR UPDATE SKIP LOCKED),"
        f" claimed AS (UPDATE {QUEUE} SET lease_token = %(tok)s, lease_expires_at = %(exp)s"
        " FROM due"
        f" WHERE {QUEUE}.event_id = due.event_id RETURNING {QUEUE}.event_id)"
        " SELECT e.id, e.destination_id, e.event_time, e.attempts, e.payload::text,"
        f" e.action_source FROM claimed JOIN {EV} e ON e.id = claimed.event_id"
    )


# ``_record_delivery``: the entries still held under the lease leave the queue, then their
# events are written once.
LEAVE_SQL = (
    f"DELETE FROM {QUEUE} WHERE event_id = ANY(%(ids)s) AND lease_token = %(tok)s"  # noqa: S608
    " RETURNING event_id"
)


def deliver_sql(v: Variant) -> str:
    """The delivery's UPDATE of the events (``_Dispatcher._record_delivery``)."""
    by = " delivered_by_id = %(attempt)s," if v.mode == "delivered_by" else ""
    return (
        f"UPDATE {EV} SET status = 'delivered', status_reason = '',"  # noqa: S608
        f" delivered_at = %(now)s,{by} attempts = attempts + 1, updated_at = %(now)s"
        " WHERE id = ANY(%(ids)s)"
    )


ATTEMPT_SQL = (
    "INSERT INTO capi_destinations_deliveryattempt (started_at, duration_ms, event_count,"
    " test_event_code, http_status, events_received, fbtrace_id, category, error_type,"
    " error_message, error_user_title, error_user_msg, messages, error_data, canary, outcome,"
    " destination_id)"
    " VALUES (%s, 120, %s, '', 200, %s, 'AbCdEf123', '', '', '', '', '', '[]', NULL, false,"
    " 'delivered', %s)"
    " RETURNING id"
)
LINK_SQL = (
    "INSERT INTO capi_destinations_deliveryattempt_events (deliveryattempt_id, event_id)"
    " SELECT %s, unnest(%s::bigint[])"
)


def run_dispatch(
    conn: psycopg.Connection, n_rows: int, dests: list[int], v: Variant
) -> tuple[float, float, float]:
    """Claim and deliver `n_rows` events; returns µs per row (total, claim, deliver)."""
    cur = conn.cursor()
    claim, deliver = claim_sql(), deliver_sql(v)
    claim_t = deliver_t = 0.0
    done = 0
    while done < n_rows:
        tok = uuid.uuid4()
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        # As _claim_returning: a claim lost in a crash leaves its events pending.
        cur.execute("SET LOCAL synchronous_commit TO OFF")
        lease = {"tok": tok, "exp": now + timedelta(minutes=5), "now": now}
        cur.execute(claim, {**lease, "dests": dests, "lim": CLAIM_BATCH})
        rows = cur.fetchall()
        conn.commit()
        t1 = time.perf_counter()
        if not rows:
            raise RuntimeError(f"nothing left to claim after {done} rows")
        ids = [r[0] for r in rows]
        t2 = time.perf_counter()
        # As _record_delivery: the attempt first, so the events can name it.
        cur.execute(ATTEMPT_SQL, (now, len(ids), len(ids), rows[0][1]))
        (attempt,) = cur.fetchone()
        cur.execute(LEAVE_SQL, {"ids": ids, "tok": tok})
        left = [r[0] for r in cur.fetchall()]
        cur.execute(deliver, {"now": now, "ids": left, "attempt": attempt})
        if cur.rowcount != len(ids):
            raise RuntimeError("the delivery updated fewer rows than were claimed")
        if v.mode == "link":
            cur.execute(LINK_SQL, (attempt, ids))
        conn.commit()
        t3 = time.perf_counter()
        claim_t += t1 - t0
        deliver_t += t3 - t2
        done += len(ids)
    return ((claim_t + deliver_t) / done * 1e6, claim_t / done * 1e6, deliver_t / done * 1e6)


# ----------------------------------------------------------------------------- main


def loadavg() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.floor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=200_000, help="pending rows preloaded per run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ingest-rows", type=int, default=30_000, help="rows ingested per run")
    parser.add_argument(
        "--dispatch-rows", type=int, default=50_000, help="rows claimed+delivered per run"
    )
    parser.add_argument("--only", default="", help="comma-separated variant keys (default: all)")
    args = parser.parse_args()
    if args.dispatch_rows > args.rows:
        parser.error("--dispatch-rows cannot exceed --rows (only preloaded rows are due)")
    only = [key.strip() for key in args.only.split(",") if key.strip()]
    unknown = sorted(set(only) - {v.key for v in VARIANTS})
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(v.key for v in VARIANTS)}")
    args.variants = [v for v in VARIANTS if not only or v.key in only]
    return args


def main() -> None:
    args = _arguments()
    url = os.environ.get("BENCH_FLOOR_POSTGRES_URL", DEFAULT_URL)
    create_database(url)
    conn = psycopg.connect(url)
    types = event_columns(conn)
    version = conn.execute("SHOW server_version").fetchone()[0]
    settings = dict(
        conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('autovacuum',"
            " 'synchronous_commit', 'fsync', 'shared_buffers')"
        ).fetchall()
    )
    dests = seed(conn, args.rows + args.ingest_rows)
    src = conn.execute(
        f"SELECT {SRC_COLUMNS} FROM src WHERE n > %s ORDER BY n",  # noqa: S608
        (args.rows,),
    ).fetchall()
    conn.commit()

    jobs = args.variants
    results: dict[str, list[tuple[float, ...]]] = {v.key: [] for v in jobs}
    loads = [loadavg()]
    started = time.time()
    for rnd in range(args.rounds):
        shift = rnd % len(jobs)
        for v in jobs[shift:] + jobs[:shift]:  # rotated: no variant always runs first or last
            reset(conn, v)
            preload(conn, args.rows, types, v)
            if v.is_ingest:
                us = (run_ingest(conn, src, types, v),)
                detail = ""
            else:
                us = run_dispatch(conn, args.dispatch_rows, dests, v)
                detail = f" (claim {us[1]:.1f}, deliver {us[2]:.1f})"
            results[v.key].append(us)
            print(
                f"# round {rnd + 1} {v.key}: {us[0]:.1f} µs/row{detail} (load {loadavg()})",
                file=sys.stderr,
                flush=True,
            )
        loads.append(loadavg())
    elapsed = time.time() - started
    conn.close()

    def fmt(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"

    machine = machine_info()
    print(
        f"PostgreSQL {version}; autovacuum={settings['autovacuum']}, synchronous_commit="
        f"{settings['synchronous_commit']}, fsync={settings['fsync']}, shared_buffers="
        f"{int(settings['shared_buffers']) * 8 // 1024} MiB; {machine['cores']} CPUs"
        f" ({machine['cpu']}); schema: migrate of {machine['commit']}"
    )
    print(
        f"{args.rows} rows preloaded per run over {N_DEST} destinations (fresh TRUNCATE + load +"
        f" VACUUM ANALYZE + CHECKPOINT before every measured run); ingest = {args.ingest_rows}"
        f" more rows in {INGEST_CHUNK}-row statements, one commit each; dispatch ="
        f" {args.dispatch_rows} rows in claims of up to {CLAIM_BATCH} (one destination each)."
        f" {args.rounds} rounds,"
        f" variants rotated; {elapsed / 60:.1f} min."
    )
    print(f"Load average (1/5/15 min) at start and after each round: {' | '.join(loads)}")
    print()
    print("| variant | what | µs/row median (min–max) | claim µs/row | deliver µs/row |")
    print("|---|---|---|---|---|")
    for v in jobs:
        values = results[v.key]
        cells = [fmt([u[i] for u in values]) for i in range(len(values[0]))]
        cells += [""] * (3 - len(cells))
        print(f"| {v.key} | {v.what} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
