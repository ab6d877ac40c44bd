"""Pipedrive tokens spent per synced record, next to the minimum the API allows for the same work.

Three phases on both simulators (in-process, SQLite in a temporary directory, the real Redis
db 13 flushed at start; ``--redis-url`` or ``BENCH_REDIS_URL`` picks another, and nothing else
may use it while the benchmark runs):

1. first sync: a backfill of N Zoho customers (one contact person and two invoices each). Half
   of them already exist in Pipedrive by name with one open deal; 30% of the others name a
   standalone Pipedrive deal in their invoices' reference number; the rest have no deal (their
   invoices go to review).
2. no-change re-sync: the same backfill again. Target: no writes at all.
3. 1%-changed re-sync: 1% of the customers renamed in Zoho, 1% of the invoices changed (half
   new amounts on existing invoices, half new invoices), then the backfill again.

The minimum is counted from Pipedrive's v2 token costs (reference pipedrive.md section 1.4):
each write the work needs costs 5 (create or update one record), plus, for a first sync, the
listing a correct sync cannot avoid: it must know which organizations, persons and deals already
exist (to match instead of duplicating, and to find the customer's deals), and the cheapest way
is one full listing of each at 500 per page: max(1, ceil(count / 500)) x 10 per entity. A
re-sync needs no listing of organizations or persons: links and snapshots are stored, Zoho says
what changed (deals: see below).
Target: within 10% of the minimum on the first sync and on the 1%-changed re-sync.

What a re-sync reads: nothing per written record. The engine plans each update on what it last
wrote or read of the record (a snapshot per link, and per deal for the invoice fields and the
currency) instead of reading it first; ``[sync] read_before_write = true`` reads first, which
costs the "read first" figure printed below (informational). The 1%-changed minimum counts, as
the first sync's does, the one listing a correct sync cannot avoid: new invoices without a deal
id go on their customer's organization's deal, and only a deals listing (10 tokens per 500) says
which deals that organization has now. Without it the minimum would be writes only; the result
keeps that ratio as ``ratio_writes_only`` (informational).

Run from the repository root::

    .venv/bin/python bench/tokens.py --contacts 500

Prints a table and writes ``bench/results/tokens.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.stack import print_targets  # noqa: E402
from connector.models import InvoiceLink  # noqa: E402
from connector.sync.engine import BackfillProgress, engine_session  # noqa: E402
from tests.harness import COMPANY, World, contact, invoice, world  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "tokens.json"
# Flushed at start: a database of its own (BENCH_REDIS_URL to move it), not the tests' one.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
WRITE_COST = 5  # v2 POST / PATCH of one organization, person or deal
LIST_COST = 10  # v2 GET list, any page size up to 500
PAGE = 500
TARGET = 1.10


def _listing(count: int) -> int:
    return max(1, math.ceil(count / PAGE)) * LIST_COST


def _calls_by_endpoint(w: World, since: int) -> dict[str, dict[str, int]]:
    """Requests and tokens per ``METHOD /path`` (ids folded) since log index ``since``."""
    calls: Counter[str] = Counter()
    tokens: Counter[str] = Counter()
    for record in w.pipedrive.request_log(COMPANY)[since:]:
        path = re.sub(r"/\d+(?=/|$)", "/{id}", record.path.split("?", 1)[0])
        path = re.sub(r"/[0-9a-f]{40}(?=/|$)", "/{key}", path)
        key = f"{record.method} {path}"
        calls[key] += 1
        tokens[key] += record.cost
    return {
        key: {"calls": calls[key], "tokens": tokens[key]}
        for key in sorted(tokens, key=lambda k: (-tokens[k], k))
    }


class Meter:
    """Pipedrive tokens, writes, requests and Zoho requests between two points."""

    def __init__(self, w: World) -> None:
        self.w = w
        self.tokens = w.pipedrive.tokens_spent(COMPANY)
        self.writes = w.pd_writes()
        self.log = len(w.pipedrive.request_log(COMPANY))
        self.zoho = len(w.zoho.request_log)
        self.started = time.perf_counter()

    def read(self) -> dict[str, Any]:
        """What was spent since this meter started."""
        zoho_log = list(self.w.zoho.request_log)[self.zoho :]
        return {
            "pipedrive_tokens": self.w.pipedrive.tokens_spent(COMPANY) - self.tokens,
            "pipedrive_writes": self.w.pd_writes() - self.writes,
            "pipedrive_requests": len(self.w.pipedrive.request_log(COMPANY)) - self.log,
            "zoho_requests": len(zoho_log),
            "zoho_writes": sum(1 for r in zoho_log if r.method != "GET"),
            "seconds": round(time.perf_counter() - self.started, 2),
            "by_endpoint": _calls_by_endpoint(self.w, self.log),
        }


def _backfill(w: World) -> BackfillProgress:
    with engine_session(w.context, trigger="backfill", indexed=True) as engine:
        return engine.backfill()


def _state(progress: BackfillProgress) -> dict[str, int]:
    return {
        "total": progress.total,
        "applied": progress.applied,
        "unchanged": progress.unchanged,
        "skipped": progress.skipped,
        "review": progress.review,
        "failed": progress.failed,
        "deals_written": progress.deals_written,
    }


def _seed(w: World, n: int) -> dict[str, Any]:
    """Zoho customers and invoices, Pipedrive organizations and deals; returns the plan."""
    org = w.zoho_orgs["us"]
    names = [f"Customer {i:05d} Ltd" for i in range(n)]
    contact_ids = w.zoho.bulk_create(org, "contacts", [contact(name, persons=1) for name in names])
    existing = n // 2
    existing_orgs = w.pipedrive.seed(
        COMPANY, "organizations", [{"name": name} for name in names[:existing]]
    )
    org_deals = w.pipedrive.seed(
        COMPANY,
        "deals",
        [
            {"title": f"Deal {i}", "org_id": o, "status": "open", "currency": "USD"}
            for i, o in enumerate(existing_orgs)
        ],
    )
    standalone_count = (n - existing) * 3 // 10
    standalone = w.pipedrive.seed(
        COMPANY,
        "deals",
        [
            {"title": f"Standalone {i}", "status": "open", "currency": "USD"}
            for i in range(standalone_count)
        ],
    )
    bodies = []
    deal_of_customer: dict[str, str] = {}
    for i, customer in enumerate(contact_ids):
        extra: dict[str, Any] = {}
        if i < existing:
            deal_of_customer[customer] = str(org_deals[i])
        elif i < existing + standalone_count:
            deal = str(standalone[i - existing])
            deal_of_customer[customer] = deal
            extra["reference_number"] = f"Deal #{deal}"
        for j in range(2):
            bodies.append(invoice(customer, 100 + i + j * 1000, **extra))
    invoice_ids = w.zoho.bulk_create(org, "invoices", bodies)
    return {
        "names": names,
        "contact_ids": contact_ids,
        "invoice_ids": invoice_ids,
        "existing": existing,
        "standalone": standalone_count,
        "deal_of_customer": deal_of_customer,
        "pipedrive_counts": {
            "organizations": existing,
            "persons": 0,
            "deals": existing + standalone_count,
        },
    }


def _first_sync_minimum(plan: dict[str, Any], n: int) -> dict[str, int]:
    existing = plan["existing"]
    deals = len(set(plan["deal_of_customer"].values()))
    writes = {
        "organizations created": (n - existing) * WRITE_COST,
        "organizations matched and updated": existing * WRITE_COST,
        "persons created": n * WRITE_COST,
        "deals given invoice fields": deals * WRITE_COST,
    }
    listing = {
        f"list {entity} ({count} existing)": _listing(count)
        for entity, count in plan["pipedrive_counts"].items()
    }
    return {**writes, **listing}


def _change_one_percent(w: World, plan: dict[str, Any], n: int) -> dict[str, Any]:
    """Rename 1% of customers, change or add 1% of invoices (on customers with a deal)."""
    org = w.zoho_orgs["us"]
    w.clock.advance(3600)
    count = max(1, n // 100)
    renamed = plan["contact_ids"][:count]
    for cid in renamed:
        w.zoho.update_record(org, "contacts", cid, {"contact_name": f"Renamed {cid}"})
    # Invoices of customers with a deal, spread over distinct deals (one each).
    with_deal = [c for c in plan["contact_ids"] if c in plan["deal_of_customer"]]
    invoice_changes = max(1, (2 * n) // 100)
    changed_customers = with_deal[count : count + invoice_changes]
    index = {cid: i for i, cid in enumerate(plan["contact_ids"])}
    updated = changed_customers[: invoice_changes // 2]
    added = changed_customers[invoice_changes // 2 :]
    for cid in updated:
        first_invoice = plan["invoice_ids"][2 * index[cid]]
        w.zoho.update_record(
            org,
            "invoices",
            first_invoice,
            {"line_items": [{"name": "Changed", "rate": 777, "quantity": 1}]},
        )
    new_bodies = []
    for cid in added:
        extra: dict[str, Any] = {}
        if index[cid] >= plan["existing"]:
            extra["reference_number"] = f"Deal #{plan['deal_of_customer'][cid]}"
        new_bodies.append(invoice(cid, 55, **extra))
    w.zoho.bulk_create(org, "invoices", new_bodies)
    deals = {plan["deal_of_customer"][cid] for cid in changed_customers}
    counts = plan["pipedrive_counts"]
    return {
        "contacts_renamed": len(renamed),
        "invoices_updated": len(updated),
        "invoices_added": len(added),
        "records_changed": len(renamed) + len(updated) + len(added),
        "minimum": {
            "organizations renamed": len(renamed) * WRITE_COST,
            "deals whose invoice sums changed": len(deals) * WRITE_COST,
            # The same rule as the first sync's listings: a new invoice without a deal id belongs
            # on its customer's organization's deal, which only a deals listing can tell (the
            # filtered listing by organization costs the same 10 tokens, per organization).
            "deals listing to match new invoices by organization": (
                _listing(counts["deals"])
                if any(index[cid] < plan["existing"] for cid in added)
                else 0
            ),
        },
        # Informational: the same writes when each written record is read first
        # (read_before_write = true), by the cheaper of one GET per record or a full listing.
        "reads_before_write": {
            "organizations": min(len(renamed), _listing(n)),
            "deals": min(len(deals), _listing(counts["deals"])),
        },
    }


def _row(label: str, records: int, spent: dict[str, Any], minimum: int | None) -> dict[str, Any]:
    tokens = spent["pipedrive_tokens"]
    return {
        "phase": label,
        "records": records,
        "tokens": tokens,
        "tokens_per_record": round(tokens / records, 3) if records else None,
        "minimum": minimum,
        "minimum_per_record": round(minimum / records, 3) if records and minimum else 0,
        "ratio": round(tokens / minimum, 3) if minimum else None,
        "pipedrive_writes": spent["pipedrive_writes"],
        "zoho_requests": spent["zoho_requests"],
        "zoho_writes": spent["zoho_writes"],
        "seconds": spent["seconds"],
    }


def run(n: int, redis_url: str = REDIS_URL) -> dict[str, Any]:
    """Run the three phases on ``n`` customers and return the figures."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    with tempfile.TemporaryDirectory() as tmp, world(f"sqlite:///{tmp}/bench.db", redis_url) as w:
        plan = _seed(w, n)
        invoices = len(plan["invoice_ids"])

        meter = Meter(w)
        first = _backfill(w)
        first_spent = meter.read()
        first_minimum = _first_sync_minimum(plan, n)
        with w.context.session() as session:
            linked_invoices = session.scalar(
                sa.select(sa.func.count())
                .select_from(InvoiceLink)
                .where(InvoiceLink.deal_id.is_not(None))
            )

        w.clock.advance(600)
        meter = Meter(w)
        again = _backfill(w)
        again_spent = meter.read()

        change = _change_one_percent(w, plan, n)
        meter = Meter(w)
        changed = _backfill(w)
        changed_spent = meter.read()

    rows = [
        _row("first sync", n + invoices, first_spent, sum(first_minimum.values())),
        _row("no-change re-sync", n + invoices, again_spent, 0),
        _row(
            "1%-changed re-sync",
            change["records_changed"],
            changed_spent,
            sum(change["minimum"].values()),
        ),
    ]
    with_reads = sum(change["minimum"].values()) + sum(change["reads_before_write"].values())
    rows[2]["minimum_with_reads"] = with_reads
    rows[2]["ratio_with_reads"] = round(rows[2]["tokens"] / with_reads, 3)
    writes_only = sum(
        tokens for item, tokens in change["minimum"].items() if not item.startswith("deals listing")
    )
    rows[2]["minimum_writes_only"] = writes_only
    rows[2]["ratio_writes_only"] = round(rows[2]["tokens"] / writes_only, 3)
    first_ratio = rows[0]["ratio"]
    changed_ratio = rows[2]["ratio"]
    return {
        "contacts": n,
        "invoices": invoices,
        "scenario": {
            "pipedrive_organizations_before": plan["existing"],
            "pipedrive_deals_before": plan["existing"] + plan["standalone"],
            "invoices_linked_to_deals": linked_invoices,
        },
        "minimum_definition": (
            "v2 costs: 5 tokens per record write the work needs (org create, matched org "
            "update, person create, deal field update), plus for a first sync one full listing "
            "of organizations, persons and deals at 500 per page (max(1, ceil(count/500)) x 10 "
            "each) to match existing records; a re-sync lists only the deals, once, when new "
            "invoices must be matched to their organization's deal (links and snapshots are "
            "stored), and a no-change re-sync needs no Pipedrive call at all"
        ),
        "rows": rows,
        "first_sync_minimum": first_minimum,
        "changed_sync": change,
        "backfill_states": {
            "first sync": _state(first),
            "no-change re-sync": _state(again),
            "1%-changed re-sync": _state(changed),
        },
        "by_endpoint": {
            "first sync": first_spent["by_endpoint"],
            "no-change re-sync": again_spent["by_endpoint"],
            "1%-changed re-sync": changed_spent["by_endpoint"],
        },
        "targets": {
            "first_sync_within_10pct": first_ratio is not None and first_ratio <= TARGET,
            "no_change_resync_no_writes": rows[1]["pipedrive_writes"] == 0
            and rows[1]["zoho_writes"] == 0,
            "changed_resync_within_10pct": changed_ratio is not None and changed_ratio <= TARGET,
        },
    }


