"""Fixtures: the real params.yaml shrunk, the real MNIST and crack files from ../shared, a real MLflow store."""
from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
from pathlib import Path

import pytest
import yaml

from pipeline import artifacts, evaluate, register, train
from pipeline.config import Params, merge_overrides, parse_params

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
SHARED_CRACK = REPO.parent / "shared" / "data" / "crack"


def real_params_dict() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def shrunk_params_dict(models: list[str] | None = None, epochs: int = 1, train_limit: int | None = None,
                       crack_models: list[str] | None = None, **overrides) -> dict:
    """The real params.yaml with small stratified slices, few epochs and (optionally) fewer models.

    Each dataset's slice and offline copy are its record's (`shrink`, `offline` in its module:
    crack's photos cached small, MNIST's training set cut; both read from ../shared/data).
    Image-folder models read the cached side and load no ImageNet weights (none can be fetched
    here). One seed per model (the top-level `seeds`) unless a test asks for more.
    """
    # Imported here, not at the top: the registry is read only by this function.
    from pipeline.data.datasets import registered

    raw = copy.deepcopy(real_params_dict())
    if models is not None:
        raw["train"]["mnist"] = {m: raw["train"]["mnist"][m] for m in models}
    if crack_models is not None:
        raw["train"]["crack"] = {m: raw["train"]["crack"][m] for m in crack_models}
    if crack_models == []:  # a dataset without models is left out (params.yaml `datasets`)
        raw["datasets"] = ["mnist"]
    settings: dict = {}
    for name, record in registered().items():
        if name in raw["download"]:
            settings.update(record.shrink)
            settings.update({key: str(SHARED_MNIST.parent / folder) for key, folder in record.offline.items()})
    if train_limit is not None:
        settings["prepare.mnist.train_limit"] = train_limit
    dataset_overrides: dict = {}
    for key, value in settings.items():
        *parents, last = key.split(".")
        node = dataset_overrides
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    merge_overrides(raw, dataset_overrides)
    side = raw["prepare"]["crack"]["image_size"]
    merge_overrides(raw, {
        "train": {
            "mnist": {m: {"epochs": epochs, "seeds": None} for m in raw["train"]["mnist"]},
            "crack": {m: {"epochs": epochs, "seeds": None, "pretrained": False, "input_size": side,
                          # progressive needs an epoch on the head and one on everything
                          **({"epochs": max(2, epochs), "head_epochs": 1} if "head_epochs" in cfg else {})}
                      for m, cfg in raw["train"]["crack"].items()},
        },
    })
    merge_overrides(raw, overrides)
    return raw


def shrunk_params(**kwargs) -> Params:
    return parse_params(shrunk_params_dict(**kwargs), source="test params")


