"""One example of each request and answer of the API, for the OpenAPI document.

`wire.py` attaches them to its models (`json_schema_extra`); the envelopes build theirs from
the example of what they carry. Taken from the API specification where it has one (the
Snowflake and custom data source plugins), else from the README's walk-through. A test
validates each against its model, so they cannot drift from what the service accepts and
answers.
"""

from __future__ import annotations

from typing import Any

# ---------------------------------------------------------------- requests

CONFIG_FIELD: dict[str, Any] = {
    "type": "string",
    "required": True,
    "description": "Database connection string",
}

PLUGIN_METADATA: dict[str, Any] = {
    "capabilities": ["sql_queries", "batch_processing"],
    "conflicts_with": [],
    "requires": [],
    "min_memory_mb": 512,
    "min_cpu_cores": 1,
}

REGISTER_PLUGIN_REQUEST: dict[str, Any] = {
    "name": "custom_data_source",
    "type": "data_source",
    "version": "1.0.0",
    "description": "Custom data source plugin",
    "class_path": "my_company.plugins.CustomDataSource",
    "configuration_schema": {"connection_string": CONFIG_FIELD},
    "metadata": PLUGIN_METADATA,
}

# a class that carries its manifest (class attributes, or mlx-plugin.toml beside its module)
REGISTER_BY_CLASS_PATH_REQUEST: dict[str, Any] = {
    "class_path": "my_company.plugins.CustomDataSource",
}

ACTIVATE_REQUEST: dict[str, Any] = {
    "configuration": {
        "connection_string": "postgresql://user:pass@host:5432/db",
        "pool_size": 10,
        "timeout": 30,
    },
    "auto_start": True,
}

DEACTIVATE_REQUEST: dict[str, Any] = {"force": False, "graceful_shutdown_timeout": 30}

CONFIGURATION_UPDATE_REQUEST: dict[str, Any] = {
    "configuration": {"pool_size": 15, "timeout": 45},
    "restart_required": False,
}

COMPOSITION_ENTRY: dict[str, Any] = {"name": "snowflake", "version": "1.2.0"}

VALIDATE_COMPOSITION_REQUEST: dict[str, Any] = {
    "plugins": [
        COMPOSITION_ENTRY,
        {"name": "databricks", "version": "2.0.0"},
        {"name": "mlflow", "version": "1.8.0"},
    ]
}

INVOKE_REQUEST: dict[str, Any] = {
    "operation": "query",
    "arguments": {"sql": "select model, auc from runs order by auc desc"},
    "timeout": 30,
}

# ---------------------------------------------------------------- answers

HEALTH_SUMMARY: dict[str, Any] = {
    "status": "healthy",
    "last_check": "2024-01-15T10:30:00Z",
    "response_time_ms": 45,
}

PLUGIN_SUMMARY: dict[str, Any] = {
    "id": "plugin_snowflake_001",
    "name": "snowflake",
    "type": "data_source",
    "version": "1.2.0",
    "status": "active",
    "description": "Snowflake cloud data warehouse integration",
    "capabilities": ["sql_queries", "snowpark_ml", "secure_views"],
    "conflicts_with": [],
    "integration_points": ["ml_platforms", "feature_stores"],
    "resource_requirements": {"min_memory_mb": 1024, "min_cpu_cores": 2, "gpu_required": False},
    "configuration": {
        "required_fields": ["account", "user", "password", "database"],
        "optional_fields": ["warehouse", "schema", "role"],
    },
    "health": HEALTH_SUMMARY,
    "created_at": "2024-01-01T00:00:00Z",
    "updated_at": "2024-01-15T09:00:00Z",
}

