"""The train stage's MLflow logging, timed as `dvc repro` sees the stage: A, the MLflow child
process (pipeline.tracking.run_log.RunLog, today's design), against B, MLflow in the stage's own
process with its asynchronous logging (mlflow.config.enable_async_logging), and C, in-process and
synchronous (MLflow's default), which tells what asynchronous logging itself buys.

    python bench/run_log_ab.py --repeats 8 --epochs 30 [--train-size 54000]

Each repeat starts one plain process per design, A, B, C (interleaved: other work on the machine
slows both alike, so the ratio holds where the absolute times drift), into one real sqlite store
in a temporary folder (created and migrated before the first timed run, as `dvc repro`'s earlier
stages leave it).

The measured process does what `pipeline train --dataset mnist --model logreg` does, in its order:
A starts the child first, then imports torch; loads a prepared MNIST file (written once from
../shared/data/mnist); builds a logistic regression and its Adam optimizer while the run opens
(A: send_start / started, as pipeline.train._open_run; B, C: pipeline.tracking.runs.start_training_run
in-process, so all log the same params, tags and dataset input); trains EPOCHS real epochs
(54,000 images, batch 128; --train-size trains on fewer, the logging unchanged), logging train's
five metrics per epoch; logs the summary metrics, flushes, ends the run FINISHED and exits through
os._exit, as pipeline.cli.exit_now.

Prints per design: wall time from the parent's launch to the process's exit, time from launch to
the first training step, and seconds blocked in logging (opening the run; the epochs' log calls;
flush, end and closing), each as min / median / max; then checks that every run is FINISHED in the
store with every epoch's metrics.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REPO, add_mnist_argument, spread  # noqa: E402

DATASET = "mnist"
MODEL = "logreg"
DESIGNS = {"A": "MLflow child process (RunLog)", "B": "in-process, enable_async_logging",
           "C": "in-process, synchronous"}


# ---------------------------------------------------------------------------- the measured stage


def stage(design: str, launched: float, epochs: int, train_size: int, result_file: Path) -> None:
    """One train-like stage process; writes its timings as JSON to `result_file`."""
    blocked = {"open": 0.0, "epochs": 0.0, "flush": 0.0, "end": 0.0}
    if design == "A":
        from pipeline.tracking.run_log import RunLog

        run_log = RunLog(DATASET)  # first thing, as pipeline.cli._train: the child opens the store meanwhile
    import torch

    data = torch.load(Path("data") / DATASET / "prepared.pt", weights_only=True)
    torch.manual_seed(12)
    model = torch.nn.Linear(28 * 28, 10)
    params = {"optimizer": "adam", "lr": 0.005, "batch_size": 128, "epochs": epochs, "schedule": "onecycle",
              "seed": 12, "device": "cpu", "threads": torch.get_num_threads(), "params": 7850, "input_size": 28,
              "source": "lab-A", "framework": "torch", "channels_last": False, "nproc": 1,
              "train_size": len(data["train_y"]), "val_size": len(data["val_y"])}
    tags = {"data_version": data["data_version"], "seed": "12"}
    t = time.perf_counter()
    if design == "A":
        run_log.send_start(MODEL, params, tags)
        blocked["open"] += time.perf_counter() - t
        optimizer = torch.optim.Adam(model.parameters(), lr=0.005)  # imports torch._dynamo: overlaps the child
        t = time.perf_counter()
        run_log.started()
    else:
        import mlflow

        from pipeline.tracking import runs

        mlflow.config.enable_async_logging(design == "B")
        runs.start_training_run(DATASET, MODEL, params, tags)
        blocked["open"] += time.perf_counter() - t
        optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
        t = time.perf_counter()
    blocked["open"] += time.perf_counter() - t

    x = data["train_x"][:train_size].reshape(-1, 28 * 28).float() / 255
    val_x = data["val_x"].reshape(len(data["val_y"]), -1).float() / 255
    generator = torch.Generator().manual_seed(12)
    first_step = None
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = torch.randperm(len(x), generator=generator)
        total_loss, correct = 0.0, 0
        for start in range(0, len(x), 128):
            if first_step is None:
                first_step = time.time() - launched
            batch = order[start:start + 128]
            logits = model(x[batch])
            loss = torch.nn.functional.cross_entropy(logits, data["train_y"][batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
            correct += int((logits.argmax(1) == data["train_y"][batch]).sum())
        with torch.no_grad():
            val_logits = model(val_x)
        row = {"train_loss": total_loss / len(x), "train_accuracy": correct / len(x),
               "val_loss": float(torch.nn.functional.cross_entropy(val_logits, data["val_y"])),
               "val_accuracy": float((val_logits.argmax(1) == data["val_y"]).float().mean()),
               "seconds": time.perf_counter() - t0}
        t = time.perf_counter()
        if design == "A":
            run_log.log(row, epoch)
        else:
            runs.log_epoch(row, epoch)
        blocked["epochs"] += time.perf_counter() - t

    t = time.perf_counter()
    summary = {"best_epoch": epochs, "train_seconds": 1.0}
    if design == "A":
        run_log.log(summary, epochs)
        run_log.flush()
    else:
        runs.log_epoch(summary, epochs)
        if design == "B":  # as run_log.flush(): a metric the store refused fails the stage here
            mlflow.flush_async_logging()
    blocked["flush"] = time.perf_counter() - t
    t = time.perf_counter()
    if design == "A":
        run_log.end()
        run_log.close()
    else:
        runs.end_run()  # with async logging, set_terminated first drains and shuts down its queue
    blocked["end"] = time.perf_counter() - t
    result_file.write_text(json.dumps({"first_step": first_step, **blocked}))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # as pipeline.cli.exit_now


# ---------------------------------------------------------------------------- the parent


def read_idx(path: Path, offset: int):
    import numpy as np

    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def write_prepared(mnist: Path, workspace: Path) -> None:
    """data/mnist/prepared.pt: 54,000 training and 6,000 validation images as uint8, and the test set."""
    import torch

    images = torch.from_numpy(read_idx(mnist / "train-images-idx3-ubyte.gz", 16).copy()).reshape(-1, 1, 28, 28)
    labels = torch.from_numpy(read_idx(mnist / "train-labels-idx1-ubyte.gz", 8).astype("int64"))
    test_x = torch.from_numpy(read_idx(mnist / "t10k-images-idx3-ubyte.gz", 16).copy()).reshape(-1, 1, 28, 28)
    test_y = torch.from_numpy(read_idx(mnist / "t10k-labels-idx1-ubyte.gz", 8).astype("int64"))
    out = workspace / "data" / DATASET / "prepared.pt"
    out.parent.mkdir(parents=True)
    torch.save({"train_x": images[:54000], "train_y": labels[:54000], "val_x": images[54000:],
                "val_y": labels[54000:], "test_x": test_x, "test_y": test_y, "data_version": "bench"}, out)


def launch(design: str, workspace: Path, env: dict, epochs: int, train_size: int) -> dict:
    result = workspace / f"result-{design}.json"
    result.unlink(missing_ok=True)
    launched = time.time()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--stage", design,
                           "--launched", repr(launched), "--epochs", str(epochs), "--train-size", str(train_size),
                           "--result", str(result)],
                          cwd=workspace, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not result.exists():
        sys.exit(f"design {design} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"wall": wall, **json.loads(result.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_mnist_argument(parser)
    parser.add_argument("--repeats", type=int, default=8, help="timed runs of each design, interleaved A B C A B C")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train-size", type=int, default=54000,
                        help="images trained on per epoch (all 54,000: one logreg epoch); fewer where the "
                             "machine is too busy for the full measurement to finish in minutes")
    parser.add_argument("--stage", choices=sorted(DESIGNS), help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        stage(args.stage, args.launched, args.epochs, args.train_size, args.result)
        return

    import mlflow
    import torch

    from bench.machine import machine_info

    print(machine_info())
    print(f"mlflow {mlflow.__version__}; {args.repeats} repeats of each design, {args.epochs} epochs of "
          f"{args.train_size} images each")
    with tempfile.TemporaryDirectory(prefix="run-log-ab-") as tmp:
        workspace = Path(tmp)
        write_prepared(args.mnist, workspace)
        uri = f"sqlite:///{workspace / 'mlflow.db'}"
        env = dict(os.environ)
        env.update(MLFLOW_TRACKING_URI=uri, PIPELINE_GROUP="bench-run-log-ab",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        # The store made and migrated (seconds) before any timed run, and each design run once
        # untimed to warm the page cache.
        for design in DESIGNS:
            launch(design, workspace, env, 1, args.train_size)
        times: dict[str, list[dict]] = {d: [] for d in DESIGNS}
        for k in range(args.repeats):
            for design in DESIGNS:
                times[design].append(launch(design, workspace, env, args.epochs, args.train_size))
                r = times[design][-1]
                print(f"{k + 1} {design}: wall {r['wall']:.2f} s, first step {r['first_step']:.2f} s, blocked "
                      f"{r['open']:.3f} + {r['epochs']:.3f} + {r['flush']:.3f} + {r['end']:.3f} s", flush=True)
        print(check_store(uri, args.repeats, args.epochs))
    print(f"\nmin / median / max of {args.repeats} runs each, seconds (torch threads {torch.get_num_threads()})")
    print("| | " + " | ".join(f"{d}: {name}" for d, name in DESIGNS.items()) + " |")
    print("|---" * (len(DESIGNS) + 1) + "|")
    for key, name in (("wall", "wall, launch to exit"), ("first_step", "launch to first training step"),
                      ("open", "blocked opening the run"), ("epochs", f"blocked in {args.epochs} epochs' logs"),
                      ("flush", "blocked in the final flush"), ("end", "blocked ending the run (A: and the child)"),
                      ("blocked", "blocked in logging, all")):
        cells = [spread([sum(r[k] for k in ("open", "epochs", "flush", "end")) if key == "blocked" else r[key]
                         for r in times[d]], ".3f" if key != "wall" else ".2f") for d in DESIGNS]
        print(f"| {name} | " + " | ".join(cells) + " |")
    medians = {d: statistics.median(r["wall"] for r in times[d]) for d in DESIGNS}
    for d in ("B", "C"):
        print(f"wall {d} / A (medians): {medians[d] / medians['A']:.3f}; {d} - A: {medians[d] - medians['A']:+.2f} s")
        # Paired by repeat: the three runs of a repeat shared the machine's load.
        for key in ("wall", "first_step"):
            diffs = [b[key] - a[key] for a, b in zip(times["A"], times[d])]
            print(f"  {key} {d} - A within a repeat: median {statistics.median(diffs):+.2f} s, "
                  f"{d} later in {sum(x > 0 for x in diffs)} of {len(diffs)}")


def check_store(uri: str, repeats: int, epochs: int) -> str:
    """The timed runs all FINISHED, each with every epoch's val_accuracy, its params and dataset
    input: asynchronous logging lost nothing. (The warm-up runs have one epoch.)"""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(DATASET)
    timed = [r for r in client.search_runs([experiment.experiment_id], max_results=1000)
             if r.data.params.get("epochs") == str(epochs)]
    expected = len(DESIGNS) * repeats
    assert len(timed) == expected, f"{len(timed)} timed runs in the store, expected {expected}"
    for run in timed:
        assert run.info.status == "FINISHED", (run.info.run_id, run.info.status)
        steps = {m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")}
        assert steps == set(range(1, epochs + 1)), (run.info.run_id, sorted(steps))
        assert run.data.params["train_size"] == "54000" and "best_epoch" in run.data.metrics
        assert run.inputs.dataset_inputs, f"run {run.info.run_id} has no dataset input"
    return f"{len(timed)} timed runs FINISHED, each with {epochs} epochs of metrics, its params and its dataset input"


if __name__ == "__main__":
    main()
