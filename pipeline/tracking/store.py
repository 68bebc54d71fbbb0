"""Where MLflow runs go, and whether that store can take them: checked in seconds, before any
training starts, with errors that say what to change (and never print a password)."""
from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import PipelineError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # relative: DVC runs stages at the repo root


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def redacted(uri: str) -> str:
    """`uri` with any password replaced by ***: what error messages and logs may show."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _uri_source() -> str:
    """How the user chose the store, so an error message says what to change."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return f"MLFLOW_TRACKING_URI={redacted(tracking_uri())}"
    return f"the default tracking URI {DEFAULT_TRACKING_URI} (MLFLOW_TRACKING_URI is unset)"


CHECK_TIMEOUT_S = 10.0  # one try: long enough for a busy laptop, short enough to fail in seconds
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


# Stores MLflow reaches by itself, with nothing to check here first (Databricks' workspaces).
OTHER_SCHEMES = ("databricks", "databricks-uc", "uc")


class TrackingError(PipelineError, RuntimeError):
    """The MLflow store cannot be reached, or lacks a run the pipeline's files point to."""


def check_store() -> None:
    """Fails in seconds when the tracking store cannot take runs, before any training starts.

    MLflow's own client retries an unreachable server for minutes, and only at the first
    logging call: here one request without retries for a server, and for a local store what
    can be checked without touching it.
    """
    uri = tracking_uri()
    scheme = uri.partition(":")[0].partition("+")[0].lower() if "://" in uri else "file"
    if scheme in ("http", "https"):
        _check_server(uri)
    elif scheme in DATABASE_SCHEMES:
        _check_database(uri, scheme)
    elif scheme == "file":
        store = Path(uri.removeprefix("file://"))
        _check_directory(store.parent, "the folder that holds the store")
        _check_not_in_temporary_copy(store)
    elif scheme not in OTHER_SCHEMES:
        raise _store_error(f"{scheme!r} is not a kind of tracking store MLflow knows",
                           "Set it to a tracking server (http://host:5000), a database "
                           "(sqlite:///path/mlflow.db, postgresql://user:password@host/db) or a folder")


def check_store_exists() -> None:
    """Fails unless a local store (sqlite file, folder) is already there: for commands that only
    read runs, where MLflow would create an empty store and then report the runs missing."""
    uri = tracking_uri()
    scheme = uri.partition(":")[0].partition("+")[0].lower() if "://" in uri else "file"
    if scheme == "sqlite":
        from sqlalchemy.engine import make_url

        store = make_url(uri).database
    elif scheme == "file":
        store = uri.removeprefix("file://")
    else:
        return
    if store and store != ":memory:" and not Path(store).exists():
        raise _store_error(f"no tracking store at {Path(store).resolve()}",
                           "Run the pipeline first (`dvc repro`: train, evaluate and register), or set "
                           "MLFLOW_TRACKING_URI to the store it tracked into")


def _store_error(problem: str, fix: str, offer_default: bool = True) -> TrackingError:
    fallback = (f", or unset MLFLOW_TRACKING_URI to track into {DEFAULT_TRACKING_URI}"
                if offer_default and os.environ.get("MLFLOW_TRACKING_URI") else "")
    return TrackingError(f"{_uri_source()}: {problem}. {fix}{fallback}.")


def _check_server(uri: str) -> None:
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        # A cheap call of the tracking API itself: /health would answer for a server that
        # refuses this client's credentials, or for an MLflow path mounted elsewhere.
        response = http_request(get_default_host_creds(uri), "/api/2.0/mlflow/experiments/search",
                                "POST", max_retries=0, backoff_factor=0, timeout=CHECK_TIMEOUT_S,
                                json={"max_results": 1})
    except Exception as e:  # refused, unresolvable host, TLS failure, timeout alike
        raise _store_error(f"no MLflow tracking server answers there (one try, {CHECK_TIMEOUT_S:.0f} s "
                           f"timeout: {describe(e)})",
                           "Start the server (`mlflow server --host ... --port ...`) or correct the URI") from None
    if response.status_code in (401, 403):
        raise _store_error(f"the server refuses this client's credentials (HTTP {response.status_code})",
                           "Set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
                           "MLFLOW_TRACKING_TOKEN) to an account of the server")
    if response.status_code != 200 or not isinstance(_json_or_none(response), dict):
        raise _store_error(f"HTTP {response.status_code} without MLflow's answer from its tracking API: not "
                           f"an MLflow tracking server, or the URI's path is wrong",
                           "Point MLFLOW_TRACKING_URI at the server's root, e.g. http://host:5000")


