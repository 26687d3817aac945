"""Queries over the tables. With listing.py (the plugin list), the only module that knows SQL
dialect differences."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mlx_platform.storage.listing import Listed, list_plugins
from mlx_platform.storage.listing import PluginFilter as PluginFilter  # where callers import it
from mlx_platform.storage.tables import (
    MetricBucketRow,
    NodeRow,
    PluginIdSequence,
    PluginInstanceRow,
    PluginRow,
    ServiceMeta,
    utcnow,
)

# The advisory lock key of clearing dead replicas' records (PostgreSQL; any constant: "mlxr").
_REAPER_LOCK_KEY = 0x6D6C7872


class PluginRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # ------------------------------------------------------------------ reads

    def get(self, plugin_id: str, *, for_update: bool = False) -> PluginRow | None:
        stmt = select(PluginRow).where(PluginRow.id == plugin_id)
        if for_update:
            stmt = stmt.with_for_update()
        return self.session.scalars(stmt).first()

    def get_by_name_version(self, name: str, version: str) -> PluginRow | None:
        stmt = select(PluginRow).where(PluginRow.name == name, PluginRow.version == version)
        return self.session.scalars(stmt).first()

    def active(self) -> list[PluginRow]:
        stmt = select(PluginRow).where(PluginRow.status == "active").order_by(PluginRow.id)
        return list(self.session.scalars(stmt))

    def all(self) -> list[PluginRow]:
        return list(self.session.scalars(select(PluginRow).order_by(PluginRow.created_at)))

    def active_or_named(self, keys: set[str]) -> list[PluginRow]:
        """The active plugins, and every version of the plugins whose canonical name (PEP 503:
        lower case, runs of - _ . as one -) is one of `keys`: what the rules of one
        registration or activation read, instead of the whole catalogue.

        The names are narrowed in SQL by their letters and digits alone (lower case, without
        - _ .), a superset of the canonical matches that the caller's rules then match
        exactly by key."""
        stmt = select(PluginRow).where(PluginRow.status == "active")
        if keys:
            stripped = func.lower(PluginRow.name)
            for sep in ("-", "_", "."):
                stripped = func.replace(stripped, sep, "")
            wanted = {k.replace("-", "").replace("_", "").replace(".", "") for k in keys}
            stmt = select(PluginRow).where(
                or_(PluginRow.status == "active", stripped.in_(sorted(wanted)))
            )
        return list(self.session.scalars(stmt.order_by(PluginRow.created_at)))

    def states(self, statuses: tuple[str, ...]) -> list[tuple[str, str, str]]:
        """(id, status, health status) of the plugins in `statuses`, by id: three columns,
        not whole rows."""
        stmt = (
            select(PluginRow.id, PluginRow.status, PluginRow.health_status)
            .where(PluginRow.status.in_(statuses))
            .order_by(PluginRow.id)
        )
        return [(str(i), str(st), str(h)) for i, st, h in self.session.execute(stmt)]

    def count_by_status(self) -> dict[str, int]:
        stmt = select(PluginRow.status, func.count()).group_by(PluginRow.status)
        return {str(status): int(n) for status, n in self.session.execute(stmt)}

    def active_singleton(self, plugin_type: str) -> PluginRow | None:
        stmt = select(PluginRow).where(PluginRow.singleton_slot == plugin_type)
        return self.session.scalars(stmt).first()

    def list(
        self,
        flt: PluginFilter,
        *,
        page: int,
        limit: int,
        sort: str | None = None,
        live_since: datetime | None = None,
        bound: int | None = None,
    ) -> Listed:
        """One page of plugins (storage/listing.py: the orders `sort` names, search, deep
        pages, totals exact up to `bound`, default TOTAL_BOUND).

        The status filter matches the status the API shows: with `live_since`, an `active`
        plugin that no replica alive since then runs counts as `error`."""
        return list_plugins(
            self.session,
            flt,
            page=page,
            limit=limit,
            sort=sort,
            live_since=live_since,
            bound=bound,
        )

    # ------------------------------------------------------------------ writes

    def next_id(self, name: str) -> str:
        """`plugin_<name>_<NNN>`: NNN counts the registrations of names with that id form
        (`Dotted.name` and `dotted_name` share one), never reused after a delete."""
        slug = id_slug(name)
        # One atomic statement, not read-then-write: on PostgreSQL (READ COMMITTED) two
        # registrations of one name at once would both read the same number (or both insert
        # the first row) and one fail with a duplicate key; the upsert makes the second wait
        # for the first's row lock and count on from its number. (On SQLite, BEGIN IMMEDIATE
        # serializes writers anyway.)
        insert = _insert(self.session)
        if insert is None:  # another database: read, count on, write
            row = self.session.get(PluginIdSequence, slug, with_for_update=True)
            if row is None:
                row = PluginIdSequence(name=slug, last_seq=0)
                self.session.add(row)
            row.last_seq += 1
            self.session.flush()
            return f"plugin_{slug}_{row.last_seq:03d}"
        table = PluginIdSequence.__table__
        stmt = insert(table).values(name=slug, last_seq=1)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.name], set_={"last_seq": table.c.last_seq + 1}
        ).returning(table.c.last_seq)
        seq = self.session.execute(stmt).scalar_one()
        cached = self.session.identity_map.get(self.session.identity_key(PluginIdSequence, slug))
        if cached is not None:
            self.session.expire(cached)
        return f"plugin_{slug}_{seq:03d}"

    def peek_id(self, name: str) -> str:
        """The id the next registration of `name` would get (for dry runs)."""
        slug = id_slug(name)
        seq = self.session.get(PluginIdSequence, slug)
        return f"plugin_{slug}_{(seq.last_seq if seq else 0) + 1:03d}"

    def delete(self, row: PluginRow) -> None:
        self.session.execute(delete(MetricBucketRow).where(MetricBucketRow.plugin_id == row.id))
        self.session.delete(row)
        self.session.flush()

    def set_health(
        self,
        plugin_id: str,
        *,
        status: str,
        last_check: datetime,
        response_time_ms: float | None,
        message: str | None,
    ) -> None:
        self.session.execute(
            update(PluginRow)
            .where(PluginRow.id == plugin_id)
            .values(
                health_status=status,
                health_last_check=last_check,
                health_response_time_ms=response_time_ms,
                health_message=message,
                # a health result is not a change of the plugin: keep updated_at (the
                # composition index and clients watch it for changes)
                updated_at=PluginRow.updated_at,
            )
            .execution_options(synchronize_session=False)
        )


class MetaRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, key: str) -> str | None:
        row = self.session.get(ServiceMeta, key)
        return row.value if row else None

    def set(self, key: str, value: str) -> None:
        """Insert or replace, atomically: two servers starting together on one fresh
        PostgreSQL database both set the same fact, and neither may fail on the key."""
        insert = _insert(self.session)
        if insert is None:  # another database: read, then insert or update
            row = self.session.get(ServiceMeta, key, with_for_update=True)
            if row is None:
                self.session.add(ServiceMeta(key=key, value=value))
            else:
                row.value = value
            return
        table = ServiceMeta.__table__
        stmt = insert(table).values(key=key, value=value)
        self.session.execute(
            stmt.on_conflict_do_update(index_elements=[table.c.key], set_={"value": value})
        )
        cached = self.session.identity_map.get(self.session.identity_key(ServiceMeta, key))
        if cached is not None:
            self.session.expire(cached)


class MetricRepository:
    SCALARS = (
        MetricBucketRow.bucket_start,
        MetricBucketRow.count,
        MetricBucketRow.errors,
        MetricBucketRow.sum_ms,
        MetricBucketRow.mem_samples,
        MetricBucketRow.mem_sum_mb,
        MetricBucketRow.mem_peak_mb,
        MetricBucketRow.cpu_samples,
        MetricBucketRow.cpu_sum_percent,
    )

    def __init__(self, session: Session) -> None:
        self.session = session

    def rows(
        self, plugin_id: str, resolution: int, start: datetime, end: datetime, *, sketch: bool
    ) -> list[Any]:
        """Bucket rows as tuples (SCALARS, then the sketch when asked): no ORM objects, and
        no JSON decoding of sketches that the caller does not need."""
        if start >= end:
            return []
        cols = (*self.SCALARS, MetricBucketRow.sketch) if sketch else self.SCALARS
        stmt = (
            select(*cols)
            .where(
                MetricBucketRow.plugin_id == plugin_id,
                MetricBucketRow.resolution == resolution,
                MetricBucketRow.bucket_start >= start,
                MetricBucketRow.bucket_start < end,
            )
            .order_by(MetricBucketRow.bucket_start)
        )
        return list(self.session.execute(stmt))

    def get(
        self,
        plugin_id: str,
        resolution: int,
        bucket_start: datetime,
        node_id: str,
        *,
        for_update: bool = False,
    ) -> MetricBucketRow | None:
        """One replica's row of a bucket (locked until the transaction ends when asked; on
        SQLite the write transaction already holds the file's write lock)."""
        return self.session.get(
            MetricBucketRow,
            (plugin_id, resolution, bucket_start, node_id),
            with_for_update=for_update,
        )

    def add(self, row: MetricBucketRow) -> None:
        self.session.add(row)


