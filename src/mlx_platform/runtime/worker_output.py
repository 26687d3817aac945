"""A worker's stdout and stderr, forwarded line by line, bounded, to the service log."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from mlx_platform.runtime.worker import LOG_MARK

plugin_log = logging.getLogger("mlx_platform.plugin")

# Control characters in a plugin's output are shown escaped: a line must not rewrite the
# terminal or the log viewer (carriage returns, ANSI escapes) or pass for a line of its own.
_ESCAPES = {i: f"\\x{i:02x}" for i in [*range(32), 127, *range(0x80, 0xA0)] if i != 9}
_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029"})
_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


class OutputForwarder:
    """Reads a worker's stdout and stderr and logs each line, prefixed with the plugin id, to
    the service log (whose handler masks every known secret value: core's SecretRedactor).

    Bounded: a line is cut at `LINE_CAP` bytes (the rest is read and dropped, never held), and
    lines beyond `RATE` a second (after a burst of `BURST`) are dropped and counted; the count
    is logged once the rate allows. A plugin printing 300 MB costs the service one pass over
    the bytes, no memory, and at most `RATE` log lines a second."""

    LINE_CAP = 4096
    RATE = 100.0
    BURST = 1000.0

    def __init__(self, plugin_id: str) -> None:
        self.plugin_id = plugin_id
        self._lock = threading.Lock()
        self._tokens = self.BURST
        self._at = time.monotonic()
        self._dropped = 0

    def start(self, stream: Any, name: str) -> threading.Thread:
        t = threading.Thread(
            target=self._pump, args=(stream, name), name=f"mlx-out-{self.plugin_id}", daemon=True
        )
        t.start()
        return t

    def _pump(self, stream: Any, name: str) -> None:
        try:
            while True:
                line = stream.readline(self.LINE_CAP + 1)
                if not line:
                    break
                cut = 0
                if len(line) > self.LINE_CAP and not line.endswith(b"\n"):
                    cut = len(line) - self.LINE_CAP
                    while True:  # the rest of an over-long line: read and dropped
                        chunk = stream.readline(65536)
                        cut += len(chunk)
                        if not chunk or chunk.endswith(b"\n"):
                            break
                    line = line[: self.LINE_CAP]
                self._emit(line, name, cut)
        except (OSError, ValueError):
            pass  # the pipe closed under us: the worker is gone
        finally:
            try:
                stream.close()
            except OSError:
                pass
            self._report_dropped()

    def _allow(self) -> tuple[bool, int]:
        """(may this line be logged, lines dropped before it); -1: the first dropped line."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.BURST, self._tokens + (now - self._at) * self.RATE)
            self._at = now
            if self._tokens < 1:
                self._dropped += 1
                return False, -1 if self._dropped == 1 else 0
            self._tokens -= 1
            dropped, self._dropped = self._dropped, 0
            return True, dropped

    def _report_dropped(self) -> None:
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        if dropped:
            self._say_dropped(dropped)

    def _say_dropped(self, dropped: int) -> None:
        plugin_log.warning(
            "[%s] %d line(s) of output dropped (over %g lines a second)",
            self.plugin_id,
            dropped,
            self.RATE,
        )

    def _emit(self, raw: bytes, name: str, cut: int) -> None:
        allowed, dropped = self._allow()
        if dropped == -1:  # said once when dropping starts; the count once it ends
            plugin_log.warning(
                "[%s] more than %g lines of output a second: lines are dropped",
                self.plugin_id,
                self.RATE,
            )
        if not allowed:
            return
        if dropped > 0:
            self._say_dropped(dropped)
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        level = logging.INFO if name == "stdout" else logging.WARNING
        if name == "stderr" and text.startswith(LOG_MARK):
            head, _, rest = text[1:].partition(" ")
            if head in _LEVELS:
                level, name, text = _LEVELS[head], "log", rest
        text = text.translate(_ESCAPES)
        if cut:
            text += f" ... [{cut} more bytes cut]"
        plugin_log.log(level, "[%s] %s: %s", self.plugin_id, name, text)
