"""Load test of the served champion: `mlflow models serve` on loopback under concurrent clients.

    # from a workspace where `dvc repro` (or train, evaluate and `pipeline register`) has run
    python bench/serve_load.py                               # 2,000 requests, 8 clients, 1 image each
    python bench/serve_load.py --requests 5000 --clients 16 --batch 8 --workers 2

Starts `mlflow models serve -m models:/<dataset>-classifier@champion --env-manager local` on
127.0.0.1 (the store of MLFLOW_TRACKING_URI, else sqlite:///mlflow.db), waits for /ping, sends
`--warmup` requests that are not counted, then `--requests` POSTs to /invocations from
`--clients` threads, each on its own keep-alive connection, each request `--batch` real MNIST
test images turned into the model's input exactly as `pipeline predict` does. Prints the
machine, throughput (requests/s and images/s), latency percentiles, errors (any non-200 answer
or failed connection; the run exits 1 if there is one) and the served predictions' accuracy
against the labels. The clients run on the same machine as the server and share its cores.
"""
from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.machine import machine_info  # noqa: E402
from pipeline import artifacts  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.data import mnist  # noqa: E402
from pipeline.data.errors import DataError  # noqa: E402
from pipeline.predict import model_input  # noqa: E402
from pipeline.tracking.registry import ALIAS, champion_uri, registered_name, resolve_registered  # noqa: E402
from pipeline.tracking.runs import run_record  # noqa: E402
from pipeline.tracking.server import ModelServer  # noqa: E402
from pipeline.tracking.store import TrackingError, tracking_uri  # noqa: E402


def request_bodies(params_file: Path, mnist_dir: Path, count: int, batch: int) -> tuple[list[bytes], list[np.ndarray]]:
    """`count` JSON bodies of `batch` official test images each (cycling through the 10,000),
    preprocessed for the champion, and their labels."""
    run_id = resolve_registered(registered_name("mnist"), ALIAS)
    tags, run_params, _ = run_record(run_id)
    import torch

    images = torch.from_numpy(mnist.read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz").copy())
    labels = mnist.read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz").astype(int)
    needed = min(count * batch, len(labels))
    inputs = model_input(load_params(params_file), "mnist", tags["model"], run_params, images[:needed])
    bodies, truths = [], []
    for i in range(count):
        index = np.arange(i * batch, (i + 1) * batch) % needed
        bodies.append(json.dumps({"inputs": inputs[index].tolist()}).encode())
        truths.append(labels[index])
    print(f"model: {champion_uri('mnist')} = {tags['model']} (MLflow run {run_id}), input "
          f"{list(inputs.shape[1:])} {inputs.dtype}, {len(bodies[0]):,} bytes of JSON per request")
    return bodies, truths


def client(url: str, bodies: list[bytes], next_index, results: list, lock: threading.Lock) -> None:
    """Sends bodies[next_index()] until they run out, on one keep-alive connection."""
    parsed = urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    headers = {"Content-Type": "application/json"}
    while (i := next_index()) is not None:
        start = time.perf_counter()
        try:
            connection.request("POST", "/invocations", body=bodies[i], headers=headers)
            response = connection.getresponse()
            answer = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as e:
            answer, status = str(e).encode(), None
            connection.close()
            connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        elapsed = time.perf_counter() - start
        with lock:
            results.append((i, status, elapsed, answer))
    connection.close()


def run_load(url: str, bodies: list[bytes], clients: int) -> tuple[list, float]:
    counter = iter(range(len(bodies)))
    counter_lock, results_lock = threading.Lock(), threading.Lock()

    def next_index():
        with counter_lock:
            return next(counter, None)

    results: list = []
    threads = [threading.Thread(target=client, args=(url, bodies, next_index, results, results_lock))
               for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--batch", type=int, default=1, help="images per request")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of the server")
    parser.add_argument("--warmup", type=int, default=50, help="requests sent first, not counted")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--mnist", type=Path, default=artifacts.raw_dir("mnist"),
                        help="folder with the official t10k-*.gz files (default: data/mnist/raw)")
    args = parser.parse_args()

    print(f"machine: {machine_info()}")
    print(f"tracking store: {tracking_uri()}")
    bodies, truths = request_bodies(args.params, args.mnist, args.warmup + args.requests, args.batch)
    with ModelServer(champion_uri("mnist"), workers=args.workers) as server:
        print(f"server: {server.url}, {args.workers} worker(s); {args.clients} clients, "
              f"{args.batch} image(s) per request, {args.warmup} warm-up requests")
        run_load(server.url, bodies[:args.warmup], args.clients)
        results, wall = run_load(server.url, bodies[args.warmup:], args.clients)

    latencies = np.array([elapsed for _, _, elapsed, _ in results]) * 1000
    errors = [(i, status, answer[:200]) for i, status, _, answer in results if status != 200]
    correct = sum(int((np.argmax(json.loads(answer)["predictions"], axis=1) == truths[args.warmup + i]).sum())
                  for i, status, _, answer in results if status == 200)
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    print(f"requests: {len(results)} in {wall:.2f} s: {len(results) / wall:.1f} requests/s, "
          f"{len(results) * args.batch / wall:.1f} images/s")
    print(f"latency ms: p50 {p50:.1f}, p90 {p90:.1f}, p99 {p99:.1f}, max {latencies.max():.1f}, "
          f"mean {latencies.mean():.1f}")
    print(f"errors: {len(errors)}")
    print(f"served predictions right: {correct} of {len(results) * args.batch} images")
    for i, status, answer in errors[:5]:
        print(f"  request {i}: status {status}: {answer!r}")
    return 1 if errors else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (TrackingError, DataError, FileNotFoundError) as e:  # no champion, no MNIST files
        print(f"serve_load: error: {e}", file=sys.stderr)
        sys.exit(2)
