"""The asking side of warm starts (pipeline/warm/__init__.py): what a stage process and its
RunLog import. Standard library only: a `pipeline` command pays nothing for it where no
template serves."""
from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

ENV = "PIPELINE_WARM"
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
