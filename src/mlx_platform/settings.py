"""Service settings, read once from the environment (prefix ``MLX_``) and passed in."""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _write_private(path: Path, content: str) -> None:
    """Create `path` readable by its owner only (0600), atomically, unless it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)


class Settings(BaseSettings):
    """Every setting of the service. Each is also an environment variable: ``MLX_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="MLX_", extra="ignore")

    home: Path = Field(default=Path("~/.mlx-platform"), description="Data folder")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: the SQLite file in MLX_HOME"
    )
    jwt_secret: SecretStr | None = Field(
        default=None, description="HS256 signing secret; default: generated once in MLX_HOME"
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Fernet key encrypting secret configuration fields; default: in MLX_HOME",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "INFO"

    # Capacity that activation checks resource needs against. None: what the machine has.
    capacity_memory_mb: int | None = Field(default=None, ge=0)
    capacity_cpu_cores: float | None = Field(default=None, ge=0)
    capacity_gpus: int | None = Field(default=None, ge=0)

    singleton_types: str = Field(
        default="experiment_tracker",
        description="Comma-separated plugin types of which at most one may be active",
    )
    seed_builtin_plugins: bool = Field(
        default=True, description="Register the example plugins on first start"
    )
    plugin_path: str = Field(
        default="", description="Folders holding plugin folders (os.pathsep-separated)"
    )
    plugin_index_url: str | None = Field(
        default=None,
        description="Package index (simple repository API, PEP 503/691) whose mlx-plugin-* "
        "projects discovery lists, e.g. https://pypi.org/simple/",
    )
    plugin_git_repos: str = Field(
        default="",
        description="Git repositories discovery reads mlx-plugin.toml manifests from: URL or "
        "URL@ref, whitespace- or comma-separated",
    )
    isolation: str | None = Field(
        default=None, description="Override every plugin's isolation mode: process|inprocess"
    )
    health_timeout: float = Field(default=5.0, gt=0, description="Seconds per health check")
    class_check_timeout: float = Field(
        default=20.0, gt=0, description="Seconds allowed to import a plugin class at register"
    )
    max_restarts: int = Field(
        default=5, ge=0, description="Restarts of a dead worker before it stays in error"
    )
    restart_budget_reset: float = Field(
        default=600.0,
        gt=0,
        description="Seconds a plugin must run before its restart budget starts over",
    )
    restart_backoff_base: float = Field(default=0.5, gt=0, description="First restart delay (s)")
    restart_backoff_cap: float = Field(default=30.0, gt=0, description="Longest restart delay (s)")
    invoke_timeout: float = Field(
        default=300.0, gt=0, description="Seconds an invocation without its own timeout may take"
    )
    calls_per_plugin: int = Field(
        default=16, ge=1, description="Invocations of one plugin that run at once (more queue)"
    )
    health_interval: float = Field(
        default=30.0, ge=0, description="Seconds between background health rounds (0: off)"
    )
    health_hang_restart: int = Field(
        default=3,
        ge=0,
        description="Restart a worker whose health check timed out this many rounds in a row "
        "(0: never)",
    )
    health_concurrency: int = Field(default=16, ge=1, description="Health checks run at once")
    usage_interval: float = Field(
        default=10.0, ge=0, description="Seconds between memory/CPU samples (0: off)"
    )
    reconcile_interval: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between passes that bring this replica's plugins to the desired "
        "state (besides the change notifications of PostgreSQL)",
    )
    node_heartbeat_interval: float = Field(
        default=2.0, gt=0, description="Seconds between this replica's heartbeats"
    )
    node_dead_after: float = Field(
        default=10.0,
        gt=0,
        description="A replica whose last heartbeat is older than this many seconds is dead",
    )
    admin_token_ttl: int = Field(default=30 * 86400, gt=0)

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("isolation", mode="after")
    @classmethod
    def _check_isolation(cls, value: str | None) -> str | None:
        if value not in (None, "", "process", "inprocess"):
            raise ValueError("must be 'process' or 'inprocess'")
        return value or None

    # ------------------------------------------------------------------ derived values

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.home

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'mlx.db'}"

    @property
    def singleton_type_set(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.singleton_types.split(",") if t.strip())

    @property
    def plugin_dirs(self) -> list[Path]:
        return [Path(p).expanduser() for p in self.plugin_path.split(os.pathsep) if p.strip()]

    @property
    def admin_token_path(self) -> Path:
        return self.home / "admin.token"

    @cached_property
    def resolved_jwt_secret(self) -> str:
        """The signing secret: the setting, else the one kept in MLX_HOME (made once, 0600)."""
        if self.jwt_secret is not None and self.jwt_secret.get_secret_value():
            return self.jwt_secret.get_secret_value()
        return self._home_secret("jwt.secret", lambda: secrets.token_urlsafe(48))

    @cached_property
    def resolved_secret_key(self) -> str:
        if self.secret_key is not None and self.secret_key.get_secret_value():
            return self.secret_key.get_secret_value()
        from cryptography.fernet import Fernet

        return self._home_secret("secret.key", lambda: Fernet.generate_key().decode())

    def _home_secret(self, filename: str, make: object) -> str:
        path = self.ensure_home() / filename
        if not path.exists():
            try:
                _write_private(path, make())  # type: ignore[operator]
            except FileExistsError:
                pass  # another process made it first: use theirs
        return path.read_text().strip()
