"""What a worker process may reach (docs/decisions.md, "Security and failure").

A worker starts with a scrubbed environment (`worker_environment`: no MLX_* setting, so no
token secret, no secret key, no database URL; the variables the plugin declares), optionally
as an unprivileged user (`worker_identity`), and under an address-space cap (the worker sets
RLIMIT_AS itself from its load request: runtime/worker.py).
"""

from __future__ import annotations

import logging
import os
import pwd
from typing import Any

from mlx_platform.errors import PluginExecutionError
from mlx_platform.runtime.instance import WorkerOptions

log = logging.getLogger("mlx_platform.runtime")

# What a worker keeps of the service's environment: what Python, the C library and TLS need.
# Everything else (MLX_JWT_SECRET, MLX_SECRET_KEY, MLX_DATABASE_URL, cloud credentials...)
# reaches a plugin only when its metadata `environment` names it.
KEPT_VARIABLES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONIOENCODING",
        "PYTHONUTF8",
        "PYTHONDONTWRITEBYTECODE",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "CUDA_VISIBLE_DEVICES",
    }
)


def worker_environment(
    extra_paths: list[str] | None, options: WorkerOptions, source: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment a worker starts with: the kept variables, `LC_*`, and the plugin's
    declared ones; never a service setting (MLX_*), even when declared."""
    source = dict(os.environ) if source is None else source
    env = {k: v for k, v in source.items() if k in KEPT_VARIABLES or k.startswith("LC_")}
    for name in options.environment:
        if name.upper().startswith("MLX_"):
            log.warning("a plugin declared the service setting %s: not passed to its worker", name)
        elif name in source:
            env[name] = source[name]
    if extra_paths:
        env["PYTHONPATH"] = os.pathsep.join([*extra_paths, env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    if options.max_memory_mb:
        # glibc reserves 64 MB of address space per thread arena: under an RLIMIT_AS cap that
        # would be counted against the plugin for nothing
        env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


def worker_identity(user: str | None, env: dict[str, str]) -> dict[str, Any]:
    """Popen arguments that run the worker as `user` (only a root service can switch)."""
    if not user:
        return {}
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PluginExecutionError(f"MLX_WORKER_USER: there is no user '{user}'") from None
    if os.geteuid() == pw.pw_uid:
        return {}
    if os.geteuid() != 0:
        raise PluginExecutionError(
            f"MLX_WORKER_USER={user}: the service must run as root to start workers as another user"
        )
    env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    # cwd "/": the service's working folder may not be readable by that user
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "cwd": "/"}
