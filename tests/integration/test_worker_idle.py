"""An idle worker process sleeps until a request arrives (issue 12).

The worker's reader blocks on its socket, and its watchdog (which lets another thread read
while a call runs longer than a few milliseconds) waits without a deadline while no call is in
flight. Checked on a real worker process (of an in-process service): every thread of the idle worker sits
in a blocking system call that has no timeout (`/proc/<pid>/task/<tid>/syscall`), where a
polling worker always has one thread in a timed wait. That a long call still lets the next
request through is test_runtime_workers.py's
`test_an_operation_that_hangs_times_out_and_the_worker_keeps_serving`.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import LiveServer, invoke, poll, register

PROBE = "mlx_test_plugins.WorkerProbePlugin"

# System call numbers (asm/unistd.h) of what an idle worker's threads block in: reading the
# socket, and a futex wait (a lock or condition), which must carry no timeout (4th argument).
_SYSCALLS = {
    "x86_64": {"read": 0, "recvfrom": 45, "recvmsg": 47, "futex": 202},
    "aarch64": {"read": 63, "recvfrom": 207, "recvmsg": 212, "futex": 98},
}


def _thread_syscalls(pid: int) -> dict[str, list[str]]:
    """Each thread's current system call and arguments, as /proc shows them."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                found[tid] = f.read().split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return found


def _blocked_without_deadline(fields: list[str], numbers: dict[str, int]) -> bool:
    if not fields or fields[0] == "running":
        return False
    nr = int(fields[0])
    if nr in (numbers["read"], numbers["recvfrom"], numbers["recvmsg"]):
        return True
    return nr == numbers["futex"] and int(fields[4], 16) == 0  # futex(addr, op, val, timeout)


def test_an_idle_worker_blocks_without_a_deadline_until_a_request_arrives(
    server_factory: Callable[..., LiveServer], unique_name: str
) -> None:
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        pytest.skip(f"system call numbers not known for {platform.machine()}")
    server = server_factory(isolation="", seed_builtin_plugins="false")  # plugins in workers
    with server.client() as admin:
        _idle_worker_check(admin, unique_name, numbers)


def _idle_worker_check(admin: httpx.Client, unique_name: str, numbers: dict[str, int]) -> None:
    plugin_id = register(admin, unique_name, class_path=PROBE)
    r = admin.post(f"/v1/plugins/{plugin_id}/activate", json={"configuration": {}})
    assert r.status_code == 200, r.text
    r = invoke(admin, plugin_id, "pid")
    assert r.status_code == 200, r.text
    pid = int(r.json()["data"]["result"])
    try:
        _thread_syscalls(pid)
    except PermissionError:
        pytest.skip("/proc/<pid>/task/*/syscall is not readable here (ptrace restrictions)")

    # The background health check wakes the worker now and then: poll for a moment between.
    poll(
        lambda: _thread_syscalls(pid),
        lambda seen: (
            bool(seen) and all(_blocked_without_deadline(f, numbers) for f in seen.values())
        ),
        timeout=10,
        interval=0.01,
        what="a moment when every thread of the idle worker blocked without a deadline "
        "(syscall nr, args...)",
    )

    # and it still answers at once
    r = invoke(admin, plugin_id, "echo", value="awake")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["result"] == "awake"
