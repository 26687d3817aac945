"""The access log written off the event loop (server/middleware.py AccessLog): the same lines
as log records would give, in order, with each request's own time."""

from __future__ import annotations

import logging
import time

from mlx_platform.server.logging_setup import LINE_FORMAT
from mlx_platform.server.middleware import AccessLog

ARGS = ("GET", "/v1/plugins/plugin_x_001", 404, 1.25, "req_00112233aabbccdd")


def test_a_direct_line_is_what_the_service_formatter_writes() -> None:
    log = AccessLog(logging.getLogger("mlx_platform.access"))
    for created in (time.time(), 1_700_000_000.0, 1_700_000_000.999, 1_700_000_059.5004):
        record = logging.LogRecord(
            "mlx_platform.access", logging.INFO, __file__, 0, AccessLog.FORMAT, ARGS, None
        )
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
        assert log._line(created, ARGS) == logging.Formatter(LINE_FORMAT).format(record) + "\n"


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_under_other_handlers_each_line_is_a_record_with_the_request_time() -> None:
    logger = logging.getLogger("mlx_platform.access.test_records")
    kept = Kept()
    logger.addHandler(kept)
    logger.setLevel(logging.INFO)
    try:
        log = AccessLog(logger)
        assert log._only_handler() is None
        created = time.time() - 30
        log.add(ARGS)
        log.pending[-1] = (created, ARGS)  # as if it had waited half a minute
        log.add(("POST", "/v1/plugins", 201, 3.5, "req_ffffffffffffffff"))
        log.flush()
        assert [r.getMessage() for r in kept.records] == [
            "GET /v1/plugins/plugin_x_001 404 1.2ms request_id=req_00112233aabbccdd",
            "POST /v1/plugins 201 3.5ms request_id=req_ffffffffffffffff",
        ]
        assert kept.records[0].created == created
    finally:
        logger.removeHandler(kept)
