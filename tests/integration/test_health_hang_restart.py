"""A worker whose health check keeps hanging is restarted: a hung call holds a worker thread
for ever, and only a new process gets it back. (An in-process service; its plugins in worker
processes: isolation "" leaves each plugin's own, process.)"""

from __future__ import annotations

from tests.integration.test_runtime_workers import active_probe, call, detail, poll, worker_pid


def test_worker_whose_health_check_hangs_repeatedly_is_restarted(server_factory) -> None:
    server = server_factory(
        isolation="",
        seed_builtin_plugins="false",
        health_interval="0.5",
        health_timeout="0.3",
        health_hang_restart="2",
        restart_backoff_base="0.2",
    )
    with server.client() as c:
        steady = active_probe(c, "steady")
        hangs = active_probe(c, "hangs")
        steady_pid, old_pid = worker_pid(c, steady), worker_pid(c, hangs)
        call(c, hangs, "hang_health", on=True)
        # The restart is quick (backoff 0.2 s): watch the log for the reason, then for the
        # supervisor's restart (the recycle is logged before the old worker has gone).
        poll(
            server.log_text,
            lambda log: (
                "health_check() hung 2 times in a row: the worker was restarted; "
                "restarting in" in log
            ),
            timeout=10,
            what="the hang noticed and a restart planned",
        )
        poll(
            lambda: detail(c, hangs)["status"],
            lambda s: s == "active",
            timeout=10,
            what="restarted",
        )
        assert worker_pid(c, hangs) != old_pid
        assert worker_pid(c, steady) == steady_pid  # the other plugin was never touched


def test_hang_restart_can_be_turned_off(server_factory) -> None:
    server = server_factory(
        isolation="",
        seed_builtin_plugins="false",
        health_interval="0.5",
        health_timeout="0.3",
        health_hang_restart="0",
    )
    with server.client() as c:
        hangs = active_probe(c, "hangs_forever")
        pid = worker_pid(c, hangs)
        call(c, hangs, "hang_health", on=True)
        # several rounds of hung checks (more than the default 3 that would restart it), each
        # stored with its own time; a restart would have made the new worker's check healthy
        hung_checks: set[str] = set()

        def count_hung_checks() -> int:
            health = detail(c, hangs)["health"]
            assert health["status"] == "unhealthy" or not hung_checks, health
            if health["status"] == "unhealthy":
                hung_checks.add(health["last_check"])
            return len(hung_checks)

        poll(count_hung_checks, lambda n: n >= 4, timeout=15, what="four hung health checks")
        assert detail(c, hangs)["status"] == "active"
        assert worker_pid(c, hangs) == pid