def _json_or_none(response):
    try:
        return response.json()
    except ValueError:  # an HTML page or plain text: some other web server
        return None


def describe(error: Exception) -> str:
    """An exception's type and first line, safe to print: the client's messages quote the URL."""
    first = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {_redact_text(first, tracking_uri())}"


def _redact_text(text: str, uri: str) -> str:
    from urllib.parse import urlsplit

    password = urlsplit(uri).password
    return text.replace(password, "***") if password else text


def _check_database(uri: str, scheme: str) -> None:
    from sqlalchemy.engine import make_url

    try:
        url = make_url(uri)
        url.get_dialect().import_dbapi()
    except ImportError as e:
        raise _store_error(f"the Python driver of the {scheme} store is not installed ({e})",
                           f"Install the package that provides `{e.name}` (PostgreSQL's, psycopg, comes "
                           f"with `pip install -e .`)") from None
    except Exception as e:  # malformed URI or a dialect SQLAlchemy does not know
        raise _store_error(f"not a database URI SQLAlchemy can read ({type(e).__name__})",
                           "Write it as e.g. postgresql://user:password@host:5432/db") from None
    if scheme in ("postgresql", "mysql"):
        _check_connects(url)
    if scheme == "sqlite" and url.database not in (None, "", ":memory:"):
        _check_directory(Path(url.database).parent, "the folder of the sqlite file")
        _check_not_in_temporary_copy(Path(url.database))


def _check_connects(url) -> None:
    """One connection with a short timeout: MLflow's own store retries a dead database for minutes."""
    from sqlalchemy import create_engine, pool

    engine = create_engine(url, poolclass=pool.NullPool, connect_args={"connect_timeout": int(CHECK_TIMEOUT_S)})
    try:
        with engine.connect():
            pass
    except Exception as e:  # refused, unknown host, wrong password, missing database alike
        raise _store_error(f"the database does not accept a connection ({describe(e)})",
                           "Start the database, or correct the host, port, user, password or database "
                           "name in the URI") from None
    finally:
        engine.dispose()


def _check_not_in_temporary_copy(store: Path) -> None:
    """`dvc exp run --queue` (or --temp) runs the stages in a copy of the repository under
    .dvc/tmp/exps/ that DVC deletes afterwards: a store there would vanish with every run in it."""
    parts = store.resolve().parts
    if any(parts[i:i + 3] == (".dvc", "tmp", "exps") for i in range(len(parts))):
        raise _store_error(f"the store would be {store.resolve()}, inside the temporary copy DVC runs "
                           f"queued and --temp experiments in, and deleted with it",
                           "Set MLFLOW_TRACKING_URI to an absolute store (a tracking server, or "
                           "sqlite:////absolute/path/mlflow.db) before `dvc queue start`", offer_default=False)


def _check_directory(folder: Path, what: str) -> None:
    folder = folder if str(folder) else Path(".")
    if not folder.is_dir():
        raise _store_error(f"{what}, {folder.resolve()}, does not exist", f"Create {folder} first")
    if not os.access(folder, os.W_OK):
        raise _store_error(f"{what}, {folder.resolve()}, is not writable", "Use a folder you may write to")


def connect():
    import mlflow  # heavy import, only in the stages that track

    uri = tracking_uri()
    if redacted(uri) != uri:
        # MLflow prints "View run ... at: <the URI>" at each run's end, password and all, into
        # stage logs that CI keeps; the run id is in our own log line anyway.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    mlflow.set_tracking_uri(uri)
    _initialise_sqlite_store(uri)
    return mlflow


_INITIALISED: set[str] = set()  # sqlite stores this process has opened (connect() runs per epoch)
# Seconds a stage waits for another to finish creating or upgrading the sqlite store.
STORE_LOCK_TIMEOUT_S = 300.0


