"""Log lines: one format, every record passed through the secret redactor."""

from __future__ import annotations

import logging
import sys

from mlx_platform.core.secrets import REDACTOR

LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_mlx", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LINE_FORMAT))
        handler.addFilter(REDACTOR)
        handler._mlx = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for h in root.handlers:
        if REDACTOR not in h.filters:
            h.addFilter(REDACTOR)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # our access line carries the request id
    logging.getLogger("alembic").setLevel(logging.WARNING)