PLUGIN_DETAIL: dict[str, Any] = {
    "id": "plugin_snowflake_001",
    "name": "snowflake",
    "type": "data_source",
    "version": "1.2.0",
    "status": "active",
    "description": "Snowflake cloud data warehouse with Snowpark ML",
    "class_path": "mlx_snowflake.plugin.SnowflakeSource",
    "isolation": "process",
    "metadata": {
        "capabilities": ["sql_queries", "snowpark_ml", "time_travel"],
        "data_formats": ["sql_table", "parquet", "csv", "json"],
        "integration_points": ["ml_platforms", "feature_stores"],
        "conflicts_with": [],
        "requires": [],
        "optional_deps": ["dbt-plugin", "feast-plugin"],
        "supported_platforms": ["linux", "darwin", "win32"],
        "min_python_version": "3.9",
    },
    "configuration_schema": {
        "account": {
            "type": "string",
            "required": True,
            "description": "Snowflake account identifier",
        },
        "user": {"type": "string", "required": True, "description": "Username for authentication"},
        "password": {
            "type": "string",
            "required": True,
            "secret": True,
            "description": "Password for authentication",
        },
        "warehouse": {
            "type": "string",
            "default": "COMPUTE_WH",
            "description": "Compute warehouse to use",
        },
    },
    "configuration": {
        "account": "acme-eu1",
        "user": "ml_service",
        "password": "********",
        "warehouse": "COMPUTE_WH",
    },
    "operations": ["query", "list_tables"],
    "performance_metrics": {
        "execution_count": 1542,
        "avg_execution_time_ms": 250,
        "success_rate": 0.998,
        "error_rate": 0.002,
        "throughput_ops_per_second": 45,
        "window_seconds": 3600,
    },
    "health": HEALTH_SUMMARY,
    "documentation_url": "https://docs.mlx.platform/plugins/snowflake",
    "repository_url": "https://github.com/mlx-platform/plugin-snowflake",
    "created_at": "2024-01-01T00:00:00Z",
    "updated_at": "2024-01-15T09:00:00Z",
    "activated_at": "2024-01-15T09:00:00Z",
}

REGISTER_RESULT: dict[str, Any] = {
    "id": "plugin_custom_data_source_001",
    "name": "custom_data_source",
    "version": "1.0.0",
    "status": "registered",
    "validation_results": {
        "schema_valid": True,
        "class_loadable": True,
        "dependencies_available": True,
        "conflicts_detected": False,
    },
    "next_steps": [
        "Activate plugin to make it available for use",
        "Configure plugin with required parameters",
        "Test plugin functionality",
    ],
    "dry_run": False,
}

ACTIVATE_RESULT: dict[str, Any] = {
    "id": "plugin_custom_data_source_001",
    "status": "active",
    "activation_time": "2024-01-15T10:35:00Z",
    "health_check": {
        "status": "healthy",
        "response_time_ms": 120,
        "last_check": "2024-01-15T10:35:30Z",
    },
    "started": True,
    "dry_run": False,
}

DEACTIVATE_RESULT: dict[str, Any] = {
    "id": "plugin_custom_data_source_001",
    "status": "inactive",
    "deactivation_time": "2024-01-15T10:40:00Z",
    "pending_operations": 0,
}

CONFIGURATION_UPDATE_RESULT: dict[str, Any] = {
    "id": "plugin_custom_data_source_001",
    "configuration_updated": True,
    "restart_required": False,
    "restarted": False,
    "updated_fields": ["pool_size", "timeout"],
    "effective_time": "2024-01-15T10:45:00Z",
    "dry_run": False,
}

HEALTH_REPORT: dict[str, Any] = {
    "plugin_id": "plugin_snowflake_001",
    "status": "healthy",
    "checks": {
        "connectivity": {
            "status": "pass",
            "response_time_ms": 45,
            "last_check": "2024-01-15T10:30:00Z",
        },
        "resource_usage": {"status": "pass", "memory_usage_mb": 512, "cpu_usage_percent": 15},
        "dependencies": {"status": "pass", "missing_dependencies": []},
    },
    "metrics": {
        "uptime_seconds": 86400,
        "total_requests": 1542,
        "successful_requests": 1539,
        "failed_requests": 3,
        "avg_response_time_ms": 234,
    },
    "node_id": "vm-651-8dbdd8",
    "replicas": [
        {
            "node_id": "vm-651-8dbdd8",
            "state": "running",
            "pid": 677,
            "health_status": "healthy",
            "message": "connected",
            "last_check": "2024-01-15T10:30:00Z",
            "config_version": 1,
            "generation": 1,
            "last_error": None,
            "restarts": 0,
        }
    ],
}

METRICS_REPORT: dict[str, Any] = {
    "plugin_id": "plugin_snowflake_001",
    "time_range": {"start": "2024-01-15T09:00:00Z", "end": "2024-01-15T10:00:00Z"},
    "granularity": "hour",
    "metrics": {
        "execution_count": 145,
        "success_rate": 0.993,
        "avg_execution_time_ms": 287,
        "p50_execution_time_ms": 240,
        "p95_execution_time_ms": 650,
        "p99_execution_time_ms": 1200,
        "error_count": 1,
        "resource_usage": {
            "avg_memory_mb": 423,
            "peak_memory_mb": 678,
            "avg_cpu_percent": 12,
            "samples": 60,
        },
    },
    "timeseries": [
        {
            "timestamp": "2024-01-15T09:00:00Z",
            "execution_count": 24,
            "avg_execution_time_ms": 245,
            "success_rate": 1.0,
            "error_count": 0,
            "p50_execution_time_ms": 238,
            "p95_execution_time_ms": 310,
            "p99_execution_time_ms": 352,
            "avg_memory_mb": 419,
            "peak_memory_mb": 502,
        }
    ],
}