def store_lock_file(database: str | Path) -> Path:
    """The lock of a sqlite store: in the temp folder, named after the store's absolute path, so
    that no file is left in the workspace (processes on one machine share the temp folder, and a
    sqlite file is not shared between machines)."""
    import hashlib
    import tempfile

    key = hashlib.sha256(str(Path(database).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"pipeline-mlflow-store-{key}.lock"


def _initialise_sqlite_store(uri: str) -> None:
    """Creates (or upgrades) a sqlite store's tables in one process at a time, under a file lock
    (store_lock_file). MLflow creates them on the first connection of each process, and two
    processes doing it at once on a new file race its schema migration ("table _alembic_tmp_...
    already exists"), failing both and at times leaving the store unusable for every later run.
    On a store already made, this is one schema check under a lock held for milliseconds."""
    if uri.partition(":")[0].lower() != "sqlite":
        return
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    if not database or database == ":memory:" or uri in _INITIALISED:
        return
    import mlflow
    from filelock import FileLock, Timeout

    lock = FileLock(str(store_lock_file(database)), timeout=STORE_LOCK_TIMEOUT_S)
    try:
        with lock:
            # The first use of a client opens (and caches, for this process) the store: tables
            # created and migrations run here, in this process only.
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
            relocate_copied_store(Path(database))
        _INITIALISED.add(uri)
    except Timeout:
        raise _store_error(f"another process has held {lock.lock_file} for {STORE_LOCK_TIMEOUT_S:.0f} s while "
                           f"creating the store {database}", "Wait for it to finish, or stop the pipeline "
                           "or MLflow process that holds it") from None


# Where a sqlite store records its artifacts' absolute paths (MLflow's schema as of 3.17).
ARTIFACT_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                    ("logged_models", "artifact_location"), ("model_versions", "storage_location"),
                    ("model_versions", "source"))


def relocate_copied_store(database: Path) -> None:
    """A sqlite store names its artifacts by absolute path (by default mlruns/ beside the file).
    In a copied or moved workspace those paths still name the original's folder: the copy's runs
    would log into the original's mlruns/ and read its models from there (or fail once it is
    gone). Where the copy holds the experiment's folder under its own mlruns/, every path under
    the original's mlruns/ is moved to the copy's, in one transaction, and said in the log.
    Paths elsewhere (an artifact root the user chose) are left alone."""
    import contextlib
    import logging
    import sqlite3

    here = database.resolve().parent / "mlruns"
    with contextlib.closing(sqlite3.connect(str(database), timeout=STORE_LOCK_TIMEOUT_S)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return
        roots = set()
        for (location,) in db.execute("SELECT artifact_location FROM experiments"):
            path = Path(str(location).removeprefix("file://"))
            if (path.parent.name == "mlruns" and path.parent != here and (here / path.name).is_dir()
                    and not (path.parent.exists() and path.parent.samefile(here))):
                roots.add(str(path.parent))
        if not roots:
            return
        with db:  # one transaction: all paths moved, or none
            for old in sorted(roots):
                for scheme in ("", "file://"):
                    prefix = f"{scheme}{old}/"
                    for table, column in ARTIFACT_COLUMNS:
                        if table in tables:
                            db.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                                       f"WHERE substr({column}, 1, ?) = ?",
                                       (f"{scheme}{here}/", len(prefix) + 1, len(prefix), prefix))
    logging.getLogger(__name__).warning(
        "%s was copied or moved from %s: its runs' artifacts are now read from and logged to %s",
        database, ", ".join(sorted(str(Path(r).parent) for r in roots)), here)


def describe_failure(what: str, error: Exception) -> str:
    """`what` failed, with the store and the error, safe to print."""
    return f"{what} in {redacted(tracking_uri())} ({describe(error)})"


def check_runs_exist(runs: dict[str, str]) -> None:
    """Fails unless every run (label -> run id, from the checkpoints) is in the tracking store.

    Checked before the report draws anything: its figures are logged to these runs at the end.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    for label, run_id in runs.items():
        try:
            client.get_run(run_id)
        except Exception as e:  # unreachable server, unreadable sqlite file, unknown run id alike
            raise TrackingError(
                f"MLflow run {run_id} of {label} (recorded in its checkpoint) cannot be read from the "
                f"tracking store {redacted(tracking_uri())}: {describe(e)}. "
                f"Set MLFLOW_TRACKING_URI to the store the train stage used, or re-run the train stage."
            ) from e
