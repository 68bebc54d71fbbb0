"""`mlflow models serve` (or `pipeline serve`) of a logged model on loopback, started and stopped
from Python: what the serving tests and bench/serve_load.py talk to."""
from __future__ import annotations

import os
from pathlib import Path

from pipeline.tracking.store import TrackingError, tracking_uri


class ModelServer:
    """`mlflow models serve` of `model_uri` on loopback, in this Python environment (no conda or
    virtualenv built per model), as a context manager: started and ready on entry, stopped with
    its worker processes on exit. MLFLOW_TRACKING_URI is passed on, so `models:/name@alias`
    resolves in the pipeline's store. bounded: `pipeline serve` instead (the same app and
    answers; the model checked before it loads, a body over the limit refused unread).
    """

    def __init__(self, model_uri: str, port: int | None = None, workers: int = 1, host: str = "127.0.0.1",
                 startup_timeout_s: float = 180.0, bounded: bool = False) -> None:
        self.model_uri, self.host, self.workers, self.bounded = model_uri, host, workers, bounded
        self.port = port or free_port(host)
        self.startup_timeout_s = startup_timeout_s
        self.url = f"http://{host}:{self.port}"
        self.process = None

    def __enter__(self) -> "ModelServer":
        import shutil
        import subprocess
        import sys
        import tempfile

        if self.bounded:
            command = [sys.executable, "-m", "pipeline", "serve", "--model-uri", self.model_uri]
        else:
            mlflow_cli = Path(sys.executable).parent / "mlflow"
            command = [str(mlflow_cli) if mlflow_cli.exists() else shutil.which("mlflow") or "mlflow",
                       "models", "serve", "-m", self.model_uri, "--env-manager", "local"]
        command += ["-h" if not self.bounded else "-H", self.host, "-p", str(self.port), "-w", str(self.workers)]
        # A file, not a pipe: a pipe nobody reads fills up and blocks the server mid-request.
        self.log = tempfile.NamedTemporaryFile(prefix="mlflow-serve-", suffix=".log", delete=False)
        # Its own process group: uvicorn's workers are children of the CLI, and go with it.
        # `mlflow models serve` execs `uvicorn` by name: this environment's, found first on PATH
        # even where the environment is not activated (`.venv/bin/pytest`).
        path = os.pathsep.join(filter(None, [str(Path(sys.executable).parent), os.environ.get("PATH")]))
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": tracking_uri()},
                                        start_new_session=True)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def _wait_until_ready(self) -> None:
        problem = wait_until_answering(self.process, f"{self.url}/ping", self.startup_timeout_s)
        if problem:
            what = "pipeline serve --model-uri" if self.bounded else "mlflow models serve -m"
            raise TrackingError(f"`{what} {self.model_uri}` {problem}:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        stop_process_group(self.process, grace_s=15)
        self.process = None
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def wait_until_answering(process, url: str, timeout_s: float) -> str | None:
    """None once `url` answers 200; else what went wrong (the process exited, or the time ran out)."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"exited with code {process.returncode} before answering"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return None
        except OSError:  # not listening yet
            pass
        time.sleep(0.25)
    return f"did not answer {url} within {timeout_s:.0f} s"


def stop_process_group(process, grace_s: float) -> None:
    """SIGTERM to the process group `process` leads (started with start_new_session), SIGKILL to
    what is left after `grace_s`: uvicorn's workers are the CLI's children and go with it."""
    import signal
    import subprocess

    # Signals go to the group this server was started in, and nowhere else.
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:  # a worker that outlived the CLI or ignored SIGTERM
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