DISCOVERY_RESULT: dict[str, Any] = {
    "discovered_plugins": [
        {
            "name": "mlflow_integration",
            "source": "pypi",
            "version": "2.1.0",
            "type": "experiment_tracker",
            "compatible": True,
            "conflicts": [],
            "auto_registered": False,
        }
    ],
    "discovery_summary": {
        "total_discovered": 1,
        "compatible_plugins": 1,
        "incompatible_plugins": 0,
        "auto_registered": 0,
    },
    "errors": [],
}

COMPOSITION_RESULT: dict[str, Any] = {
    "composition_valid": True,
    "conflicts": [],
    "warnings": [
        {
            "type": "version_mismatch",
            "message": "MLflow version 1.8.0 is older than recommended 2.0.0+",
            "severity": "low",
            "plugins": ["mlflow"],
        }
    ],
    "synergies": [
        {
            "plugins": ["snowflake", "databricks"],
            "integration_points": ["data_sharing", "delta_lake"],
            "benefits": ["Zero-copy data sharing", "Unified governance"],
        }
    ],
    "recommendations": [
        "Consider upgrading MLflow to version 2.0.0+ for better Databricks integration"
    ],
}

INVOKE_RESULT: dict[str, Any] = {
    "plugin_id": "plugin_sqlite_source_001",
    "operation": "query",
    "result": {
        "columns": ["model", "auc"],
        "rows": [["lgbm", 0.93], ["xgb", 0.91]],
        "row_count": 2,
        "truncated": False,
    },
    "duration_ms": 2.92,
}

DELETE_RESULT: dict[str, Any] = {
    "id": "plugin_custom_data_source_001",
    "deleted": True,
    "deactivated": False,
}

NODE: dict[str, Any] = {
    "id": "vm-651-8dbdd8",
    "host": "vm-651",
    "pid": 412,
    "address": "http://10.0.0.5:8000",
    "version": "0.1.0",
    "started_at": "2024-01-15T08:00:00Z",
    "heartbeat_at": "2024-01-15T10:30:00Z",
    "alive": True,
    "this_node": True,
    "capacity": {"memory_mb": 16384, "cpu_cores": 8, "gpus": 0},
    "instances": [
        {
            "plugin_id": "plugin_snowflake_001",
            "state": "running",
            "pid": 677,
            "generation": 1,
            "config_version": 1,
            "health_status": "healthy",
            "last_error": None,
        }
    ],
}

AUDIT_EVENT: dict[str, Any] = {
    "id": 42,
    "at": "2024-01-15T10:35:00Z",
    "actor": "alice",
    "action": "activate",
    "plugin_id": "plugin_custom_data_source_001",
    "outcome": "success",
    "error_code": None,
    "request_id": "req_3f9c2a7d1b8e4c60",
    "node_id": "vm-651-8dbdd8",
    "details": {
        "configuration_fields": ["connection_string", "pool_size", "timeout"],
        "auto_start": True,
    },
}

PAGINATION: dict[str, Any] = {
    "page": 1,
    "limit": 20,
    "total": 1,
    "has_next": False,
    "total_is_estimate": False,
}

ERROR_ENVELOPE: dict[str, Any] = {
    "success": False,
    "error": {
        "code": "PLUGIN_CONFLICT",
        "message": "Plugin 'wandb' conflicts with active plugin 'mlflow'",
        "details": {
            "conflicting_plugin": "mlflow",
            "conflict_type": "singleton_type",
            "resolution_options": [
                "Deactivate 'mlflow' before activating 'wandb'",
                "Use 'mlflow' for experiment tracking instead",
            ],
        },
        "request_id": "req_123456",
    },
}

CONFIGURATION_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:mlx-platform:plugin:plugin_custom_data_source_001:configuration",
    "title": "custom_data_source 1.0.0 configuration",
    "type": "object",
    "properties": {
        "connection_string": {"type": "string", "description": "Database connection string"}
    },
    "required": ["connection_string"],
    "additionalProperties": True,
}
