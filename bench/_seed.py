"""A catalogue of 100,000 plugins for the API benchmarks (bench_api.py), stored the way
registration stores them (core/registry.py `_store`), inserted in bulk (SQLAlchemy Core
executemany) into a migrated database.

Deterministic (a seeded random generator): the same rows every run. Names are
`<org>-<product>-<role>` with one to three versions each (ids `plugin_<slug>_NNN` counted per
name, and `plugin_id_sequences` filled so a later registration counts on); types follow the
role; statuses registered / inactive / error (never `active`: the service would start every
active plugin); descriptions composed of varied sentences. What the searches of the benchmark
look for:

- COMMON_TERM in about 10% of the descriptions, and nowhere else;
- SHORT_TERM (2 characters) in the names of the products whose name holds it (duckdb,
  mongodb...) and in some descriptions;
- FILTER_TYPE about 12% of the rows, FILTER_STATUS about 30%.

The search index (migration 0004: FTS5 tables on SQLite, the `plugins_search` table on
PostgreSQL) is filled by the migrations' triggers as the rows go in; on PostgreSQL the
tables the load filled are VACUUM ANALYZEd after it (what autovacuum does shortly after a bulk
load by itself).
"""

from __future__ import annotations

import functools
import random
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import create_engine, event, text

from mlx_platform.storage import Database
from mlx_platform.storage.repositories import id_slug
from mlx_platform.storage.tables import PluginIdSequence, PluginRow
from mlx_platform.wire import NAME_PATTERN, ConfigField, PluginMetadata

SEED = 13
COMMON_TERM = "streaming"
SHORT_TERM = "db"
FILTER_TYPE = "feature_store"
FILTER_STATUS = "inactive"

ORGS = (
    "acme contoso initech globex umbrella hooli vandelay wonka tyrell cyberdyne soylent "
    "stark wayne oscorp aperture blackmesa massive dunder sterling pied yoyodyne nakatomi "
    "gringotts monarch oceanic dharma wernham prestige octan krusty virtucon zorg bluth "
    "rekall weyland sirius abstergo ingen genco"
).split()

# product -> (shown name, category)
PRODUCTS = {
    "snowflake": ("Snowflake", "warehouse"),
    "bigquery": ("BigQuery", "warehouse"),
    "redshift": ("Redshift", "warehouse"),
    "postgres": ("PostgreSQL", "database"),
    "mysql": ("MySQL", "database"),
    "duckdb": ("DuckDB", "database"),
    "clickhouse": ("ClickHouse", "database"),
    "mongodb": ("MongoDB", "database"),
    "cassandra": ("Cassandra", "database"),
    "dynamodb": ("DynamoDB", "database"),
    "influxdb": ("InfluxDB", "timeseries"),
    "timescaledb": ("TimescaleDB", "timeseries"),
    "questdb": ("QuestDB", "timeseries"),
    "kafka": ("Kafka", "messaging"),
    "kinesis": ("Kinesis", "messaging"),
    "pulsar": ("Pulsar", "messaging"),
    "rabbitmq": ("RabbitMQ", "messaging"),
    "s3": ("S3", "files"),
    "gcs": ("Cloud Storage", "files"),
    "azureblob": ("Azure Blob", "files"),
    "hdfs": ("HDFS", "files"),
    "delta": ("Delta Lake", "lakehouse"),
    "iceberg": ("Iceberg", "lakehouse"),
    "hudi": ("Hudi", "lakehouse"),
    "parquet": ("Parquet", "files"),
    "feast": ("Feast", "features"),
    "tecton": ("Tecton", "features"),
    "hopsworks": ("Hopsworks", "features"),
    "mlflow": ("MLflow", "tracking"),
    "wandb": ("Weights & Biases", "tracking"),
    "comet": ("Comet", "tracking"),
    "neptune": ("Neptune", "tracking"),
    "sagemaker": ("SageMaker", "cloud"),
    "vertex": ("Vertex AI", "cloud"),
    "azureml": ("Azure ML", "cloud"),
    "databricks": ("Databricks", "cloud"),
    "ray": ("Ray", "compute"),
    "dask": ("Dask", "compute"),
    "spark": ("Spark", "compute"),
    "airflow": ("Airflow", "orchestration"),
    "prefect": ("Prefect", "orchestration"),
    "dagster": ("Dagster", "orchestration"),
    "triton": ("Triton", "serving"),
    "torchserve": ("TorchServe", "serving"),
    "bentoml": ("BentoML", "serving"),
    "seldon": ("Seldon", "serving"),
    "kserve": ("KServe", "serving"),
    "onnx": ("ONNX Runtime", "serving"),
    "prometheus": ("Prometheus", "observability"),
    "grafana": ("Grafana", "observability"),
    "datadog": ("Datadog", "observability"),
    "evidently": ("Evidently", "observability"),
    "whylogs": ("whylogs", "observability"),
    "pandera": ("Pandera", "quality"),
    "greatexpectations": ("Great Expectations", "quality"),
    "labelstudio": ("Label Studio", "labeling"),
    "elastic": ("Elasticsearch", "search"),
    "opensearch": ("OpenSearch", "search"),
    "redis": ("Redis", "cache"),
    "pinecone": ("Pinecone", "vectors"),
    "weaviate": ("Weaviate", "vectors"),
    "milvus": ("Milvus", "vectors"),
    "qdrant": ("Qdrant", "vectors"),
    "chroma": ("Chroma", "vectors"),
    "huggingface": ("Hugging Face Hub", "models"),
    "slack": ("Slack", "notifications"),
    "pagerduty": ("PagerDuty", "notifications"),
    "teams": ("Microsoft Teams", "notifications"),
}