# Files that share a session fixture too costly to build on every worker (pytest-xdist builds a
# session fixture once per worker that uses it): they run on one worker. registered_store trains,
# evaluates and registers three models, about 30 s.
SAME_WORKER = {"test_predict.py": "registered_store", "test_serving.py": "registered_store"}


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: `pytest -p no:xdist` still runs
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` (pyproject.toml: a file's tests on one worker, so a module-scoped `dvc
    repro` is built once), with the files of SAME_WORKER as one unit. Not xdist's `loadgroup`:
    its group marks rewrite a node id that pytest 9.2 no longer reads."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFixtureScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = super()._split_scope(nodeid)
            return SAME_WORKER.get(Path(file).name, file)

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(config, items) -> None:
    """The files that run a real `dvc repro` first (stable otherwise): a file runs on one worker,
    and the longest ones starting last would leave one worker alone."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture(scope="session")
def shared_mnist() -> Path:
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"the real MNIST files are expected in {SHARED_MNIST} (../shared beside the repo)")
    return SHARED_MNIST


@pytest.fixture(scope="session")
def shared_crack() -> Path:
    if not all((SHARED_CRACK / cls).is_dir() for cls in ("Positive", "Negative")):
        pytest.fail(f"the real crack images are expected in {SHARED_CRACK}/Positive and /Negative "
                    "(../shared beside the repo)")
    return SHARED_CRACK


@pytest.fixture(autouse=True)
def _mlflow_follows_the_environment():
    """Each test starts with MLflow reading its store from the environment: the stages'
    mlflow.set_tracking_uri() leaves a process-wide URI behind, which would outlive a test's store."""
    yield
    import mlflow

    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """A new MLflow sqlite store, made once per worker, for new_store() to copy. MLflow makes a
    store's tables through its whole chain of schema migrations: 0.86-0.94 s, against 0.05 s to
    open a copy of a made one (BENCHMARKS.md, "The test suite"), and some 30 tests
    and fixtures each need a new store. The tests about making a store make their own
    (tests/test_concurrent_store.py; a missing store in test_bad_input.py, test_tracking_server.py)."""
    import mlflow

    folder = tmp_path_factory.mktemp("empty_store")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(folder)  # where MLflow puts experiment 0's artifacts: no test logs there
        # A client of its own, not pipeline.tracking.store.connect(): that sets MLflow's process-wide
        # URI, which the test that first asks for this fixture would then log to.
        mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments(max_results=1)
    return folder / "mlflow.db"


def new_store(empty_store: Path, folder: Path) -> str:
    """A copy of empty_store as folder/mlflow.db, as a stage run in `folder` would make it there
    (its experiment 0 keeps its artifacts in folder/mlruns/0); its URI."""
    import sqlite3

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty_store, folder / "mlflow.db")
    with contextlib.closing(sqlite3.connect(folder / "mlflow.db")) as db, db:
        db.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)",
                   (str(empty_store.parent / "mlruns"), str(folder / "mlruns")))
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch, empty_store) -> str:
    """A real MLflow store (sqlite) in a temp dir, used by every stage through the env var."""
    uri = new_store(empty_store, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PIPELINE_GROUP", "pytest")
    return uri


@pytest.fixture(scope="session")
def prepared_workspace(tmp_path_factory, shared_mnist, shared_crack) -> Path:
    """A workspace where download + prepare ran once: MNIST on a 2,000-image stratified slice,
    crack on 400 images at 32x32."""
    from pipeline import download, prepare

    ws = tmp_path_factory.mktemp("workspace")
    old = os.getcwd()
    os.chdir(ws)
    try:
        params = shrunk_params()
        for dataset in ("mnist", "crack"):
            download.main(params, dataset)
            prepare.main(params, dataset)
    finally:
        os.chdir(old)
    return ws


@pytest.fixture
def workspace(prepared_workspace, monkeypatch) -> Path:
    monkeypatch.chdir(prepared_workspace)
    return prepared_workspace


@contextlib.contextmanager
def inside(root: Path):
    """The working folder and MLflow store (its sqlite file) of the workspace `root`, for a block."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(root)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        monkeypatch.setenv("PIPELINE_GROUP", "pytest-serving")
        yield


def train_evaluate_register(root: Path, prepared_workspace: Path) -> Params:
    """In `root` (a fresh folder with a copy of the prepared slices): logreg and mlp for one epoch
    on 1,800 MNIST images, crack_cnn for 3 on 240 crack images at 32x32, each evaluated, then
    `register`."""
    for dataset in ("mnist", "crack"):
        (root / "data" / dataset).mkdir(parents=True)
        shutil.copy(prepared_workspace / artifacts.prepared_file(dataset), root / artifacts.prepared_file(dataset))
    # mlp at the course's plain Adam 1e-3, batch 64: in one epoch it beats logreg (its default
    # one-cycle recipe with augmentation needs its 30 epochs), so the champion is not the first.
    mlp = {"lr": 0.001, "batch_size": 64, "schedule": "constant", "augment": False}
    raw = shrunk_params_dict(models=["logreg", "mlp"], crack_models=["crack_cnn"], epochs=1,
                             train={"mnist": {"mlp": mlp}, "crack": {"crack_cnn": {"epochs": 3}}})
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))  # for `pipeline predict`
    params = parse_params(raw)
    for dataset in params.train:
        for model in params.models(dataset):
            train.main(params, dataset, model)
            evaluate.main(params, dataset, model)
    register.main(params)
    return params


@pytest.fixture(scope="session")
def registered_store(tmp_path_factory, prepared_workspace, empty_store) -> tuple[Path, Params]:
    """A workspace whose MNIST (logreg, mlp) and crack (crack_cnn) models are trained, evaluated
    and registered as champions in a real sqlite MLflow store, built once: (folder, params)."""
    root = tmp_path_factory.mktemp("registered")
    new_store(empty_store, root)
    with inside(root):
        return root, train_evaluate_register(root, prepared_workspace)


@pytest.fixture
def registered(registered_store) -> tuple[Path, Params]:
    """registered_store, with the test inside it (working folder and MLflow store)."""
    with inside(registered_store[0]):
        yield registered_store


@contextlib.contextmanager
def served_champion(registered_store: tuple[Path, Params], dataset: str, bounded: bool = False):
    """`mlflow models serve` (bounded: `pipeline serve`) of the dataset's registered champion, on loopback."""
    from pipeline.tracking.registry import champion_uri
    from pipeline.tracking.server import ModelServer

    with contextlib.ExitStack() as stack:
        with inside(registered_store[0]):  # the store the champion is registered in
            server = stack.enter_context(ModelServer(champion_uri(dataset), bounded=bounded))
        yield server


def ctrl_c_once(command: list[str], appears: Path, timeout_s: float = 120, **popen) -> tuple[int, str]:
    """Starts `command` in its own process group, presses Ctrl-C (SIGINT to the whole group) once
    `appears` exists, and returns (exit code, stderr)."""
    return signal_once(command, appears, signal.SIGINT, timeout_s=timeout_s, **popen)


def signal_once(command: list[str], appears: Path, signum: int, group: bool = True, sigint_ignored: bool = False,
                timeout_s: float = 120, **popen) -> tuple[int, str]:
    """Starts `command` in its own process group and sends it `signum` once `appears` exists: to
    the whole group (as a terminal's Ctrl-C or a shell stopping a job does) or, `group` False, to
    the process alone. `sigint_ignored`: the process starts with SIGINT ignored, as a script's
    background job (`cmd &` in a non-interactive shell) or `nohup` leaves it. Returns (exit code
    as a shell reads it, stderr). The command must still be running then: a test makes it long
    (many epochs) beside the event it waits for, and fails if it ended first."""
    import subprocess
    import threading
    import time

    def start() -> None:
        if sigint_ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=start if sigint_ignored else None, **popen)
    # stderr is read all along, so that a chatty process never blocks on a full pipe.
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 600  # a hung start fails, however slow the machine
        while not appears.exists():
            assert proc.poll() is None, f"ended ({proc.returncode}) before {appears} appeared:\n{''.join(err)}"
            assert time.monotonic() < deadline, f"no {appears} after 600 s:\n{''.join(err)}"
            time.sleep(0.01)
        assert proc.poll() is None, f"{command} ended before the signal: make it longer"
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        proc.wait(timeout=timeout_s)
        reader.join(timeout_s)
        try:  # the stage waits for what it started (the MLflow child): nothing of the group is left
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"a process of {command}'s group outlived it")
        except ProcessLookupError:
            pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    code = proc.returncode
    return (128 - code if code < 0 else code), "".join(err)
