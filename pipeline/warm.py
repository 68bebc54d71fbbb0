"""Warm starts: stage processes, and their MLflow children, forked from processes that have
already imported torch, or mlflow.

A short stage's own work is shorter than its imports: torch, torch._dynamo (which torch.optim
imports at every step) and torchvision take 4.2 s of one core on the slowest machine, mlflow and
its sqlite store 3.0 s more in the MLflow child of train and evaluate. Forked, download takes
0.8 s instead of 2.8, logreg's evaluate 3.5 instead of 7.8 (BENCHMARKS.md, "Warm starts";
`bench/warm_start.py`). A `dvc repro` starts some 40 stages, the test suite about 90.

`pipeline warm start DIR` starts two templates, each a Python process that imports its set of
modules (PRELOAD), then waits on a unix socket in DIR (its log, DIR/KIND.log, has a line per
fork). With PIPELINE_WARM=DIR in the environment, `pipeline <stage>` (pipeline/cli.py's entry)
and the MLflow child of train and evaluate (pipeline/tracking/run_log.py) ask a template for a
fork instead of starting a new interpreter. The fork takes on the asking process's arguments,
working directory, environment, sys.path, umask, resource limits and stdin/stdout/stderr, then
runs what the new interpreter would have run. A supervisor, forked per request, waits for the
fork and sends its exit status back. A stage's caller exits with it: a signal the caller gets
goes on to the fork, and a caller killed takes its fork along. The MLflow child outlives its
stage, as a child process does, to end a killed stage's run as KILLED.

The fork is the process a cold start would have been, or it is not used:
- a template serves only a process of its own Python whose environment agrees with the
  template's in every variable read as its modules are imported (IMPORT_TIME: torch's and oneDNN's
  kernel choice, OpenMP and BLAS threads, the hash seed...), whose Python flags are the
  template's and whose resource limits do not exceed the template's; any other process starts
  cold, as does every process when no template answers;
- a template never keeps anything of pipeline/ imported: each fork imports it afresh from its own
  sys.path, so an edited or copied pipeline/ runs as edited;
- a template computes nothing before it forks, and imports pyarrow (through mlflow) with the
  system allocator, so no thread of its holds a lock across a fork.
tests/test_warm.py holds a warm stage to the cold one: the same weights, metrics and curves, the
same exit code and messages.

Templates end with the process named by --parent, after IDLE_S with no stage running, or with
`pipeline warm stop DIR`. They do not notice an upgraded torch or mlflow: restart them after a
`pip install`.
"""
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

ENV = "PIPELINE_WARM"
# What each template imports once. The stage template: what most stages import first (torch's
# import is half of a short stage). Not mlflow: train and evaluate leave it to their child
# (pipeline/tracking/run_log.py), and a stage must not pay for it.
PRELOAD = {
    "stage": ("numpy", "torch", "torch._dynamo", "torch.optim", "torchvision", "PIL.Image", "yaml",
              "pydantic", "scipy.stats", "sklearn.metrics", "matplotlib", "matplotlib.pyplot", "pandas", "jinja2"),
    "mlflow": ("mlflow", "mlflow.store.tracking.sqlalchemy_store", "mlflow.models", "mlflow.pyfunc", "pandas"),
}
# Environment variables read as a module is imported (so a fork cannot take them on): a process
# whose values differ from its template's starts cold. PYTHONPATH is the exception: the fork
# applies it to sys.path. The mlflow template imports no torch: torch's, oneDNN's and OpenMP's
# variables are not its (a stage that has imported torch passes torch's own on to its child).
IMPORT_TIME = {
    "stage": ("PYTHON", "ATEN_", "ONEDNN_", "DNNL_", "OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS_", "GOTO", "TORCH",
              "PYTORCH", "CUDA", "NVIDIA", "LD_", "MALLOC", "MPL", "SKLEARN", "SCIPY", "NUMEXPR", "ARROW", "LC_",
              "LANG"),
    "mlflow": ("PYTHON", "OMP_", "MKL_", "OPENBLAS_", "GOTO", "LD_", "MALLOC", "NUMEXPR", "ARROW", "LC_", "LANG"),
}
LIMITS = ("RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_NOFILE",
          "RLIMIT_STACK")
# The stages a template serves (the others are quick, or are `pipeline warm` itself).
STAGES = {"download", "prepare", "train", "evaluate", "report", "register", "predict"}
READY_TIMEOUT_S = 300
MAX_SOCKET_PATH = 107  # Linux's sun_path, less its terminating NUL
# A template left by `pipeline warm start` without --parent ends after this long with nothing to do.
IDLE_S = 900


def _import_time_env(env: dict[str, str] | os._Environ, kind: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME[kind]) and k != "PYTHONPATH"}


def _agrees(asked: dict[str, str], template: dict[str, str], set_by_imports: dict[str, str]) -> bool:
    """Whether a process with the import-time variables `asked` would import as the template did.
    A variable the template's imports set themselves (torch sets KMP_INIT_AT_FORK, for one) may
    be missing, or carry the value they set: a process that has imported torch passes it on."""
    return all(asked.get(k) in (template.get(k), set_by_imports.get(k, template.get(k)))
               for k in asked.keys() | template.keys())


def _python() -> list[str]:
    """This interpreter: its environment (a venv) and its binary, by whichever link it was started."""
    return [sys.prefix, os.path.realpath(sys.executable)]


def _limits() -> dict[str, list[int]]:
    return {name: list(resource.getrlimit(getattr(resource, name))) for name in LIMITS}


