"""The signal tests run N times under `pytest -n 2`, as the suite runs them: how often each passes.

    python bench/signal_loop.py                # the signal tests, 20 times
    python bench/signal_loop.py -n 3
    python bench/signal_loop.py --suite -n 20  # the whole suite each time; the signal tests' counts

A Ctrl-C or SIGTERM must stop a stage every time, whatever else loads the machine: the counts are
those of every signal test (tests/test_signals.py and the Ctrl-C tests of test_bad_input.py and
test_run_log.py), read from pytest's JUnit XML. Exits 1 if any run of any of them failed.
"""
from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIGNAL_TESTS = [
    "tests/test_signals.py",
    "tests/test_bad_input.py::test_ctrl_c_exits_130_with_one_line_and_the_run_failed",
    "tests/test_bad_input.py::test_an_interrupt_names_as_failed_only_a_run_it_failed",
    "tests/test_run_log.py::test_ctrl_c_ends_the_run_as_failed",
]


def is_signal_test(classname: str, name: str) -> bool:
    file = "tests/" + classname.rsplit(".", 1)[-1] + ".py"
    return any(test == file or test == f"{file}::{name.split('[')[0]}" for test in SIGNAL_TESTS)


def run_once(suite: bool, workers: int, report: Path) -> tuple[dict[str, str], float, int]:
    """One pytest run: (outcome of each signal test, seconds, pytest's exit code)."""
    command = [sys.executable, "-m", "pytest", "-q", "-n", str(workers), f"--junitxml={report}",
               *([] if suite else SIGNAL_TESTS)]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    outcomes = {}
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            if is_signal_test(case.get("classname", ""), case.get("name", "")):
                failed = case.find("failure") is not None or case.find("error") is not None
                skipped = case.find("skipped") is not None
                outcomes[f"{case.get('classname')}::{case.get('name')}"] = (
                    "failed" if failed else "skipped" if skipped else "passed")
    if not outcomes:  # collection failed, say: show why
        print(proc.stdout[-3000:], file=sys.stderr)
    return outcomes, seconds, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (default: 2, as CI)")
    parser.add_argument("--suite", action="store_true", help="run the whole suite each time, not only the signal tests")
    args = parser.parse_args()
    passed: collections.Counter = collections.Counter()
    seen: collections.Counter = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(1, args.runs + 1):
            outcomes, seconds, code = run_once(args.suite, args.workers, Path(tmp) / f"run{i}.xml")
            for test, outcome in outcomes.items():
                seen[test] += 1
                passed[test] += outcome == "passed"
            failed = sorted(t for t, o in outcomes.items() if o != "passed")
            print(f"run {i}/{args.runs}: {len(outcomes) - len(failed)}/{len(outcomes)} signal tests passed, "
                  f"pytest exit {code}, {seconds:.0f} s" + (f"; not passed: {', '.join(failed)}" if failed else ""),
                  flush=True)
    print(f"\n{'passed':>8}  signal test ({args.runs} runs, pytest -n {args.workers}"
          f"{', whole suite' if args.suite else ''})")
    for test in sorted(seen):
        print(f"{passed[test]:>4}/{args.runs:<3}  {test}")
    all_passed = bool(seen) and all(passed[t] == args.runs for t in seen)
    print(f"\nall signal tests passed in every run: {'yes' if all_passed else 'no'}")
    return 0 if all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
