"""The templates of warm starts (pipeline/warm/__init__.py): started by `pipeline warm start`,
each imports its PRELOAD, then forks a supervisor and the asked process per request. No stage
imports this module: a stage's process is a fork of it, or a new interpreter."""
from __future__ import annotations

import importlib
import json
import os
import resource
import runpy
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pipeline.warm.client import _import_time_env, _kill, _limits, _python, _read_line

READY_TIMEOUT_S = 300
MAX_SOCKET_PATH = 107  # Linux's sun_path, less its terminating NUL
# A template left by `pipeline warm start` without --parent ends after this long with nothing to do.
IDLE_S = 900
# What each template imports once. The stage template: what most stages import first (torch's
# import is half of a short stage), and mlflow with its sqlite store, which register, report,
# predict and serve import (register's wall: 8.6 s before, 5.1 after); train and evaluate leave
# MLflow to their child (pipeline/tracking/run_log.py), and a fork pays nothing for what its
# template has imported (a cold stage still never imports it). SQLAlchemy's URL parsing and
# sqlite dialect are what the store check of evaluate, register and predict imports (0.28 s of
# logreg's evaluate: BENCHMARKS.md, "Ninth round"). MLflow's tracing processors: every
# set_tracking_uri() resets MLflow's tracer provider, which imports them and 30 OpenTelemetry
# modules, in each MLflow child (its store opened in 0.37 s instead of 0.45, median of 6).
PRELOAD = {
    "stage": ("numpy", "torch", "torch._dynamo", "torch.optim", "torchvision", "PIL.Image", "yaml",
              "pydantic", "scipy.stats", "sklearn.metrics", "matplotlib", "matplotlib.pyplot", "pandas", "jinja2",
              "sqlalchemy.engine", "sqlalchemy.dialects.sqlite", "mlflow", "mlflow.store.tracking.sqlalchemy_store"),
    "mlflow": ("mlflow", "mlflow.store.tracking.sqlalchemy_store", "mlflow.models", "mlflow.pyfunc", "pandas",
               "mlflow.tracing.processor.base_mlflow", "mlflow.tracing.processor.otel"),
}

