"""The train and evaluate stages' MLflow runs, kept by a child process: neither stage imports mlflow.

Importing mlflow and opening its store cost the train stage 1.6 s of one core here (mlflow's
import 0.97 s, the first set_experiment on sqlite 0.64 s), 15% of an mlp training; the evaluate
stage paid that and logging its models, 3.4 s of logreg's 8.4. The child,
`python -m pipeline.tracking.run_log DATASET [evaluate]`, started by `pipeline train` and
`pipeline evaluate` before anything else, checks and opens the store on the other core while the
stage imports torch, loads its data and builds or scores its model (for evaluate it then imports
what logging a model takes); the stage sends it JSON lines on its stdin:

    {"op": "start", "model": ..., "params": {...}, "tags": {...},
     "system_metrics": false}                                       -> {"run_id": ...}
    {"op": "reopen", "run_id": ..., "system_metrics": false}        -> {"run_id": ..., "logged": [...]}
    {"op": "log", "metrics": {...}, "step": N}                      (no answer: training goes on)
    {"op": "evaluation", "run_id": ..., "metrics": {...}, "model": {...},
     "test_split": {...}}                                           (no answer: the stage goes on)
    {"op": "files", "run_id": ..., "files": [...]}                  (no answer)
    {"op": "flush"}                                                 -> {} once every log is stored
    {"op": "end", "status": "FINISHED"}                             -> {}

and reads one answer line per request, {"error": "..."} when MLflow failed (a failed log is
answered at the next request; a store that fails its check, at the first). A stage that dies
without "end" (killed) leaves the child its stdin's end: the child stores what it was sent,
marks the open run KILLED and exits, and the resumed stage reopens that run.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline.speedups import exit_now
from pipeline.tracking.runs import (
    end_run,
    log_epoch,
    log_evaluation,
    log_run_files,
    open_experiment,
    reopen_training_run,
    start_training_run,
)
from pipeline.tracking.store import TrackingError, check_store, describe_failure

ANSWERED = ("start", "reopen", "flush", "end")  # the requests the child answers


class RunLog:
    """The child's handle in the stage; one per stage process, runs opened one after another.
    `evaluate`: the child also readies itself to log models (serving.preload)."""

    def __init__(self, dataset: str, evaluate: bool = False) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": python_path}
        args = [dataset, *(["evaluate"] if evaluate else [])]
        # stderr is the stage's own: MLflow's messages land in the stage log, as in-process ones did.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.tracking.run_log", *args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        self.used = False
        self.unanswered = 0  # requests sent whose answer is not read yet

    def start(self, model: str, params: dict[str, Any], tags: dict[str, str], system_metrics: bool = False) -> str:
        """Opens the model's run in the dataset's experiment; returns its id. `system_metrics`:
        this child samples the machine into the run until it ends (runtime.system_metrics)."""
        self.send_start(model, params, tags, system_metrics)
        return self.started()

    def send_start(self, model: str, params: dict[str, Any], tags: dict[str, str],
                   system_metrics: bool = False) -> None:
        """start()'s request without waiting for its answer (started()): the stage gets on with
        its own set-up while the child opens the run."""
        # Strings as MLflow itself would store them: JSON would turn a tuple into a list.
        params = {k: str(v) for k, v in params.items()}
        self._send({"op": "start", "model": model, "params": params, "tags": tags,
                    "system_metrics": system_metrics})

    def started(self) -> str:
        """The id of the run send_start() asked for, once the child has opened it."""
        return self._answer()["run_id"]

    def reopen(self, run_id: str, system_metrics: bool = False) -> set[int]:
        """Continues an interrupted run; returns the epochs it has logged."""
        return set(self._ask({"op": "reopen", "run_id": run_id, "system_metrics": system_metrics})["logged"])

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._send({"op": "log", "metrics": metrics, "step": step})

    def log_evaluation(self, run_id: str, metrics: dict[str, float], model: dict,
                       test_split: dict | None = None) -> None:
        """runs.log_evaluation() in the child, without waiting: flush() tells how it went. The
        model's files must stay until then."""
        self._send({"op": "evaluation", "run_id": run_id, "metrics": metrics, "model": model, "test_split": test_split})

    def log_files(self, run_id: str, files: list[str]) -> None:
        """runs.log_run_files() in the child, without waiting; the files must stay until flush()."""
        self._send({"op": "files", "run_id": run_id, "files": files})

    def flush(self) -> None:
        """Returns once every metric and evaluation sent is stored; TrackingError if one could not be."""
        self._ask({"op": "flush"})

    def end(self, status: str = "FINISHED") -> None:
        self._ask({"op": "end", "status": status})

    def close(self) -> None:
        """Lets the child exit (it ends a run left open as KILLED) and waits for it; a child never
        asked anything (the params were invalid, or torchrun's workers track) is just stopped."""
        if not self.used:
            self.process.terminate()
        if self.process.stdin and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
        self.process.wait()
        self.process.stdout.close()

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, message: dict) -> None:
        self.used = True
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
        except BrokenPipeError:
            raise self._died() from None
        except BaseException:
            # A signal's exception cut the write short (a full pipe): the half line is ended, so
            # that the child skips it and reads the next request (the run's end) whole. Later
            # signals are ignored by then (pipeline/engine/signals.py), so this write is not cut.
            with contextlib.suppress(OSError, ValueError):
                self.process.stdin.write("\n")
            raise
        if message["op"] in ANSWERED:
            self.unanswered += 1

    def _ask(self, message: dict) -> dict:
        self._send(message)
        return self._answer()

    def _answer(self) -> dict:
        """The answer to the latest request; answers a signal left unread (the stage's way out
        asks to end the run while a start or flush was answered) are read past."""
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise self._died()
            self.unanswered -= 1
            if self.unanswered <= 0:
                break
        answer = json.loads(line)
        if "error" in answer:
            raise TrackingError(answer["error"])
        return answer

    def _died(self) -> TrackingError:
        code = self.process.wait()
        return TrackingError(f"the MLflow logging process (python -m pipeline.tracking.run_log) exited with code "
                                      f"{code}; its traceback is above, in this stage's log")