# role -> (type, first sentence with {p} for the product's shown name, operations)
ROLES = {
    "reader": ("data_source", "Reads tables and query results from {p}", ("query", "tables")),
    "loader": ("data_source", "Loads batches of records from {p} into data frames", ("load",)),
    "connector": ("data_source", "Connects pipelines to {p} with pooled sessions", ("query",)),
    "exporter": ("data_sink", "Exports data sets to {p} in partitioned batches", ("export",)),
    "writer": ("data_sink", "Writes prediction logs and results to {p}", ("write", "flush")),
    "features": ("feature_store", "Serves online features backed by {p}", ("get_features",)),
    "materializer": (
        "feature_store",
        "Materializes feature views from {p} on a schedule",
        ("materialize", "backfill"),
    ),
    "registry": ("feature_store", "Keeps feature definitions and lineage in {p}", ("register",)),
    "tracker": ("experiment_tracker", "Tracks runs, parameters and metrics in {p}", ("log",)),
    "logger": ("experiment_tracker", "Logs training curves and artifacts to {p}", ("log_metrics",)),
    "models": ("model_registry", "Stores model versions and stages in {p}", ("push", "pull")),
    "promoter": ("model_registry", "Promotes approved models through {p}", ("promote",)),
    "server": ("model_serving", "Deploys and serves models on {p}", ("predict", "deploy")),
    "batcher": ("model_serving", "Runs batch inference jobs on {p}", ("score",)),
    "monitor": ("monitoring", "Watches data drift and model quality with {p}", ("report",)),
    "alerter": ("monitoring", "Raises alerts through {p} when a metric crosses a threshold", ()),
    "validator": ("data_validation", "Checks data contracts and schemas against {p}", ("check",)),
    "profiler": ("data_validation", "Profiles columns and distributions stored in {p}", ()),
    "scheduler": ("orchestrator", "Schedules training and scoring jobs on {p}", ("submit",)),
    "runner": ("orchestrator", "Runs pipeline steps as tasks on {p}", ("run", "cancel")),
    "index": ("vector_store", "Indexes embeddings for similarity search in {p}", ("upsert",)),
    "retriever": ("vector_store", "Retrieves nearest neighbours of embeddings from {p}", ()),
    "notifier": ("notifier", "Posts job and deployment notices to {p}", ("send",)),
    "labeler": ("labeling", "Sends samples for labeling and collects answers from {p}", ()),
}

