"""The restart policy of one replica: when a plugin's instance died, how long to wait before
the reconciler starts it again, and when to give up.

A death is noticed at once (the worker's socket reaches EOF, a watcher thread sits in
waitpid). The n-th restart in a row waits `backoff_base * 2**n` seconds (capped); after
`max_restarts` failures in a row the plugin stays in `error` on this replica until an operator
activates it again (a new desired `generation`). An instance that ran for `budget_reset`
seconds before it died has earned a fresh budget: six crashes spread over hours are six first
crashes, not a give-up.

This module knows nothing of storage: the reconciler asks it whether a plugin may be started
now, and it calls `wake` when a wait is over.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class RestartState:
    generation: int
    attempts: int = 0
    next_at: float = 0.0
    gave_up: bool = False
    message: str = ""


class Supervisor:
    def __init__(
        self,
        *,
        max_restarts: int,
        backoff_base: float,
        backoff_cap: float,
        budget_reset: float,
        wake: Callable[[], None],
    ) -> None:
        self.max_restarts = max_restarts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.budget_reset = budget_reset
        self._wake = wake
        self._states: dict[str, RestartState] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def close(self) -> None:
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def delay(self, attempt: int) -> float:
        # cap the exponent so 2**attempt cannot overflow on a long-failing plugin
        return float(min(self.backoff_base * (2 ** min(attempt, 30)), self.backoff_cap))

    def reset(self, plugin_id: str) -> None:
        """An operator acted (activate, deactivate, delete): the budget starts over."""
        with self._lock:
            self._states.pop(plugin_id, None)

    def blocked(self, plugin_id: str, generation: int) -> str | None:
        """Why the plugin must not be started now (waiting for its restart, or given up),
        else None. A new generation (an operator's activation) is never blocked."""
        with self._lock:
            state = self._states.get(plugin_id)
            if state is None or state.generation != generation:
                return None
            if state.gave_up or time.monotonic() < state.next_at:
                return state.message
            return None

    def failed(
        self, plugin_id: str, generation: int, reason: str, *, ran_for: float | None
    ) -> tuple[str, bool]:
        """The plugin's instance died (after running `ran_for` seconds) or could not start:
        count it, and say what happens next. Returns (message, gave_up)."""
        with self._lock:
            state = self._states.get(plugin_id)
            if state is None or state.generation != generation:
                state = self._states[plugin_id] = RestartState(generation)
            if ran_for is not None and ran_for >= self.budget_reset:
                state.attempts = 0  # it ran healthily long enough: a fresh budget
            attempt = state.attempts
            state.attempts += 1
            if attempt >= self.max_restarts:
                state.gave_up = True
                state.message = (
                    f"{reason}; gave up after {self.max_restarts} restart(s): activate the "
                    "plugin to try again"
                )
                return state.message, True
            wait = self.delay(attempt)
            state.next_at = time.monotonic() + wait
            state.message = (
                f"{reason}; restarting in {wait:g} s (restart {attempt + 1} of {self.max_restarts})"
            )
            message = state.message
        timer = threading.Timer(wait, self._wake_unless_closed)
        timer.daemon = True
        timer.start()
        return message, False

    def attempts(self, plugin_id: str) -> int:
        with self._lock:
            state = self._states.get(plugin_id)
            return state.attempts if state else 0

    def _wake_unless_closed(self) -> None:
        if not self._closed.is_set():
            self._wake()
