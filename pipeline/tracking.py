"""Everything MLflow, in one place: where runs go, what each run records, how runs are grouped."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # relative: DVC runs stages at the repo root
GROUP_ENV = "PIPELINE_GROUP"


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


CHECK_TIMEOUT_S = 5.0
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
# Stores MLflow reaches by itself, with nothing to check here first (Databricks' workspaces).
OTHER_SCHEMES = ("databricks", "databricks-uc", "uc")


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
                           f"timeout: {_describe(e)})",
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


def _describe(error: Exception) -> str:
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
        raise _store_error(f"the database does not accept a connection ({_describe(e)})",
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


def _mlflow():
    import mlflow  # heavy import, only in the stages that track

    uri = tracking_uri()
    if redacted(uri) != uri:
        # MLflow prints "View run ... at: <the URI>" at each run's end, password and all, into
        # stage logs that CI keeps; the run id is in our own log line anyway.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    mlflow.set_tracking_uri(uri)
    return mlflow


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_group(params_file: Path = Path("params.yaml")) -> str:
    """The tag shared by the runs of one `dvc repro`: same code commit and same params.yaml.

    DVC runs each stage in its own process, so the group is derived from what they share;
    set PIPELINE_GROUP to name a group explicitly.
    """
    if os.environ.get(GROUP_ENV):
        return os.environ[GROUP_ENV]
    digest = hashlib.sha256(params_file.read_bytes()).hexdigest()[:8] if params_file.exists() else "noparams"
    return f"{git_commit()[:10]}-{digest}"


# MLflow 3's UI opens an experiment by its kind; without the tag it guesses GenAI and opens on
# traces. The value is the one the UI names CUSTOM_MODEL_DEVELOPMENT (MLflow 3.17's build).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def open_experiment(dataset: str):
    """mlflow, its store opened and the dataset's experiment made the active one, declared as
    model training so the UI opens it on its runs."""
    mlflow = _mlflow()
    experiment = mlflow.set_experiment(dataset)
    if experiment.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        mlflow.MlflowClient(tracking_uri()).set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
    return mlflow


def start_training_run(dataset: str, model: str, params: dict[str, Any], tags: dict[str, str]) -> str:
    """Opens the model's run in the dataset's experiment, its prepared data as the run's dataset
    input; returns its id (left active)."""
    from pipeline import paths

    mlflow = open_experiment(dataset)
    seed = tags.get("seed")
    command = f"pipeline train --dataset {dataset} --model {model}"
    run = mlflow.start_run(
        run_name=f"{model}-seed{seed}" if seed else model,
        tags={"model": model, "dataset": dataset, "git_commit": git_commit(),
              "pipeline_group": run_group(),
              # The UI's Source column: the stage's command, not this logging child's file name.
              "mlflow.source.name": command, "mlflow.source.type": "LOCAL",
              "mlflow.project.entryPoint": command, **tags},
    )
    mlflow.log_params(params)
    if paths.prepared_file(dataset).exists():
        log_dataset(run.info.run_id, **prepared_dataset(dataset, "training", {
            split: int(params[f"{split}_size"]) for split in ("train", "val", "test") if f"{split}_size" in params}))
    return run.info.run_id


def prepared_dataset(dataset: str, context: str, sizes: dict[str, int]) -> dict:
    """log_dataset()'s arguments for the dataset's prepared file."""
    from pipeline import paths

    prepared = paths.prepared_file(dataset)
    # One name per use: MLflow keeps a run's input of a (name, digest) once, whatever its context.
    name = f"{dataset}-prepared" if context == "training" else f"{dataset}-prepared-{context}"
    return {"name": name, "digest": file_md5(prepared), "source": str(prepared.resolve()),
            "context": context, "sizes": sizes}


def log_epoch(metrics: dict[str, float], epoch: int) -> None:
    _mlflow().log_metrics(metrics, step=epoch)


def end_run(status: str = "FINISHED") -> None:
    _mlflow().end_run(status=status)


def reopen_training_run(run_id: str) -> set[int]:
    """Makes an interrupted training run the active one again; returns the epochs it logged."""
    mlflow = _mlflow()
    mlflow.start_run(run_id=run_id)
    return {m.step for m in mlflow.MlflowClient(tracking_uri()).get_metric_history(run_id, "val_accuracy")}


def describe_failure(what: str, error: Exception) -> str:
    """`what` failed, with the store and the error, safe to print."""
    return f"{what} in {redacted(tracking_uri())} ({_describe(error)})"


def log_evaluation(run_id: str, metrics: dict[str, float], artifacts: list[Path], model, servable: dict,
                   test_split: dict | None = None) -> None:
    """Adds test metrics, figures, the test split as a dataset input and the logged model (which
    takes image files, pipeline.serving) to the training run.

    `servable`: {"preset", "spec", "images"} -- how the model reads images, and real ones for its
    input example; `test_split`: dataset_input()'s arguments for the test split.
    """
    import time

    from mlflow.entities import Metric

    mlflow = _mlflow()
    # Through the client, not start_run: the run keeps the end time its training gave it, so the
    # UI's duration is the training's.
    client = mlflow.MlflowClient(tracking_uri())
    mlflow.set_experiment(experiment_id=client.get_run(run_id).info.experiment_id)  # where its model goes
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    if test_split:
        log_dataset(run_id, **test_split)
    _log_model(run_id, model, servable)


def _log_model(run_id: str, model, servable: dict) -> None:
    import numpy as np
    import pandas as pd
    import PIL
    import torch
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema

    from pipeline import serving

    spec = servable["spec"]
    requirements = [f"torch=={torch.__version__.split('+')[0]}"] if isinstance(model, torch.nn.Module) else []
    # Explicit requirements: MLflow's inference of them imports the model in a subprocess. Pillow
    # decodes the posted images; numpy does the NumPy CNN's maths.
    requirements += [f"numpy=={np.__version__}", f"pillow=={PIL.__version__}"]
    binary = len(spec["classes"]) == 2
    outputs = [ColSpec("string", "class"), ColSpec("double", "probability")]
    if binary:
        outputs += [ColSpec("double", f"{spec['classes'][1]}_probability"), ColSpec("double", "threshold")]

    # The example is a real test image, as a client posts it: the UI shows it, and at logging
    # MLflow serves it once through pipeline.serving's loader (a broken model fails here).
    input_example = pd.DataFrame({serving.IMAGE_COLUMN: [serving.encode_png(img) for img in servable["images"]]})
    Model.log(
        artifact_path=None, name="model", flavor=serving, run_id=run_id, network=model, spec=spec,
        preset=servable["preset"],
        # No input schema: one served model takes two forms (image files, tensors) that one MLflow
        # schema cannot describe; serving.ImageClassifier checks each request itself.
        signature=ModelSignature(outputs=Schema(outputs)), input_example=input_example,
        pip_requirements=requirements, code_paths=[str(Path(__file__).resolve().parent)],
    )


def log_dataset(run_id: str, name: str, digest: str, source: str, context: str, sizes: dict[str, int]) -> None:
    """A dataset input of the run (the UI's Dataset column): name, digest (the DVC md5 of the
    prepared file, so `dvc.lock` names the same bytes), source (its path) and the split sizes
    as its profile; `context`: "training" or "evaluation"."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    class PreparedSplits(MetaDataset):  # MetaDataset stores no profile of its own
        @property
        def profile(self):
            return sizes

        def to_dict(self):
            return {**super().to_dict(), "profile": json.dumps(sizes)}

    import warnings

    with warnings.catch_warnings():
        # MLflow registers its local artifact source twice (file:// and no scheme) and warns it
        # picked one of the two, which are the same class.
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
        dataset = PreparedSplits(resolve_dataset_source(source), name=name, digest=digest)
    client = _mlflow().MlflowClient(tracking_uri())
    client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(),
                                                     [InputTag("mlflow.data.context", context)])])


