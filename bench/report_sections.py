"""The report's model sections (six figures a model, its layer table, its Grad-CAM) drawn in one
process against one forked process per core (`pipeline.reporting.build.model_sections`), on the
outputs of a whole `dvc repro`.

    python bench/report_sections.py --workspace ../ci-check          # after its dvc repro
    python bench/report_sections.py --workspace ../ci-check --repeats 3

Each repeat draws every model's section of every dataset in params.yaml into a new temporary
folder, first in this process (the baseline), then with `--workers` processes; the files the
workers draw must be byte for byte those of the baseline. Prints seconds per run (min / median /
max) and the ratio of the medians. The workspace's files are only read.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import spread  # noqa: E402
from bench.machine import machine_info  # noqa: E402
from pipeline.artifacts import load_prepared  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.data.datasets import get_dataset  # noqa: E402
from pipeline.engine.runtime import usable_cores  # noqa: E402
from pipeline.reporting import build, results  # noqa: E402


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, required=True, help="a folder where `dvc repro` has run")
    parser.add_argument("--workers", type=int, default=usable_cores())
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.chdir(args.workspace)
    params = load_params(Path("params.yaml"))
    results.check_inputs(params)
    loaded = {d: results.load_results(params, d) for d in params.datasets if params.models(d)}
    test_x = {d: load_prepared(d)["test_x"] for d in loaded}
    print(machine_info(), f"| {sum(map(len, loaded.values()))} models, {args.workers} workers", flush=True)

    times: dict[int, list[float]] = {1: [], args.workers: []}
    baseline = None
    for repeat in range(args.repeats):
        for workers in times:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp)
                jobs = [(r, test_x[d], get_dataset(d).class_name, get_dataset(d).binary, out)
                        for d, rs in loaded.items() for r in rs]
                t0 = time.perf_counter()
                build.model_sections(jobs, workers)
                times[workers].append(time.perf_counter() - t0)
                drawn = digests(out)
            baseline = baseline or drawn
            if drawn != baseline:
                differ = sorted(k for k in baseline.keys() | drawn.keys() if baseline.get(k) != drawn.get(k))
                sys.exit(f"{workers} workers drew other files than one process: {differ}")
            print(f"repeat {repeat + 1}, {workers} worker(s): {times[workers][-1]:.1f} s, {len(drawn)} files",
                  flush=True)
    one, many = (statistics.median(times[w]) for w in times)
    print("\n| processes | seconds (min / median / max) | ratio to one |\n|---:|---|---:|")
    for workers, values in times.items():
        print(f"| {workers} | {spread(values, '.1f')} | {statistics.median(values) / one:.2f} |")
    print(f"\nthe files are the same byte for byte; {args.workers} workers take {many / one:.2f} of one's time")


if __name__ == "__main__":
    main()
