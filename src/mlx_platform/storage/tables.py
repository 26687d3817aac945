"""Table definitions. The migrations under `migrations/versions` create exactly these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime}


class PluginRow(Base):
    __tablename__ = "plugins"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_plugins_name_version"),
        # the list's orders, and each filter's rows in each order (a page, or the walk to
        # a deep page's first row, reads one index, backwards for a descending order):
        # creation time (migration 0004), name and type (0005; (type, name, id) is both
        # the type order and the type filter's name order); the search index is
        # dialect-specific and made by migration 0004 (storage/listing.py reads it)
        Index("ix_plugins_order", "created_at", "id"),
        Index("ix_plugins_status_order", "status", "created_at", "id"),
        Index("ix_plugins_type_order", "type", "created_at", "id"),
        Index("ix_plugins_category_order", "category", "created_at", "id"),
        Index("ix_plugins_name_order", "name", "id"),
        Index("ix_plugins_type_name_order", "type", "name", "id"),
        Index("ix_plugins_status_name_order", "status", "name", "id"),
        Index("ix_plugins_category_name_order", "category", "name", "id"),
        Index("ix_plugins_status_type_order", "status", "type", "name", "id"),
        Index("ix_plugins_category_type_order", "category", "type", "name", "id"),
    )

    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str | None] = mapped_column(String(100), nullable=True)
    class_path: Mapped[str] = mapped_column(String(400))
    isolation: Mapped[str] = mapped_column(String(16), default="process")
    status: Mapped[str] = mapped_column(String(16), default="registered")
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    loadable: Mapped[bool] = mapped_column(Boolean, default=False)
    class_info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    configuration_schema: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    plugin_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    # Secret fields are stored encrypted: {"field": {"$encrypted": "<fernet token>"}}.
    configuration: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Desired state (DESIGN.md): `status` says whether every replica should run the plugin;
    # `running_configuration` is the configuration they run (sealed like `configuration`; it
    # differs from it only while a change of a `hot_reload: false` field waits for a restart);
    # `config_version` counts changes of it (replicas apply those through configure());
    # `generation` counts the changes after which every replica starts a fresh instance
    # (activation, an operator's retry, a restart asked for by a configuration change).
    running_configuration: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    config_version: Mapped[int] = mapped_column(Integer, default=0)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    # activated with auto_start false: replicas load and configure it, the first call starts it
    auto_start: Mapped[bool] = mapped_column(Boolean, default=True)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What the plugin's code was when it was registered: {"files": {path: sha256}, "root": ...}
    # (activation refuses code that changed since, until the plugin is registered again)
    code_digest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    documentation_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    repository_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # The plugin's type while it is active and that type is a singleton, else NULL. A unique
    # index on it makes "one active plugin per singleton type" hold across replicas.
    singleton_slot: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    health_status: Mapped[str] = mapped_column(String(16), default="unknown")
    health_last_check: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    health_response_time_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    health_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @property
    def requirements(self) -> dict[str, Any]:
        return requirements_of(self.plugin_metadata)


def requirements_of(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """What a plugin needs of a replica, from its metadata (ResourceRequirements' fields)."""
    meta = metadata or {}
    return {
        "min_memory_mb": int(meta.get("min_memory_mb") or 0),
        "min_cpu_cores": float(meta.get("min_cpu_cores") or 0),
        "gpu_required": bool(meta.get("gpu_required") or False),
    }


class PluginIdSequence(Base):
    """The last number handed out per plugin name, so ids are never reused after a delete."""

    __tablename__ = "plugin_id_sequences"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)


class MetricBucketRow(Base):
    """One plugin's invocations through one replica in one minute (resolution 60) or one hour
    (3600, the roll-up of its minutes): counts, sums and a mergeable latency sketch. Each
    replica writes only its own rows (`node_id`), so replicas never contend for a row; reads
    merge the rows of every replica."""

    __tablename__ = "metric_buckets"

    plugin_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    resolution: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    node_id: Mapped[str] = mapped_column(String(80), primary_key=True, default="")
    count: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    sum_ms: Mapped[float] = mapped_column(Float, default=0.0)
    sketch: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    mem_samples: Mapped[int] = mapped_column(Integer, default=0)
    mem_sum_mb: Mapped[float] = mapped_column(Float, default=0.0)
    mem_peak_mb: Mapped[float] = mapped_column(Float, default=0.0)
    cpu_samples: Mapped[int] = mapped_column(Integer, default=0)
    cpu_sum_percent: Mapped[float] = mapped_column(Float, default=0.0)


class ServiceMeta(Base):
    """Key/value facts about this installation (for example: example plugins seeded)."""

    __tablename__ = "service_meta"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")


class NodeRow(Base):
    """One running replica of the service: who it is, what it can give plugins, and when it
    last said it was alive. A replica whose heartbeat is older than `node_dead_after` is dead:
    the others delete its row and its observed state."""

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    address: Mapped[str | None] = mapped_column(String(255), nullable=True)
    version: Mapped[str] = mapped_column(String(64), default="")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    capacity: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class PluginInstanceRow(Base):
    """Observed state: what one replica runs of one plugin (beside the desired state in
    `plugins`). Written by that replica only."""

    __tablename__ = "plugin_instances"
    __table_args__ = (Index("ix_plugin_instances_node", "node_id"),)

    plugin_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    # starting | running | not_started (auto_start false) | restarting | error | stopping
    state: Mapped[str] = mapped_column(String(16))
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    config_version: Mapped[int] = mapped_column(Integer, default=0)
    health_status: Mapped[str] = mapped_column(String(16), default="unknown")
    health_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    health_last_check: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    health_response_time_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class AuditEventRow(Base):
    """One state change: who asked for what, when, through which request, and how it ended.
    Never a secret (configuration values are not recorded, only the names of fields)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at", "id"),
        Index("ix_audit_events_plugin", "plugin_id", "at"),
        Index("ix_audit_events_actor", "actor", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(255))
    # register, activate, deactivate, configure, delete, auto_register
    action: Mapped[str] = mapped_column(String(64))
    plugin_id: Mapped[str | None] = mapped_column(String(160), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))  # success | failure
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    node_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