def _fits(asked: dict[str, list[int]], template: dict[str, list[int]]) -> bool:
    """A fork can lower a limit, never raise one past the template's hard limit."""
    def within(value: int, ceiling: int) -> bool:
        return ceiling == resource.RLIM_INFINITY or (value != resource.RLIM_INFINITY and value <= ceiling)

    return all(within(asked[n][1], template[n][1]) for n in LIMITS)


# ---------------------------------------------------------------- the asking side

def _template(kind: str, env: dict[str, str] | os._Environ) -> Path | None:
    """The socket of a template that can serve a process with `env`, or None."""
    root = env.get(ENV)
    if not root:
        return None
    try:
        info = json.loads((Path(root) / f"{kind}.json").read_text())
    except (OSError, ValueError):
        return None
    if (info.get("python") != _python() or not _agrees(_import_time_env(env, kind), info.get("env", {}),
                                                   info.get("set", {}))
            or not _fits(_limits(), info.get("limits", {}))
            or (kind == "stage" and info.get("flags") != list(sys.flags))):
        return None
    return Path(root) / f"{kind}.sock"


def _ask(kind: str, request: dict, fds: list[int], env) -> tuple[socket.socket, int] | None:
    """Sends the request to a template; (connection, the fork's pid), or None when none serves."""
    path = _template(kind, env)
    if path is None:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
        socket.send_fds(conn, [b"\0"], fds)
        conn.sendall(json.dumps(request).encode() + b"\n")
        answer = _read_line(conn)
    except OSError:
        answer = None
    if answer is None:  # the template is gone or refused: start cold
        conn.close()
        return None
    return conn, answer["pid"]


def _read_line(conn: socket.socket) -> dict | None:
    """One JSON line, and not a byte of the next: a fork that ends at once has its pid and its
    status on the socket together."""
    data = b""
    while True:
        chunk = conn.recv(4096, socket.MSG_PEEK)
        if not chunk:
            return None
        end = chunk.find(b"\n")
        if end >= 0:
            return json.loads(data + conn.recv(end + 1))
        data += conn.recv(len(chunk))


def _request(kind: str, env: dict[str, str], argv: list[str], path: list[str] | None,
             module: str | None = None) -> dict:
    return {"kind": kind, "argv": argv, "module": module, "path": path, "cwd": os.getcwd(), "env": env,
            "umask": _umask(), "limits": _limits(),
            "sigint_ignored": signal.getsignal(signal.SIGINT) == signal.SIG_IGN}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _open_fds(fds: tuple[int, ...]) -> list[int]:
    """The standard descriptors that are open: a closed one is /dev/null in the fork."""
    def is_open(fd: int) -> bool:
        try:
            os.fstat(fd)
            return True
        except OSError:
            return False

    return [fd if is_open(fd) else -1 for fd in fds]


def run_stage(argv: list[str]) -> int | None:
    """`pipeline <argv>` in a fork of the stage template; its exit code, or None when no template
    serves this process (the caller runs the stage itself)."""
    if _stage_of(argv) not in STAGES:
        return None
    fds = _open_fds((0, 1, 2))
    request = _request("stage", dict(os.environ), sys.argv[:1] + argv, sys.path) | {"stdio": [fd >= 0 for fd in fds]}
    asked = _ask("stage", request, [fd for fd in fds if fd >= 0], os.environ)
    if asked is None:
        return None
    conn, pid = asked
    # A signal for the stage (Ctrl-C, DVC stopping it) goes to the fork, which handles it as the
    # stage would; its exit status comes back as usual.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) != signal.SIG_IGN:
            signal.signal(signum, lambda n, frame: _kill(pid, n))
    answer = _read_line(conn)
    code = 1 if answer is None else answer["status"]
    if code < 0:  # killed by a signal: so is this process, as the stage would have been
        sys.stdout.flush()
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _stage_of(argv: list[str]) -> str | None:
    args = iter(argv)
    for arg in args:
        if arg == "--params":
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


class WarmProcess:
    """`python -m MODULE ARGS` as a fork of the mlflow template, with pipes for stdin and stdout
    (text, line-buffered) and this process's stderr: what pipeline/tracking/run_log.py uses of
    subprocess.Popen."""

    def __init__(self, module: str, conn: socket.socket, pid: int, stdin, stdout) -> None:
        self.module, self.conn, self.pid, self.stdin, self.stdout = module, conn, pid, stdin, stdout
        self.returncode: int | None = None

    @classmethod
    def start(cls, module: str, args: list[str], env: dict[str, str]) -> "WarmProcess | None":
        child_in, to_child = os.pipe()
        from_child, child_out = os.pipe()
        asked = _ask("mlflow", _request("module", env, ["-m", *args], None, module) | {"stdio": [True] * 3},
                     [child_in, child_out, 2], env)
        os.close(child_in)
        os.close(child_out)
        if asked is None:
            os.close(to_child)
            os.close(from_child)
            return None
        return cls(module, *asked, open(to_child, "w", buffering=1), open(from_child))

    def terminate(self) -> None:
        if self.returncode is None:
            _kill(self.pid, signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.conn.settimeout(timeout)
            try:
                answer = _read_line(self.conn)
            except TimeoutError:
                raise subprocess.TimeoutExpired(f"python -m {self.module}", timeout) from None
            self.returncode = 1 if answer is None else answer["status"]
            self.conn.close()
        return self.returncode


# ---------------------------------------------------------------- the template's side

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


# ---------------------------------------------------------------- starting and stopping

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
        subprocess.Popen([sys.executable, "-m", "pipeline.warm", str(root), kind, str(parent or 0), str(idle_s)],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=env)
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
