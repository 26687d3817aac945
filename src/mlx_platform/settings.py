"""Service settings, read once from the environment (prefix ``MLX_``) and passed in."""

from __future__ import annotations

import os
import re
import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# How to make each secret the service keeps in MLX_HOME when its setting is unset: said when
# a setting's value cannot be one (the same way the service makes them: see `resolved_*`).
MAKE_SECRET_KEY = (
    "python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
)
MAKE_JWT_SECRET = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
# RFC 7518, section 3.2: an HS256 key at least as long as the hash (PyJWT warns below it)
JWT_SECRET_MIN_BYTES = 32
# The longest any duration setting may be: waits longer than threading.TIMEOUT_MAX (~292
# years) fail with OverflowError where they are waited (a background loop's thread died with
# a traceback; an in-process invocation failed), and nothing needs more than a year.
MAX_SECONDS = 365 * 86400
# The longest lifetime of the admin token: its `exp` stays a date every reader can hold (one
# beyond a float's range answered every request of the token with 500).
MAX_TOKEN_TTL = 100 * 365 * 86400
# The settings in seconds (each also > 0 or >= 0, on its field)
_SECONDS = (
    "health_timeout",
    "class_check_timeout",
    "restart_budget_reset",
    "restart_backoff_base",
    "restart_backoff_cap",
    "invoke_timeout",
    "timed_out_call_grace",
    "health_interval",
    "usage_interval",
    "reconcile_interval",
    "node_heartbeat_interval",
    "node_dead_after",
)
# Each duration's longest value, and that said in words
_LONGEST = {
    **dict.fromkeys(_SECONDS, (MAX_SECONDS, "a year")),
    "admin_token_ttl": (MAX_TOKEN_TTL, "100 years"),
}


def settings_problems(exc: ValidationError) -> str:
    """Every refused setting of `exc` as `MLX_NAME: reason`, joined by '; ' (no value quoted:
    some are secrets)."""
    problems = []
    for error in exc.errors():
        name = "MLX_" + "_".join(str(p) for p in error["loc"]).upper()
        reason = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{name}: {reason}")
    return "; ".join(problems)


def is_fernet_key(key: str) -> bool:
    """Whether `key` is what Fernet encrypts with: 32 url-safe base64-encoded bytes."""
    from cryptography.fernet import Fernet

    try:
        Fernet(key.encode())
    except ValueError:
        return False
    return True


def _expand_user(path: Path) -> Path:
    """`path` with a leading ~ or ~user expanded; ValueError (a refused setting) when it
    cannot be (Path.expanduser raises RuntimeError)."""
    try:
        return path.expanduser()
    except RuntimeError:
        raise ValueError(
            f"cannot expand {str(path).split(os.sep)[0]}: no such user's home"
        ) from None


def _folder_problem(path: Path) -> str | None:
    """Why `path` can be no folder (None: it is one, or could be made): it, or the nearest
    part of it that exists, is not a folder. Only looked at: nothing is made."""
    for part in (path, *path.parents):
        if os.path.lexists(part):
            if os.path.isdir(part):
                return None
            if part == path:
                return f"{part} is a file, not a folder"
            return f"{part} is a file, so no folder can be made in it"
    return None


