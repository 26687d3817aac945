"""A warm Python process that forks the throwaway processes (runtime/throwaway.py).

Every registration imports the plugin's code in a process of its own, so that a broken or
hostile module cannot crash or pollute the service. Starting a fresh interpreter for that
costs ~70 ms of CPU, most of it Python starting and importing the same few modules every
time; a fork of an interpreter that has already done so costs ~2 ms. This is the zygote of
Android and the forkserver of `multiprocessing`: one process, started once, that forks a
child per request.

Why not `multiprocessing`'s forkserver: its server is started with the service's own
environment, so that a plugin could read the service's secrets (MLX_JWT_SECRET,
MLX_SECRET_KEY) in `/proc/self/environ` even after `os.environ` was scrubbed; and its
children share the server's standard output, while each throwaway process needs its own,
read and bounded by the service. This zygote is started with the scrubbed environment, and
each request hands it (SCM_RIGHTS) the pipe its child writes to.

Protocol, over a SOCK_SEQPACKET pair (one message a datagram, file descriptors beside):
the service sends `{"id", "module", "args", "paths", "env"}` with the write end of a pipe; the
zygote forks, answers `{"id", "pid"}`, and once the child ended `{"pid", "exit"}`. The child
starts a session of its own (the service ends it whole with `killpg`), takes `env` as its
environment (the service's of the moment, without MLX_* variables), makes the pipe its
stdout and /dev/null its stdin and stderr, puts `paths` in front of `sys.path` as
PYTHONPATH would, and runs `module` as `python -m module args` would. The zygote ends when
the service's end of the socket closes.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
from typing import Any

_MAX_MESSAGE = 1024 * 1024  # a request carries the environment
# What every throwaway process imports before the plugin's code: imported once, here. Not
# the throwaway modules themselves, which the child runs as __main__.
PRELOAD = (
    "importlib.metadata",
    "inspect",
    "mlx_platform.plugins",
    "mlx_platform.runtime.loading",
    "mlx_platform.runtime.origin",
    "mlx_platform.runtime.throwaway",
)


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def serve(sock: socket.socket) -> None:
    """The zygote's loop: fork a child per request, report each child's end."""
    for name in PRELOAD:
        __import__(name)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd fires
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        selector.register(wake_r, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj is sock:
                    try:
                        data, fds, _flags, _addr = socket.recv_fds(sock, _MAX_MESSAGE, 1)
                    except OSError:
                        return
                    if not data:
                        return  # the service is gone
                    _fork(sock, json.loads(data), fds[0], (wake_r, wake_w))
                else:
                    os.read(wake_r, 4096)
            _report_ended(sock)


def _fork(sock: socket.socket, request: dict[str, Any], out_fd: int, wake: tuple[int, int]) -> None:
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            code = _child(sock, request, out_fd, wake)
        finally:
            try:
                sys.stdout.flush()
            except BaseException:  # noqa: BLE001,S110 - ending anyway
                pass
            os._exit(code)
    os.close(out_fd)
    send(sock, {"id": request["id"], "pid": pid})


def _child(sock: socket.socket, request: dict[str, Any], out_fd: int, wake: tuple[int, int]) -> int:
    import importlib
    import runpy

    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in wake:
        os.close(fd)
    sock.close()
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    os.close(out_fd)
    os.environ.clear()
    os.environ.update(request["env"])
    paths = [p for p in request.get("paths") or [] if p]
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    # after the working directory, as PYTHONPATH's entries go; the service's own PYTHONPATH
    # too, if it changed since the zygote started
    sys.path[1:1] = [p for p in paths + inherited if p not in sys.path[1:]]
    if paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *inherited])
    importlib.invalidate_caches()  # folders written since the zygote last looked
    sys.argv = [request["module"], *request.get("args", [])]
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - as an uncaught exception ends `python -m`
        return 1
    return 0


def _report_ended(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        send(sock, {"pid": pid, "exit": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    # the socket's file descriptor (pass_fds) is the argument: see throwaway.Zygote
    serve(socket.socket(fileno=int(sys.argv[1])))
