"""Load test of the served champion: `mlflow models serve` on loopback under concurrent clients.

    # from a workspace where `dvc repro` (or train, evaluate and `pipeline register`) has run
    python bench/serve_load.py                               # 2,000 requests, 8 clients, 1 image each
    python bench/serve_load.py --requests 5000 --clients 16 --batch 8 --workers 2
    python bench/serve_load.py --payload tensor              # the preset applied by the client
    python bench/serve_load.py --bounded                     # `pipeline serve` instead

Starts `mlflow models serve -m models:/mnist-classifier@champion --env-manager local` on
127.0.0.1 (the store of MLFLOW_TRACKING_URI, else sqlite:///mlflow.db), waits for /ping, sends
`--warmup` requests that are not counted, then `--requests` POSTs to /invocations from
`--clients` threads, each on its own keep-alive connection, each request `--batch` real MNIST
test images. `--payload image` (default): each image a PNG file, base64, in the `image` column,
as a client with image files posts them (the server decodes them and applies the model's preset,
pipeline/tracking/serving.py). `--payload tensor`: the preset applied here, by the champion's
learner, and the float tensor posted as `inputs`. Prints the machine, throughput (requests/s and
images/s), latency percentiles, errors (any non-200 answer or failed connection; the run exits 1
if there is one) and the served predictions' accuracy against the labels. The clients run on the
same machine as the server and share its cores.

It needs a registered champion: in a workspace where `dvc repro` ran, or e.g. (a small one)
    pipeline download --dataset mnist && pipeline prepare --dataset mnist
    pipeline train --dataset mnist --model lenet5 && pipeline evaluate --dataset mnist --model lenet5
    pipeline register --dataset mnist    # with only lenet5 trained, it is the champion
"""
from __future__ import annotations

import argparse
import dataclasses
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
from pipeline.engine.learners import build_learner  # noqa: E402
from pipeline.errors import DataError  # noqa: E402
from pipeline.tracking.registry import ALIAS, champion_uri, registered_name, resolve_registered  # noqa: E402
from pipeline.tracking.runs import run_record  # noqa: E402
from pipeline.tracking.server import ModelServer  # noqa: E402
from pipeline.tracking.serving import IMAGE_COLUMN, encode_png  # noqa: E402
from pipeline.tracking.store import TrackingError, tracking_uri  # noqa: E402


def request_bodies(params_file: Path, mnist_dir: Path, count: int, batch: int,
                   payload: str) -> tuple[list[bytes], list[np.ndarray]]:
    """`count` JSON bodies of `batch` official test images each (cycling through the 10,000), as
    PNG files or as the champion's input tensor, and their labels."""
    run_id = resolve_registered(registered_name("mnist"), ALIAS)
    tags, run_params, _ = run_record(run_id)
    images = mnist.read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    labels = mnist.read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz").astype(int)
    needed = min(count * batch, len(labels))
    if payload == "image":
        rows = [{IMAGE_COLUMN: encode_png(image)} for image in images[:needed]]
        body = lambda index: {"dataframe_records": [rows[k] for k in index]}  # noqa: E731
        what = "PNG files in the image column"
    else:
        inputs = tensor_input(params_file, tags["model"], run_params, images[:needed])
        body = lambda index: {"inputs": inputs[index].tolist()}  # noqa: E731
        what = f"input tensors {list(inputs.shape[1:])} {inputs.dtype}"
    bodies, truths = [], []
    for i in range(count):
        index = np.arange(i * batch, (i + 1) * batch) % needed
        bodies.append(json.dumps(body(index)).encode())
        truths.append(labels[index])
    print(f"model: {champion_uri('mnist')} = {tags['model']} (MLflow run {run_id}); {what}, "
          f"{np.mean([len(b) for b in bodies]):,.0f} bytes of JSON per request")
    return bodies, truths


def tensor_input(params_file: Path, model: str, run_params: dict[str, str], images: np.ndarray) -> np.ndarray:
    """The images as the champion's input: its learner's preset at the input size of its run."""
    import torch

    # The run's input size, not params.yaml's, which may have changed since it trained; no
    # ImageNet download: only the preset is used, and the seed of its random weights is moot.
    cfg = dataclasses.replace(load_params(params_file).train_config("mnist", model), pretrained=False,
                              input_size=int(run_params["input_size"]))
    return build_learner(model, "mnist", cfg, torch.device("cpu"), seed=0).example_input(torch.from_numpy(images))


def predicted_labels(answer: bytes) -> np.ndarray:
    """The served classes: a class name per image for files, logits per image for tensors."""
    predictions = json.loads(answer)["predictions"]
    if predictions and isinstance(predictions[0], dict):
        return np.array([int(p["class"]) for p in predictions])
    return np.argmax(predictions, axis=1)


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
    parser.add_argument("--bounded", action="store_true",
                        help="`pipeline serve` (body limit before reading) instead of `mlflow models serve`")
    parser.add_argument("--warmup", type=int, default=50, help="requests sent first, not counted")
    parser.add_argument("--payload", choices=["image", "tensor"], default="image",
                        help="base64 PNG files in the image column, or the preset's tensor as inputs")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--mnist", type=Path, default=artifacts.raw_dir("mnist"),
                        help="folder with the official t10k-*.gz files (default: data/mnist/raw)")
    args = parser.parse_args()

    print(f"machine: {machine_info()}")
    print(f"tracking store: {tracking_uri()}")
    bodies, truths = request_bodies(args.params, args.mnist, args.warmup + args.requests, args.batch, args.payload)
    with ModelServer(champion_uri("mnist"), workers=args.workers, bounded=args.bounded) as server:
        print(f"server: {server.url}, {args.workers} worker(s); {args.clients} clients, "
              f"{args.batch} image(s) per request, {args.warmup} warm-up requests")
        run_load(server.url, bodies[:args.warmup], args.clients)
        results, wall = run_load(server.url, bodies[args.warmup:], args.clients)

    latencies = np.array([elapsed for _, _, elapsed, _ in results]) * 1000
    errors = [(i, status, answer[:200]) for i, status, _, answer in results if status != 200]
    correct = sum(int((predicted_labels(answer) == truths[args.warmup + i]).sum())
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