def _write_private(path: Path, content: str) -> None:
    """Create `path` readable by its owner only (0600), atomically, unless it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)


_RATE = re.compile(r"^(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour)s?$")
_RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_RATE_UNITS.update({"h": 3600.0, "hour": 3600.0})


def _parse_rate(text: str) -> tuple[int, float] | None:
    """'60/minute' -> (60, 60.0), '2/5s' -> (2, 5.0); 'off' -> None."""
    value = text.strip().lower()
    if value in ("off", "none", ""):
        return None
    match = _RATE.match(value)
    if not match or int(match[1]) < 1 or (match[2] and int(match[2]) < 1):
        raise ValueError(
            "must be N/second, N/minute, N/hour or N/<k>s|m|h (e.g. 60/minute, 10/5s) "
            "with N >= 1, or 'off'"
        )
    return int(match[1]), int(match[2] or 1) * _RATE_UNITS[match[3]]


class Settings(BaseSettings):
    """Every setting of the service. Each is also an environment variable: ``MLX_<NAME>``."""

    # allow_inf_nan: no setting means anything by inf or nan (MLX_INVOKE_TIMEOUT=inf failed
    # every in-process invocation with OverflowError)
    model_config = SettingsConfigDict(env_prefix="MLX_", extra="ignore", allow_inf_nan=False)

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
    jwt_algorithms: str = Field(
        default="HS256,RS256,ES256",
        description="Token algorithms accepted (comma-separated; never 'none'). HS* tokens are "
        "checked with MLX_JWT_SECRET only, the others with MLX_JWT_PUBLIC_KEY/MLX_JWKS_FILE only",
    )
    jwt_public_key: str | None = Field(
        default=None,
        description="Public key (PEM text, or the path of a PEM file: key or certificate) "
        "verifying RS*/ES*/EdDSA tokens from an identity provider",
    )
    jwks_file: Path | None = Field(
        default=None,
        description="JWKS file of an identity provider's public keys (the token's kid picks "
        "one); read again when it changes",
    )
    jwt_issuer: str | None = Field(
        default=None, description="Required `iss` of identity-provider tokens (when set)"
    )
    jwt_audience: str | None = Field(
        default=None, description="Required `aud` of identity-provider tokens (when set)"
    )
    write_rate_limit: str = Field(
        default="600/minute",
        description="Writes (POST, PATCH, DELETE; not invocations) one token subject may make, as N/second, "
        "N/minute, N/hour or N/<k>s|m|h (a token bucket per subject in each replica: N at "
        "once, refilled evenly); 'off': no limit",
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
    call_spin_us: int = Field(
        default=250,
        ge=0,
        le=10_000,
        description="Microseconds the service may poll for a worker's answer, and the worker "
        "for the next request after answering, rather than sleep, when an invocation is the "
        "only request the service serves and that plugin answers within this time (an idle "
        "CPU's wake-up costs as much as a quick call); 0: never",
    )
    worker_max_memory_mb: int = Field(
        default=2048,
        ge=0,
        description="Address-space cap of a plugin's worker process in MB (RLIMIT_AS), unless "
        "its metadata sets max_memory_mb; 0: none",
    )
    worker_user: str | None = Field(
        default=None,
        description="Run worker processes as this unprivileged user (the service must run as "
        "root), so plugins cannot read the keys in MLX_HOME",
    )
    max_invoke_result_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="Largest invoke result, JSON-encoded, in bytes; larger answers "
        "PLUGIN_EXECUTION_ERROR",
    )
    timed_out_call_grace: float = Field(
        default=5.0,
        ge=0,
        description="Seconds a timed-out invocation may keep running in its worker before the "
        "worker is replaced to stop it",
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
    admin_token_ttl: int = Field(
        default=30 * 86400, gt=0, description="Lifetime of the admin token `mlx serve` makes (s)"
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body accepted (bytes); a larger one is refused with 413 "
        "before it is read, from its Content-Length or while it streams",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=8 * 1024,
        le=512 * 1024,
        description="Largest request head accepted (target and headers, bytes); a larger one "
        "is refused with 431. Heads over 1 MiB are refused by the HTTP server itself (a "
        "plain-text 400, before the service sees them)",
    )

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        home = _expand_user(value).resolve()
        problem = _folder_problem(home)
        if problem:
            raise ValueError(problem)
        return home

    @field_validator("jwt_secret", mode="after")
    @classmethod
    def _check_jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        size = len(value.get_secret_value().encode()) if value is not None else 0
        if 0 < size < JWT_SECRET_MIN_BYTES:  # empty: unset, the one kept in MLX_HOME
            long = f"{size} byte{'s' if size > 1 else ''}"
            raise ValueError(
                f"is {long} long: an HS256 signing secret needs at least "
                f"{JWT_SECRET_MIN_BYTES} (RFC 7518, section 3.2); make one with "
                f"{MAKE_JWT_SECRET}, or leave it unset to use the one kept in MLX_HOME"
            )
        return value

    @field_validator("secret_key", mode="after")
    @classmethod
    def _check_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        # refused now: a bad key would fail the service's start, after its home was written
        key = value.get_secret_value() if value is not None else ""
        if key and not is_fernet_key(key):  # empty: unset, the one kept in MLX_HOME
            raise ValueError(
                "is not a Fernet key (32 url-safe base64-encoded bytes, 44 characters); "
                f"make one with {MAKE_SECRET_KEY}, or leave it unset to use the one kept in "
                "MLX_HOME"
            )
        return value

    @field_validator("log_level", mode="after")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        import logging

        level = value.strip().upper()
        if not isinstance(logging.getLevelNamesMapping().get(level), int):
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @field_validator(*_LONGEST, mode="after")
    @classmethod
    def _check_at_most(cls, value: float, info: ValidationInfo) -> float:
        longest, said = _LONGEST[str(info.field_name)]
        if value > longest:
            raise ValueError(f"must be at most {longest} seconds ({said})")
        return value

    @field_validator("plugin_index_url", mode="after")
    @classmethod
    def _check_plugin_index_url(cls, value: str | None) -> str | None:
        # read by discovery with an HTTP client: anything else failed every discovery
        if value is None or not value.strip():
            return None  # unset: no index is read
        from urllib.parse import urlsplit

        try:
            url = urlsplit(value.strip())
            url.port  # noqa: B018 - ValueError when not a number
        except ValueError:
            url = urlsplit("")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(
                "must be the http:// or https:// URL of a package index's simple API, "
                "e.g. https://pypi.org/simple/"
            )
        return value.strip()

    @field_validator("isolation", mode="after")
    @classmethod
    def _check_isolation(cls, value: str | None) -> str | None:
        if value not in (None, "", "process", "inprocess"):
            raise ValueError("must be 'process' or 'inprocess'")
        return value or None

    @field_validator("jwt_algorithms", mode="after")
    @classmethod
    def _check_jwt_algorithms(cls, value: str) -> str:
        from mlx_platform.jwt_keys import parse_algorithms

        return ",".join(parse_algorithms(value))

    @field_validator("jwt_public_key", mode="after")
    @classmethod
    def _check_jwt_public_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from mlx_platform.jwt_keys import load_public_key

        load_public_key(value)  # refuse at start what could never verify a token
        return value

    @field_validator("jwks_file", mode="after")
    @classmethod
    def _check_jwks_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        from mlx_platform.jwt_keys import load_jwks

        value = _expand_user(value).resolve()
        load_jwks(value)
        return value

    @field_validator("jwt_public_key", "jwks_file", "jwt_issuer", "jwt_audience", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("plugin_path", mode="after")
    @classmethod
    def _check_plugin_path(cls, value: str) -> str:
        for part in value.split(os.pathsep):
            if part.strip():
                _expand_user(Path(part))  # as plugin_dirs will
        return value

    @field_validator("write_rate_limit", mode="after")
    @classmethod
    def _check_write_rate_limit(cls, value: str) -> str:
        _parse_rate(value)
        return value.strip()

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
    def jwt_algorithm_list(self) -> tuple[str, ...]:
        return tuple(self.jwt_algorithms.split(","))

    @property
    def write_rate(self) -> tuple[int, float] | None:
        """(writes, per seconds) of MLX_WRITE_RATE_LIMIT; None: no limit."""
        return _parse_rate(self.write_rate_limit)

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
        return self._home_secret(self.jwt_secret_path.name, lambda: secrets.token_urlsafe(48))

    @property
    def jwt_secret_path(self) -> Path:
        """Where the signing secret is kept when MLX_JWT_SECRET is not set."""
        return self.home / "jwt.secret"

    @property
    def has_jwt_secret(self) -> bool:
        """A signing secret exists (the setting, or the file in MLX_HOME): nothing is made."""
        if self.jwt_secret is not None and self.jwt_secret.get_secret_value():
            return True
        return self.jwt_secret_path.exists()

    @cached_property
    def resolved_secret_key(self) -> str:
        if self.secret_key is not None and self.secret_key.get_secret_value():
            return self.secret_key.get_secret_value()
        from cryptography.fernet import Fernet

        key = self._home_secret(self.secret_key_path.name, lambda: Fernet.generate_key().decode())
        if not is_fernet_key(key):
            raise ValueError(
                f"{self.secret_key_path} does not hold a Fernet key (32 url-safe base64-encoded "
                "bytes): put back the key the secret configuration values were stored with, "
                "or set MLX_SECRET_KEY to it; when none were stored, delete the file and a new "
                "one is made"
            )
        return key

    @property
    def secret_key_path(self) -> Path:
        """Where the Fernet key is kept when MLX_SECRET_KEY is not set."""
        return self.home / "secret.key"

    def _home_secret(self, filename: str, make: object) -> str:
        path = self.ensure_home() / filename
        if not path.exists():
            try:
                _write_private(path, make())  # type: ignore[operator]
            except FileExistsError:
                pass  # another process made it first: use theirs
        return path.read_text().strip()