def serve(dataset: str, requests, answers, signals: "_Signals | None" = None, evaluate: bool = False) -> None:
    """The child's loop: one MLflow call per request line, until the stage closes stdin.

    `signals`: those that reached this child; with a Ctrl-C among them, a run the stage left open
    is FAILED (KILLED otherwise). `evaluate`: models will be logged; what that imports is imported
    before the first request."""
    signals = signals or _Signals()
    mlflow, unusable, failure = None, None, None  # failure: a failed log, told at the next request
    try:
        check_store()
        mlflow = open_experiment(dataset)  # the slow part, done before the first request
        if evaluate:
            from pipeline.tracking import serving

            serving.preload()
    except TrackingError as e:
        unusable = str(e)
    except Exception as e:  # an unreadable store, a broken mlflow install alike
        unusable = describe_failure(f"cannot open the experiment {dataset}", e)
    for line in requests:
        signals.asked = True
        try:
            request = json.loads(line)
        except ValueError:  # a line the stage's signal cut short: its end, if any, comes next
            print(f"pipeline.tracking.run_log: skipped a request cut short: {line[:80]!r}", file=sys.stderr)
            continue
        if request["op"] in ("log", "evaluation", "files"):
            if mlflow is not None and failure is None:
                failure = _store(request)
            continue
        if mlflow is None:  # no run was opened, so there is none to end
            answer = {} if request["op"] == "end" else {"error": unusable}
        else:
            answer, failure = _answer(dataset, request, failure), None
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
    if mlflow is not None and mlflow.active_run() is not None:
        # The stage went without ending its run: it was killed, or interrupted before its run was
        # in its hands (Ctrl-C while the start was answered). Nobody is left to tell of a failure.
        status = "FAILED" if signal.SIGINT in signals.received else "KILLED"
        try:
            mlflow.end_run(status)
        except Exception as e:
            print(describe_failure(f"cannot mark the stage's run {status}", e), file=sys.stderr)


def _store(request: dict) -> str | None:
    """Stores a request that gets no answer; what went wrong, if anything."""
    try:
        if request["op"] == "log":
            log_epoch(request["metrics"], request["step"])
        elif request["op"] == "files":
            log_run_files(request["run_id"], request["files"])
        else:
            log_evaluation(request["run_id"], request["metrics"], request["model"], request["test_split"])
    except Exception as e:
        what = {"log": f"cannot log the metrics of step {request.get('step')}",
                "files": f"cannot log the figures of MLflow run {request.get('run_id')}",
                "evaluation": f"cannot log the evaluation of MLflow run {request.get('run_id')}"}[request["op"]]
        return describe_failure(what, e)
    return None


def _answer(dataset: str, request: dict, failure: str | None) -> dict:
    """The answer to a request; a failed log since the last answer is the answer."""
    op = request["op"]
    try:
        if op == "end":  # a run with a failed log is FAILED, whatever the stage thought
            end_run("FAILED" if failure else request["status"])
        elif failure is None and op == "start":
            return {"run_id": start_training_run(dataset, request["model"], request["params"],
                                                 request["tags"], request.get("system_metrics", False))}
        elif failure is None and op == "reopen":
            logged = reopen_training_run(request["run_id"], request.get("system_metrics", False))
            return {"run_id": request["run_id"], "logged": sorted(logged)}
        elif op not in ("flush", "start", "reopen"):
            raise ValueError(f"unknown request {op!r}")
    except Exception as e:
        return {"error": describe_failure(f"MLflow's {op} failed", e)}
    return {"error": failure} if failure else {}


class _Signals:
    """The child's SIGINT and SIGTERM handler. Both reach it with the stage when sent to the whole
    process group (Ctrl-C, a job stopped by its shell): the stage then ends its run through this
    child, which must outlive them, so they are only noted, for a run the stage could not end.
    Before the first request no run is open, and the child ends at once, as it did by default
    (RunLog.close() stops a child never asked anything)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.asked = False

    def __call__(self, signum, frame) -> None:
        if not self.asked:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self.received.append(signum)


def main() -> None:
    # Set whatever the start-up left (a SIGINT inherited ignored stays ignored in Python).
    signals = _Signals()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signals)
    # Answers go through the original stdout; anything printed (MLflow's "View run ..." lines)
    # goes to stderr, the stage's log.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.argv[1], sys.stdin, answers, signals, evaluate=sys.argv[2:] == ["evaluate"])
    # Every run is stored (each MLflow call commits): the stage need not wait for mlflow's teardown.
    answers.flush()
    exit_now(0)


if __name__ == "__main__":
    main()