SENTENCES = (
    "Retries transient failures with exponential backoff.",
    "Credentials are read from the configuration and never logged.",
    "Supports incremental loads keyed on a watermark column.",
    "Caches schemas for ten minutes.",
    "Partitions large results by date.",
    "Validates every record against the declared schema.",
    "Compresses payloads with zstd when the server allows it.",
    "Honours rate limits announced by the remote service.",
    "Works with self-hosted and managed deployments.",
    "Emits OpenTelemetry spans for each call.",
    "Understands Arrow, CSV and JSON payloads.",
    "Runs read-only unless told otherwise.",
    "Pages through results with server-side cursors.",
    "Keeps a connection pool per worker process.",
    "Maps column types to pandas and Arrow types.",
    "Signs requests with short-lived tokens.",
    "Tested against the three latest major releases.",
    "Handles schema evolution by adding nullable columns.",
    "Buffers writes and flushes them every few seconds.",
    "Reports lag and throughput as metrics.",
    "Deduplicates events by their natural key.",
    "Resumes interrupted transfers from the last checkpoint.",
    "Needs network access to the service endpoint.",
    "Exposes a dry-run mode for audits.",
)
COMMON_SENTENCE = (
    "Supports " + COMMON_TERM + " ingestion with back-pressure and exactly-once commits."
)

CAPABILITIES = (
    "batch_read batch_write sql_queries schema_introspection online_serving offline_serving "
    "run_tracking metric_logging artifact_storage model_versioning drift_detection alerting "
    "data_validation profiling scheduling retries vector_search notifications labeling "
    "incremental_sync"
).split()
FORMATS = "csv parquet json avro arrow orc sql_table protobuf".split()
INTEGRATIONS = "feature_stores ml_platforms model_registry data_catalogs notebooks ci_cd".split()
TAGS = ("beta", "gpu", "internal", "certified", "legacy")
PLATFORMS = (["linux", "darwin", "win32"], ["linux", "darwin"], ["linux"])

