"""Warm starts: stage processes, and their MLflow children, forked from processes that have
already imported torch, or mlflow.

A short stage's own work is shorter than its imports: torch, torch._dynamo (which torch.optim
imports at every step) and torchvision take 4.2 s of one core on the slowest machine, mlflow and
its sqlite store 3.0 s more in the MLflow child of train and evaluate. Forked, download takes
0.8 s instead of 2.8, logreg's evaluate 3.5 instead of 7.8 (BENCHMARKS.md, "Warm starts";
`bench/warm_start.py`). A `dvc repro` starts some 40 stages, the test suite about 90.

`pipeline warm start DIR` (template.py) starts two templates, each a Python process that imports its set of
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
