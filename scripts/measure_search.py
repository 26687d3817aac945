"""Issue 13's query figures alone, without the rest of `make bench`: search (a common and a
2-character term), the type and status filters and page 4,000 against page 1, at 100,000
plugins on SQLite and on PostgreSQL, through a one-worker `mlx serve`, each beside the plain
LIKE scan of the same table (bench/bench_api.py's own functions: the same requests, checks
and baselines, `Cache-Control: no-cache` so the route and the query are timed, not a kept
answer); and, in process, each query as the first request after a change finds it
(`*_query_first_ms`: the repository call without the memo of counts and first rows).

    .venv/bin/python scripts/measure_search.py [--databases sqlite,postgresql]
        [--keep DIR] [--sqlite FILE] [--postgresql NAME]

Seeds a SQLite file and a fresh PostgreSQL database (bench/_seed.py, dropped at the end)
unless given ones already seeded (--sqlite, --postgresql: migrated in place first); --keep
leaves the SQLite file in DIR. MLX_BENCH_API_REQUESTS sets the requests per figure (50).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import _seed  # noqa: E402
import bench_api as b  # noqa: E402
import httpx  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from mlx_platform.server.auth import create_token  # noqa: E402
from mlx_platform.storage import Database  # noqa: E402


def cold_ms(url: str, params: dict[str, Any], repeats: int = 20) -> float:
    """Median time of the repository's list call finding everything anew (no memo: counts
    counted, deep pages walked, as the first request after a change does), in process."""
    from mlx_platform.storage.listing import PluginFilter, list_plugins

    db = Database(url)
    flt = PluginFilter(
        **{k: v for k, v in params.items() if k in ("type", "status", "category", "search")}
    )
    samples = []
    try:
        for i in range(repeats + 3):
            t0 = time.perf_counter()
            with db.read() as session:
                list_plugins(
                    session,
                    flt,
                    page=int(params.get("page", 1)),
                    limit=int(params.get("limit", b.PAGE)),
                    memo=None,
                )
            if i >= 3:
                samples.append((time.perf_counter() - t0) * 1000)
    finally:
        db.dispose()
    return statistics.median(samples)


def measure(db: str, url: str, tmp: Path) -> list[tuple[str, float, float | None, str]]:
    """(figure, ours, baseline, target) rows for one database."""
    Database(url).migrate()
    secret = secrets.token_urlsafe(48)
    token = create_token(secret, "measure", ["plugins:admin"], 3600)
    inst = b.make_installation(url, tmp / f"home-{db}", secret, Fernet.generate_key().decode())
    svc = inst.start()
    rows: list[tuple[str, float, float | None, str]] = []
    try:
        with httpx.Client(
            base_url=svc.url, headers={"Authorization": f"Bearer {token}"}, timeout=120
        ) as client:
            for stem, make in b.SEARCHES.items():
                params, columns, term = make(_seed)

                def matching(items: list[dict[str, Any]], columns=columns, term=term) -> str | None:
                    wrong = [
                        i["id"]
                        for i in items
                        if not any(term.lower() in str(i[c]).lower() for c in columns)
                    ]
                    return f"{len(wrong)} item(s) without {term!r}" if wrong else None

                ours, total = b.sequential_p50_ms(
                    client, "/v1/plugins", {**params, "limit": b.PAGE}, matching
                )
                like, n = b.like_scan_ms(url, columns, term)
                first = client.get("/v1/plugins", params={**params, "limit": b.PAGE}).json()
                print(
                    f"{db}: {stem} {params}: p50 {ours:.2f} ms, LIKE scan {like:.2f} ms "
                    f"({n} matches; answer {first['pagination']})",
                    file=sys.stderr,
                )
                cold = cold_ms(url, {**params, "limit": b.PAGE})
                rows.append((f"{stem}_p50", ours, like, "<= 5 ms"))
                rows.append((f"{stem}_vs_like", like / ours, None, ">= 10x"))
                rows.append((f"{stem}_query_first_ms", cold, None, "(no target)"))
            limit, deep = b.DEEP
            one, _ = b.sequential_p50_ms(
                client, "/v1/plugins", {"limit": limit, "page": 1}, b.page_check(url, limit, 1)
            )
            far, _ = b.sequential_p50_ms(
                client,
                "/v1/plugins",
                {"limit": limit, "page": deep},
                b.page_check(url, limit, deep),
            )
            rows.append((f"page_{deep}_p50", far, one, "<= 1.5x page 1"))
            rows.append((f"page_{deep}_vs_page_1", far / one, None, "<= 1.5x"))
            for page in (1, deep):
                first = cold_ms(url, {"limit": limit, "page": page})
                rows.append((f"page_{page}_query_first_ms", first, None, "(no target)"))
    finally:
        svc.stop()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--databases", default="sqlite,postgresql")
    ap.add_argument("--keep", type=Path, help="leave the seeded SQLite file in this directory")
    ap.add_argument("--sqlite", type=Path, help="an already seeded SQLite file")
    ap.add_argument("--postgresql", help="an already seeded database on 127.0.0.1:5432")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlx_measure_search_"))
    results: dict[str, list[tuple[str, float, float | None, str]]] = {}
    made_pg: str | None = None
    try:
        for db in [d.strip() for d in args.databases.split(",") if d.strip()]:
            if db == "sqlite":
                path = args.sqlite
                if path is None:
                    where = args.keep or tmp
                    where.mkdir(parents=True, exist_ok=True)
                    path = where / "search_100k.db"
                    print(f"sqlite: seeding {path}", file=sys.stderr)
                    print(f"sqlite: {_seed.seed(f'sqlite:///{path}', b.PLUGINS)}", file=sys.stderr)
                url = f"sqlite:///{path}"
            else:
                import psycopg

                name = args.postgresql
                if name is None:
                    name = made_pg = f"mlx_measure_search_{secrets.token_hex(4)}"
                    with psycopg.connect(b.PG_ADMIN, autocommit=True) as conn:
                        conn.execute(f'CREATE DATABASE "{name}"')
                    url = f"{b.PG_URL}/{name}"
                    print(f"postgresql: seeding {name}", file=sys.stderr)
                    print(f"postgresql: {_seed.seed(url, b.PLUGINS)}", file=sys.stderr)
                url = f"{b.PG_URL}/{name}"
            t0 = time.perf_counter()
            results[db] = measure(db, url, tmp)
            print(f"{db}: measured in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    finally:
        if made_pg is not None:
            import psycopg

            with psycopg.connect(b.PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{made_pg}" WITH (FORCE)')
        shutil.rmtree(tmp, ignore_errors=True)
    for db, rows in results.items():
        print(f"\n{db} ({b.PLUGINS:,} plugins, {b.REQUESTS} requests per figure)")
        for figure, ours, base, target in rows:
            unit = "x" if figure.endswith(("_vs_like", "_vs_page_1")) else "ms"
            target = target if target.startswith("(") else f"target {target}"
            beside = f"  (baseline {base:.2f} ms)" if base is not None else ""
            print(f"  {figure:32s} {ours:8.2f} {unit:2s}  {target}{beside}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