def file_md5(path: Path) -> str:
    """The md5 DVC records for a file output in dvc.lock."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class TrackingError(RuntimeError):
    """The MLflow store cannot be reached, or lacks a run the pipeline's files point to."""


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
                f"tracking store {redacted(tracking_uri())}: {_describe(e)}. "
                f"Set MLFLOW_TRACKING_URI to the store the train stage used, or re-run the train stage."
            ) from e


def log_report_artifacts(run_id: str, files: list[Path], artifact_path: str = "report") -> None:
    """Adds the report's figures of one model to its training run, under `artifact_path`/.

    Through the client, not start_run: the run stays FINISHED, its end time untouched.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    for path in files:
        try:
            client.log_artifact(run_id, str(path), artifact_path)
        except Exception as e:
            raise TrackingError(f"cannot log {Path(path).name} to MLflow run {run_id} in "
                                f"{redacted(tracking_uri())}: {_describe(e)}") from e


def register_champion(name: str, alias: str, run_id: str, test_accuracy: float,
                      tags: dict[str, str]) -> dict:
    """Points `name@alias` in the Model Registry at the logged model of `run_id`; returns
    {name, version, run_id, change}, change being "new version", "alias moved" or "none".

    A new version only when no version of `name` holds this run yet, so re-running with the same
    champion changes nothing. The run must hold the `test_accuracy` its metrics file says (files
    left from another training would register the wrong weights) and a
    logged model with a signature and an input example (what `mlflow models serve` checks
    requests against).
    """
    mlflow = _mlflow()
    client = mlflow.MlflowClient(tracking_uri())
    check_runs_exist({f"{name}'s champion": run_id})
    logged = client.get_run(run_id).data.metrics.get("test_accuracy")
    if logged is None or abs(logged - test_accuracy) > 1e-9:
        raise TrackingError(
            f"MLflow run {run_id} holds test_accuracy {logged}, its metrics file {test_accuracy}: "
            f"the metrics file and the run come from different trainings. Re-run "
            f"`pipeline evaluate` for {tags.get('model', 'this model')} (or `dvc repro`).")
    model_uri = f"runs:/{run_id}/model"
    try:
        info = mlflow.models.get_model_info(model_uri)
    except Exception as e:  # no such artifact, unreadable MLmodel, unreachable artifact store alike
        raise TrackingError(f"MLflow run {run_id} has no logged model at {model_uri} ({_describe(e)}); "
                            f"re-run `pipeline evaluate`, which logs it") from e
    if info.signature is None or info.saved_input_example_info is None:
        raise TrackingError(f"the model logged by MLflow run {run_id} lacks a signature or an input "
                            f"example, which serving needs; re-run `pipeline evaluate` to log it again")

    current = _version_by_alias(client, name, alias)
    if current is not None and current.run_id == run_id:
        return {"name": name, "version": int(current.version), "run_id": run_id, "change": "none"}
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    # From the logged model itself (models:/m-...): the run's `model` path is only an alias of it.
    version = existing[0] if existing else mlflow.register_model(info.model_uri, name, tags=tags)
    client.set_registered_model_alias(name, alias, version.version)
    return {"name": name, "version": int(version.version), "run_id": run_id,
            "change": "alias moved" if existing else "new version"}


def _version_by_alias(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":  # no such model or alias yet: first registration
            return None
        raise TrackingError(f"cannot read {name}@{alias} from the Model Registry of {redacted(tracking_uri())}: "
                            f"{_describe(e)}") from e


def resolve_registered(name: str, alias: str) -> str:
    """The run id behind `name@alias`; TrackingError saying how to register it when it is missing."""
    client = _mlflow().MlflowClient(tracking_uri())
    version = _version_by_alias(client, name, alias)
    if version is None:
        raise TrackingError(f"no model is registered as {name}@{alias} in {redacted(tracking_uri())}: run "
                            f"`pipeline register` (after the evaluate stages), or set "
                            f"MLFLOW_TRACKING_URI to the store where it was registered")
    return version.run_id


def run_record(run_id: str) -> tuple[dict[str, str], dict[str, str], dict[str, float]]:
    """(tags, params, metrics) of a run: what predict needs to rebuild its preprocessing."""
    check_runs_exist({"the model": run_id})
    data = _mlflow().MlflowClient(tracking_uri()).get_run(run_id).data
    return dict(data.tags), dict(data.params), dict(data.metrics)


class ModelServer:
    """`mlflow models serve` of `model_uri` on loopback, in this Python environment (no conda or
    virtualenv built per model), as a context manager: started and ready on entry, stopped with
    its worker processes on exit. MLFLOW_TRACKING_URI is passed on, so `models:/name@alias`
    resolves in the pipeline's store.
    """

    def __init__(self, model_uri: str, port: int | None = None, workers: int = 1, host: str = "127.0.0.1",
                 startup_timeout_s: float = 180.0) -> None:
        self.model_uri, self.host, self.workers = model_uri, host, workers
        self.port = port or _free_port(host)
        self.startup_timeout_s = startup_timeout_s
        self.url = f"http://{host}:{self.port}"
        self.process = None

    def __enter__(self) -> "ModelServer":
        import shutil
        import subprocess
        import sys
        import tempfile

        mlflow_cli = Path(sys.executable).parent / "mlflow"
        command = [str(mlflow_cli) if mlflow_cli.exists() else shutil.which("mlflow") or "mlflow",
                   "models", "serve", "-m", self.model_uri, "--env-manager", "local",
                   "-h", self.host, "-p", str(self.port), "-w", str(self.workers)]
        # A file, not a pipe: a pipe nobody reads fills up and blocks the server mid-request.
        self.log = tempfile.NamedTemporaryFile(prefix="mlflow-serve-", suffix=".log", delete=False)
        # Its own process group: uvicorn's workers are children of the CLI, and go with it.
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri()},
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
        import time
        import urllib.request

        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TrackingError(f"`mlflow models serve -m {self.model_uri}` exited with code "
                                    f"{self.process.returncode} before answering:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:  # not listening yet
                pass
            time.sleep(0.25)
        raise TrackingError(f"`mlflow models serve -m {self.model_uri}` did not answer {self.url}/ping "
                            f"within {self.startup_timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        import signal
        import subprocess

        if self.process is None:
            return
        # Signals go to the group this server was started in, and nowhere else.
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:  # a worker that outlived the CLI or ignored SIGTERM
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.process = None
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