def serve(root: Path, kind: str, parent: int | None, idle_s: float) -> None:
    """A template: imports PRELOAD[kind], then forks a supervisor per request until `parent` (a
    pid) ends, no request has come for `idle_s` while none of its forks ran, or it gets SIGTERM."""
    fingerprint = {"python": _python(), "env": _import_time_env(os.environ, kind), "limits": _limits(),
                   "flags": list(sys.flags), "pid": os.getpid(), "set": {}}
    # pyarrow's jemalloc keeps a background thread: a fork must not happen while it holds a lock.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    before = dict(os.environ)
    for module in PRELOAD[kind]:
        importlib.import_module(module)
    fingerprint["set"] = {k: v for k, v in os.environ.items() if before.get(k) != v}
    # The path every fork starts from: the interpreter's own, without this process's script
    # directory or PYTHONPATH (each fork brings its own).
    own = {os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    base = [p for p in sys.path[1:] if os.path.abspath(p) not in own]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = root / f"{kind}.sock"
    path.unlink(missing_ok=True)
    listener.bind(str(path))
    listener.listen(64)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    info = root / f"{kind}.json"
    running: set[int] = set()
    last = time.monotonic()
    try:
        tmp = info.with_suffix(".tmp")
        tmp.write_text(json.dumps(fingerprint))
        tmp.replace(info)  # ready: the asking side reads this file first
        while (parent is None or _alive(parent)) and (running or time.monotonic() - last < idle_s):
            ready, _, _ = select.select([listener], [], [], 1.0)
            running -= _reap()
            if running:
                last = time.monotonic()
            if ready:
                conn, _ = listener.accept()
                last = time.monotonic()
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    _supervise(conn, base, fingerprint["set"])
                running.add(pid)
                conn.close()
    finally:
        info.unlink(missing_ok=True)
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether `pid` runs: a zombie does not (a container's init may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _reap() -> set[int]:
    """The pids of the supervisors that have ended."""
    ended = set()
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended.add(pid)


def _supervise(conn: socket.socket, base: list[str], set_by_imports: dict[str, str]) -> None:
    """Forks the asked process, tells its pid, then waits for it to end (its status goes back). A
    stage's caller that goes (killed) takes the stage along. Never returns."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the template's handler would unlink its socket
    try:
        _, fds, _, _ = socket.recv_fds(conn, 1, 3)
        request = _read_line(conn)
        if request is None:
            os._exit(0)
        pid = os.fork()
        if pid == 0:
            conn.close()
            _become(request, fds, base, set_by_imports)
        for fd in fds:
            os.close(fd)
        # One line per fork in the template's log (DIR/KIND.log): what ran warm.
        what = ["python", "-m", request["module"], *request["argv"][1:]] if request["module"] else request["argv"]
        print(f"{time.strftime('%H:%M:%S')} pid {pid}: {' '.join(what)} (in {request['cwd']})", flush=True)
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        process = os.pidfd_open(pid)
        while True:
            ready, _, _ = select.select([conn, process], [], [])
            if process in ready:
                _, status = os.waitpid(pid, 0)
                conn.sendall(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
                break
            if not conn.recv(64):  # the asking process is gone (killed)
                if request["kind"] == "stage":  # the fork was that process: it goes too
                    _kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                # A child outlives its parent, as a new interpreter's would: the MLflow child, its
                # stdin closed, ends the killed stage's run as KILLED.
                os.waitpid(pid, 0)
                break
    except BaseException:  # never back into the template's loop
        pass
    os._exit(0)


def _become(request: dict, fds: list[int], base: list[str], set_by_imports: dict[str, str]) -> None:
    """In the fork: takes on the asking process's state, then runs the stage or module. Never returns."""
    code = 1
    try:
        fds = iter(fds)
        for target, present in enumerate(request["stdio"]):
            fd = next(fds) if present else os.open(os.devnull, os.O_RDWR)
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(set_by_imports)  # as a new process's imports would set them
        os.environ.update(request["env"])
        os.umask(request["umask"])
        for name, limit in request["limits"].items():
            if list(resource.getrlimit(getattr(resource, name))) != limit:
                resource.setrlimit(getattr(resource, name), tuple(limit))
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN if request["sigint_ignored"] else signal.default_int_handler)
        _std_streams()
        for name in [m for m in sys.modules if m == "pipeline" or m.startswith("pipeline.")]:
            del sys.modules[name]
        sys.argv[:] = request["argv"]
        if request["kind"] == "stage":
            sys.path[:] = request["path"]
            from pipeline.cli import exit_now, main

            exit_now(main(request["argv"][1:]))
        else:  # `python -m module`: the working directory, then PYTHONPATH, then the interpreter's
            pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
            sys.path[:] = [os.getcwd(), *pythonpath, *base]
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _std_streams() -> None:
    """New sys.stdin/stdout/stderr on descriptors 0-2, buffered as a new interpreter's would be."""
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    encoding, errors = sys.stdout.encoding, sys.stdout.errors
    sys.stdin = sys.__stdin__ = open(0, encoding=sys.stdin.encoding, errors=sys.stdin.errors, closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", encoding=encoding, errors=errors, closefd=False,
                                       buffering=1 if os.isatty(1) else -1)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding=encoding, errors="backslashreplace", closefd=False,
                                       buffering=1)
    if unbuffered:
        sys.stdout.reconfigure(write_through=True)
        sys.stderr.reconfigure(write_through=True)


def start(root: Path, parent: int | None = None, idle_s: float = IDLE_S, wait: bool = True,
          env: dict[str, str] | None = None) -> None:
    """Starts both templates in `root` (a folder of their sockets and logs), in `env` (default:
    this process's), and returns once they serve (`wait`; else at once: processes start cold until
    they do); they end with `parent` (a pid), after `idle_s` without a request, or with stop(root)."""
    if len(str(root / "mlflow.sock")) > MAX_SOCKET_PATH:
        raise ValueError(f"{root}: a folder with a shorter path is needed (a unix socket's path has at most "
                         f"{MAX_SOCKET_PATH} characters), e.g. one under /tmp")
    root.mkdir(parents=True, exist_ok=True)
    for kind in PRELOAD:
        (root / f"{kind}.json").unlink(missing_ok=True)
        log = open(root / f"{kind}.log", "ab")
        command = [sys.executable, "-m", "pipeline.warm.template", str(root), kind, str(parent or 0), str(idle_s)]
        subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                         env=env)
        log.close()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while wait and not all((root / f"{kind}.json").exists() for kind in PRELOAD):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{root}: the warm-start templates did not start; their logs: {root}/*.log")
        time.sleep(0.05)


def stop(root: Path) -> None:
    for kind in PRELOAD:
        try:
            _kill(json.loads((root / f"{kind}.json").read_text())["pid"], signal.SIGTERM)
        except (OSError, ValueError, KeyError):
            pass


if __name__ == "__main__":
    serve(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]) or None, float(sys.argv[4]))