def _print(result: dict[str, Any]) -> None:
    print(
        f"Pipedrive tokens per synced record: {result['contacts']} contacts, "
        f"{result['invoices']} invoices"
    )
    print(f"minimum: {result['minimum_definition']}\n")
    header = (
        f"{'phase':<20} {'records':>7} {'tokens':>7} {'per rec':>8} {'minimum':>8} "
        f"{'min/rec':>8} {'ratio':>6} {'PD writes':>9} {'Zoho req':>8} {'Zoho wr':>7} {'s':>6}"
    )
    print(header)
    print("-" * len(header))
    for row in result["rows"]:
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "-"
        per = f"{row['tokens_per_record']:.2f}" if row["tokens_per_record"] is not None else "-"
        print(
            f"{row['phase']:<20} {row['records']:>7} {row['tokens']:>7} {per:>8} "
            f"{row['minimum']:>8} {row['minimum_per_record']:>8.2f} {ratio:>6} "
            f"{row['pipedrive_writes']:>9} {row['zoho_requests']:>8} {row['zoho_writes']:>7} "
            f"{row['seconds']:>6.1f}"
        )
    changed = result["rows"][2]
    print(
        f"\n1%-changed re-sync if every written record is read first (read_before_write = true; "
        f"1 token per GET, or a listing if cheaper): minimum {changed['minimum_with_reads']}, "
        f"ratio {changed['ratio_with_reads']:.2f} (informational)"
    )
    print(
        f"1%-changed re-sync against its writes alone (without the deals listing): minimum "
        f"{changed['minimum_writes_only']}, ratio {changed['ratio_writes_only']:.2f} "
        f"(informational)"
    )
    print("\nfirst sync minimum:")
    for item, tokens in result["first_sync_minimum"].items():
        print(f"  {item:<45} {tokens:>7}")
    for phase, endpoints in result["by_endpoint"].items():
        print(f"\nPipedrive calls, {phase}:")
        for endpoint, spent in endpoints.items():
            print(f"  {endpoint:<45} {spent['calls']:>6} calls {spent['tokens']:>7} tokens")
    print()
    print_targets(result["targets"])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--contacts", type=int, default=500, help="Zoho customers (default 500)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument(
        "--redis-url", default=REDIS_URL, help="a Redis database to flush and use (default db 13)"
    )
    args = parser.parse_args(argv)
    if args.contacts < 2:
        parser.error("--contacts must be at least 2")
    result = run(args.contacts, args.redis_url)
    _print(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