SCHEMAS: tuple[dict[str, dict[str, Any]], ...] = (
    {
        "endpoint": {"type": "string", "required": True, "description": "Service URL"},
        "password": {"type": "string", "secret": True, "description": "Password or API key"},
        "timeout": {"type": "number", "default": 30.0, "minimum": 0, "maximum": 600},
    },
    {
        "database": {"type": "string", "required": True, "description": "Database name"},
        "user": {"type": "string", "required": True},
        "password": {"type": "string", "secret": True},
        "pool_size": {"type": "integer", "default": 5, "minimum": 1, "maximum": 100},
        "read_only": {"type": "boolean", "default": True, "hot_reload": False},
    },
    {
        "root": {"type": "string", "required": True, "description": "Folder or bucket prefix"},
        "pattern": {"type": "string", "default": "*"},
        "format": {"type": "string", "default": "parquet", "enum": ["csv", "parquet", "json"]},
    },
    {
        "api_key": {"type": "string", "required": True, "secret": True},
        "project": {"type": "string", "default": "default", "pattern": "^[a-z0-9-]{1,64}$"},
        "batch_size": {"type": "integer", "default": 500, "minimum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "default": []},
    },
)
CONFIG_VALUES = {
    "endpoint": "https://svc.internal.example:8443",
    "timeout": 60.0,
    "database": "analytics",
    "user": "svc_ml",
    "pool_size": 8,
    "read_only": True,
    "root": "s3://ml-data/landing",
    "pattern": "*.parquet",
    "format": "parquet",
    "project": "ranking",
    "batch_size": 1000,
    "tags": ["prod"],
}

START = datetime(2024, 12, 1, tzinfo=UTC)
SPAN_S = 2 * 365 * 86400  # creation times spread over two years


@dataclass
class Catalogue:
    plugins: list[dict[str, Any]]
    sequences: list[dict[str, Any]]


@dataclass
class Seeded:
    rows: int
    seconds: float
    common: int  # rows whose name or description holds COMMON_TERM
    short: int  # ... SHORT_TERM
    of_type: int  # rows of FILTER_TYPE
    of_status: int  # rows of FILTER_STATUS


def _schema(index: int) -> dict[str, Any]:
    return {
        name: ConfigField.model_validate(field).model_dump(exclude_none=True)
        for name, field in SCHEMAS[index].items()
    }


def catalogue(n: int = 100_000, seed: int = SEED) -> Catalogue:
    """`n` plugin rows in creation order (column keys of the `plugins` table), and the id
    counters per name."""
    rng = random.Random(seed)
    schemas = [_schema(i) for i in range(len(SCHEMAS))]
    metas: dict[tuple[Any, ...], dict[str, Any]] = {}
    names = [(o, p, r) for o in ORGS for p in PRODUCTS for r in ROLES]
    rng.shuffle(names)
    name_ok = re.compile(NAME_PATTERN)

    # (created_at, name parts, version) of each row; versions of a name in time order
    entries: list[tuple[float, tuple[str, str, str], str]] = []
    for parts in names:
        if len(entries) >= n:
            break
        k = min(rng.choice((1, 1, 1, 2, 2, 3)), n - len(entries))
        major, minor = rng.randint(0, 3), rng.randint(0, 9)
        times = sorted(rng.random() * SPAN_S for _ in range(k))
        for i, t in enumerate(times):
            version = f"{major}.{minor + i}.{rng.randint(0, 12)}"
            entries.append((t, parts, version))
    if len(entries) < n:
        raise ValueError(f"the vocabulary makes at most {len(entries)} plugins, not {n}")
    entries.sort(key=lambda e: e[0])

    def randk() -> int:  # 0 to 3 further sentences
        return int(rng.random() * 4)

    seqs: dict[str, int] = {}
    slugs: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    for t, (org, product, role), version in entries:
        name = f"{org}-{product}-{role}"
        slug = slugs.get(name)
        if slug is None:
            assert name_ok.match(name), name
            slug = slugs[name] = id_slug(name)
        seq = seqs[slug] = seqs.get(slug, 0) + 1
        shown, category = PRODUCTS[product]
        ptype, first, ops = ROLES[role]
        sentences = [first.format(p=shown) + "."]
        start, step = rng.randrange(len(SENTENCES)), rng.choice((1, 5, 7, 11))
        sentences += [SENTENCES[(start + j * step) % len(SENTENCES)] for j in range(randk())]
        if rng.random() < 0.10:
            sentences.insert(rng.randint(1, len(sentences)), COMMON_SENTENCE)
        if rng.random() < 0.3:
            sentences.append(f"Maintained by the {org.capitalize()} data platform team.")
        variant = rng.randrange(6)
        meta_key = (ptype, category, variant)
        if meta_key not in metas:
            mrng = random.Random(f"{seed}/{ptype}/{category}/{variant}")
            metas[meta_key] = PluginMetadata.model_validate(
                {
                    "category": category,
                    "capabilities": mrng.sample(CAPABILITIES, mrng.randint(1, 3)),
                    "data_formats": mrng.sample(FORMATS, mrng.randint(0, 3)),
                    "integration_points": mrng.sample(INTEGRATIONS, mrng.randint(1, 2)),
                    "supported_platforms": PLATFORMS[variant % 3],
                    "min_python_version": "3.11",
                    "min_memory_mb": (64, 128, 256, 512, 1024, 2048)[variant],
                    "min_cpu_cores": (0.1, 0.25, 0.5, 1.0, 1.0, 2.0)[variant],
                    "gpu_required": ptype == "model_serving" and variant >= 4,
                }
            ).model_dump(exclude_none=True)
        schema_i = rng.randrange(len(schemas))
        schema = schemas[schema_i]
        created = START + timedelta(seconds=t)
        pkg = f"{org}_{product}_plugins"
        cls = product.capitalize() + role.capitalize()
        roll = rng.random()
        status = "registered" if roll < 0.6 else FILTER_STATUS if roll < 0.9 else "error"
        row: dict[str, Any] = {
            "id": f"plugin_{slug}_{seq:03d}",
            "name": name,
            "type": ptype,
            "version": version,
            "description": " ".join(sentences),
            "category": category,
            "class_path": f"{pkg}.{role}.{cls}",
            "isolation": "process",
            "status": status,
            "status_reason": None,
            "loadable": True,
            "class_info": {
                "operations": {
                    op: {"parameters": ["request"], "doc": f"{op.capitalize()} with {shown}."}
                    for op in ops
                }
            },
            "configuration_schema": schema,
            "metadata": metas[meta_key],
            "configuration": {},
            "running_configuration": {},
            "config_version": 0,
            "generation": 0,
            "auto_start": True,
            "extra": {
                "author": f"{org.capitalize()} ML Platform" if rng.random() < 0.7 else None,
                "license": rng.choice(("Apache-2.0", "MIT", "BSD-3-Clause", None)),
                "tags": [rng.choice(TAGS)] if rng.random() < 0.4 else [],
            },
            "code_digest": {
                "algorithm": "sha256",
                "source": "distribution",
                "root": "/opt/mlx/venv/lib/python3.11/site-packages",
                "distribution": pkg.replace("_", "-"),
                "distribution_version": version,
                "metadata_path": f"/opt/mlx/venv/lib/python3.11/site-packages/{pkg}-{version}"
                ".dist-info",
                "files": {
                    f"{pkg}/__init__.py": f"{rng.getrandbits(256):064x}",
                    f"{pkg}/{role}.py": f"{rng.getrandbits(256):064x}",
                },
            },
            "documentation_url": f"https://docs.{org}.example/plugins/{product}-{role}"
            if rng.random() < 0.5
            else None,
            "repository_url": f"https://git.{org}.example/ml/{product}-{role}"
            if rng.random() < 0.5
            else None,
            "singleton_slot": None,
            "health_status": "unknown",
            "health_last_check": None,
            "health_response_time_ms": None,
            "health_message": None,
            "created_at": created,
            "updated_at": created,
            "activated_at": None,
            "deactivated_at": None,
        }
        if status == "error":
            row.update(
                status_reason=f"class not loadable: ModuleNotFoundError: No module named '{pkg}'",
                loadable=False,
                class_info={},
                code_digest={},
            )
        elif status == FILTER_STATUS:  # was active once, deactivated since
            config = {k: CONFIG_VALUES[k] for k in schema if k in CONFIG_VALUES}
            activated = created + timedelta(hours=rng.randint(1, 200))
            deactivated = activated + timedelta(hours=rng.randint(1, 2000))
            row.update(
                configuration=config,
                running_configuration=config,
                config_version=rng.randint(1, 4),
                generation=rng.randint(1, 3),
                health_last_check=deactivated - timedelta(seconds=rng.randint(1, 30)),
                health_response_time_ms=round(rng.lognormvariate(1, 0.6), 3),
                health_message="ok",
                activated_at=activated,
                deactivated_at=deactivated,
                updated_at=deactivated,
            )
        rows.append(row)
    sequences = [{"name": slug, "last_seq": last} for slug, last in seqs.items()]
    return Catalogue(rows, sequences)


@functools.lru_cache(maxsize=1)
def _catalogue_once(n: int) -> Catalogue:
    """The catalogue, made once per run (it is deterministic): SQLite and PostgreSQL get it."""
    return catalogue(n)


def row_id(index: int, n: int = 100_000) -> str:
    """The id of the catalogue's row `index` (in creation order)."""
    return str(_catalogue_once(n).plugins[index]["id"])


def _json(value: Any) -> str:
    # the same JSON values the service stores (json.dumps), written compactly and faster
    return orjson.dumps(value).decode()


def seed(url: str, n: int = 100_000) -> Seeded:
    """Migrate the database at `url` (as `mlx migrate` does) and insert the catalogue."""
    t0 = time.perf_counter()
    db = Database(url)
    db.migrate()
    db.dispose()
    cat = _catalogue_once(n)
    engine = create_engine(url, json_serializer=_json)
    if engine.dialect.name == "sqlite":
        # a throwaway file being filled: no journal, no fsync, a page cache that holds the
        # indexes (the service sets its own pragmas, WAL among them, on its connections)
        @event.listens_for(engine, "connect")
        def _bulk(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=OFF")
            cur.execute("PRAGMA synchronous=OFF")
            cur.execute("PRAGMA cache_size=-524288")
            cur.close()

    try:
        with engine.begin() as conn:
            for i in range(0, len(cat.plugins), 5000):
                conn.execute(PluginRow.__table__.insert(), cat.plugins[i : i + 5000])
            conn.execute(PluginIdSequence.__table__.insert(), cat.sequences)
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                # every table the load filled: plugins_search (migration 0004) through the
                # triggers, and its statistics are what the search's plans are chosen by
                for filled in ("plugins", "plugin_id_sequences", "plugins_search"):
                    conn.execute(text(f"VACUUM ANALYZE {filled}"))
        else:
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    finally:
        engine.dispose()
    rows = cat.plugins
    return Seeded(
        rows=len(rows),
        seconds=time.perf_counter() - t0,
        common=sum(
            COMMON_TERM in r["name"].lower() or COMMON_TERM in r["description"].lower()
            for r in rows
        ),
        short=sum(
            SHORT_TERM in r["name"].lower() or SHORT_TERM in r["description"].lower() for r in rows
        ),
        of_type=sum(r["type"] == FILTER_TYPE for r in rows),
        of_status=sum(r["status"] == FILTER_STATUS for r in rows),
    )