class NodeRepository:
    """The replicas (`nodes`) and what each runs (`plugin_instances`)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def upsert(self, node: NodeRow) -> None:
        self.session.merge(node)

    def heartbeat(self, node_id: str, when: datetime) -> bool:
        """Move the node's heartbeat; False when its row is gone (it was declared dead)."""
        done = self.session.execute(
            update(NodeRow)
            .where(NodeRow.id == node_id)
            .values(heartbeat_at=when)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(done, "rowcount", 0))

    def all(self) -> list[NodeRow]:
        return list(self.session.scalars(select(NodeRow).order_by(NodeRow.started_at)))

    def remove(self, node_ids: Sequence[str]) -> None:
        """Forget nodes and everything they reported (a dead replica, or one shutting down)."""
        if not node_ids:
            return
        ids = list(node_ids)
        self.session.execute(delete(PluginInstanceRow).where(PluginInstanceRow.node_id.in_(ids)))
        self.session.execute(delete(NodeRow).where(NodeRow.id.in_(ids)))

    def dead(self, older_than: datetime) -> list[str]:
        stmt = select(NodeRow.id).where(NodeRow.heartbeat_at < older_than).order_by(NodeRow.id)
        return list(self.session.scalars(stmt))

    def remove_dead(self, older_than: datetime, *, keep: str) -> list[str]:
        """Forget the nodes whose heartbeat is older than `older_than` (but `keep`), and
        return their ids. One replica at a time does it: on PostgreSQL the others skip (a
        transaction-level advisory lock they do not wait for), so that replicas clearing the
        same dead node at once never deadlock on its rows."""
        if self.session.get_bind().dialect.name == "postgresql":
            got = self.session.scalar(text(f"SELECT pg_try_advisory_xact_lock({_REAPER_LOCK_KEY})"))
            if not got:
                return []
        dead = [n for n in self.dead(older_than) if n != keep]
        self.remove(dead)
        return dead

    # ------------------------------------------------------------------ observed state

    def put_instance(self, plugin_id: str, node_id: str, values: dict[str, Any]) -> None:
        """Insert or update this node's observed state of one plugin, in one statement (two
        threads of one replica may report the same plugin at once)."""
        values = {**values, "updated_at": utcnow()}
        insert = _insert(self.session)
        if insert is None:  # another database: read, then insert or update
            row = self.session.get(PluginInstanceRow, (plugin_id, node_id), with_for_update=True)
            if row is None:
                row = PluginInstanceRow(plugin_id=plugin_id, node_id=node_id)
                self.session.add(row)
            for key, value in values.items():
                setattr(row, key, value)
            return
        table = PluginInstanceRow.__table__
        stmt = insert(table).values(plugin_id=plugin_id, node_id=node_id, **values)
        self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[table.c.plugin_id, table.c.node_id], set_=values
            )
        )

    def set_instance_health(self, node_id: str, results: dict[str, dict[str, Any]]) -> None:
        """Health results of one node's instances, in plugin id order (a fixed lock order)."""
        for plugin_id in sorted(results):
            r = results[plugin_id]
            self.session.execute(
                update(PluginInstanceRow)
                .where(
                    PluginInstanceRow.plugin_id == plugin_id,
                    PluginInstanceRow.node_id == node_id,
                )
                .values(
                    health_status=r["status"],
                    health_message=r["message"],
                    health_last_check=r["last_check"],
                    health_response_time_ms=r["response_time_ms"],
                )
                .execution_options(synchronize_session=False)
            )

    def drop_instance(self, plugin_id: str, node_id: str) -> None:
        self.session.execute(
            delete(PluginInstanceRow).where(
                PluginInstanceRow.plugin_id == plugin_id, PluginInstanceRow.node_id == node_id
            )
        )

    def instances(
        self, plugin_ids: Sequence[str] | None = None, *, live_since: datetime | None = None
    ) -> list[PluginInstanceRow]:
        """Observed rows (of the given plugins), of nodes whose heartbeat is at or after
        `live_since` when given, in plugin then node order."""
        stmt = select(PluginInstanceRow).order_by(
            PluginInstanceRow.plugin_id, PluginInstanceRow.node_id
        )
        if plugin_ids is not None:
            if not plugin_ids:
                return []
            stmt = stmt.where(PluginInstanceRow.plugin_id.in_(list(plugin_ids)))
        if live_since is not None:
            live = select(NodeRow.id).where(NodeRow.heartbeat_at >= live_since)
            stmt = stmt.where(PluginInstanceRow.node_id.in_(live))
        return list(self.session.scalars(stmt))


def _insert(session: Session) -> Any:
    """The dialect's INSERT construct with ON CONFLICT (PostgreSQL and SQLite), else None."""
    return {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(
        session.get_bind().dialect.name
    )


def id_slug(name: str) -> str:
    """The name as it stands in a plugin id: lower case, anything else than a letter or a
    digit as `_`."""
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower())
