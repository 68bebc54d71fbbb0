"""The real servers of the tracking tests, started and stopped around a block: a throwaway
PostgreSQL cluster (Debian's) and `mlflow server` on it."""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.tracking.server import free_port, stop_process_group, wait_until_answering


def _postgres_bin() -> Path | None:
    """Debian's server binaries: on PATH (symlinks) or under /usr/lib/postgresql/<version>/bin."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def _server_owner() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as: it refuses root, so as root that is Debian's `postgres`."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root without a `postgres` account, and PostgreSQL refuses to run as "
                    "root: apt-get install -y postgresql creates it")


def _as_owner(owner, command: list[str], what: str, log: Path | None = None) -> None:
    prefix = ["runuser", "-u", owner.pw_name, "--"] if owner else []
    proc = subprocess.run(prefix + command, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
        pytest.fail(f"{what} failed ({' '.join(command)}):\n{proc.stdout}\n{proc.stderr}\n{tail}")


@contextlib.contextmanager
def postgres_cluster(user: str, password: str) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (password auth over TCP) holding an empty
    `mlflow` database owned by `user`; yields its SQLAlchemy URI, stopped and deleted afterwards."""
    import psycopg

    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found (no initdb on PATH or in "
                    "/usr/lib/postgresql/*/bin): apt-get install -y postgresql (.ci/run does)")
    owner = _server_owner()
    # Not under pytest's tmp dir: that is private to root, and the cluster's owner must reach it.
    root = Path(tempfile.mkdtemp(prefix="pytest-postgres-"))
    data, log, pwfile = root / "data", root / "server.log", root / "pwfile"
    pwfile.write_text(password + "\n")
    if owner:
        for path in (root, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = free_port("127.0.0.1")
    try:
        _as_owner(owner, [str(bin_dir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}",
                          "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"],
                  "initdb")
        _as_owner(owner, [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                          "-o", f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off", "start"],
                  "pg_ctl start", log)
        with psycopg.connect(host="127.0.0.1", port=port, user=user, password=password,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE mlflow")
        yield f"postgresql://{user}:{password}@127.0.0.1:{port}/mlflow"
    finally:
        if (data / "postmaster.pid").exists():
            prefix = ["runuser", "-u", owner.pw_name, "--"] if owner else []
            subprocess.run(prefix + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, artifacts_destination: Path, log_path: Path) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 over that store, serving artifacts itself (proxied, its default)
    from `artifacts_destination`; yields its URL once /health answers."""
    port = free_port("127.0.0.1")
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow_cli) if mlflow_cli.exists() else "mlflow", "server",
               "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(artifacts_destination),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # MLflow's job runner off, as README "Team tracking server" runs it: the pipeline submits no
    # MLflow jobs, and on a database store the runner starts eight processes, each importing mlflow
    # (31 s of the two cores in the server's first 40 s here; BENCHMARKS.md, "MLflow server job runner").
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log_path.open("wb") as log:
        # Its own process group: the CLI's uvicorn workers are stopped with it.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            problem = wait_until_answering(process, f"http://127.0.0.1:{port}/health", 180)
            if problem:
                pytest.fail(f"mlflow server {problem}:\n{log_path.read_text()[-3000:]}")
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process_group(process, grace_s=5)
