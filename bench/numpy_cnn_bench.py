"""lab-D's per-pixel loop CNN against pipeline.models.numpy_cnn, same machine, same script.

    python bench/numpy_cnn_bench.py              # prints machine info and a Markdown table
    python bench/numpy_cnn_bench.py --repeats 5

The loop version is written by us from lab-D's description (SPEC.md): every convolution,
ReLU, max-pool and their gradients are Python loops over pixels, per sample, with NumPy only for
the 196x10 linear layer. Before timing, both are checked to compute the same loss and gradients
on one image. Each repeat times the loop and ours back to back (interleaved), so a slower or
faster moment of the machine hits both; the table gives min / median / max over repeats.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import machine_info  # noqa: E402
from pipeline.data import mnist  # noqa: E402
from pipeline.models.numpy_cnn import NumpyCNN  # noqa: E402

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


class LoopCNN:
    """lab-D's formulation: one sample at a time, pixel loops, plain SGD."""

    def __init__(self, params: dict) -> None:
        self.w = params["conv_w"].astype(np.float64)
        self.fc_w = params["fc_w"].astype(np.float64)
        self.fc_b = params["fc_b"].astype(np.float64)

    def step(self, image: np.ndarray, label: int, lr: float):
        """Forward, backward and SGD update on one (28,28) float image: (loss, grads)."""
        x = np.pad(image, 1)
        conv = np.zeros((28, 28))
        for i in range(28):
            for j in range(28):
                s = 0.0
                for di in range(3):
                    for dj in range(3):
                        s += x[i + di, j + dj] * self.w[di, dj]
                conv[i, j] = s
        relu = np.zeros((28, 28))
        for i in range(28):
            for j in range(28):
                relu[i, j] = conv[i, j] if conv[i, j] > 0 else 0.0
        pooled = np.zeros((14, 14))
        where = np.zeros((14, 14, 2), dtype=int)
        for i in range(14):
            for j in range(14):
                best, bi, bj = -np.inf, 0, 0
                for di in range(2):
                    for dj in range(2):
                        v = relu[2 * i + di, 2 * j + dj]
                        if v > best:  # first maximum wins, like numpy_cnn's argmax
                            best, bi, bj = v, 2 * i + di, 2 * j + dj
                pooled[i, j] = best
                where[i, j] = bi, bj
        h = pooled.reshape(196)
        logits = h @ self.fc_w + self.fc_b
        e = np.exp(logits - logits.max())
        p = e / e.sum()
        loss = -np.log(p[label])
        dlogits = p.copy()
        dlogits[label] -= 1
        dfc_w = np.outer(h, dlogits)
        dfc_b = dlogits
        dpooled = (self.fc_w @ dlogits).reshape(14, 14)
        drelu = np.zeros((28, 28))
        for i in range(14):
            for j in range(14):
                bi, bj = where[i, j]
                drelu[bi, bj] = dpooled[i, j]
        dconv = np.zeros((28, 28))
        for i in range(28):
            for j in range(28):
                dconv[i, j] = drelu[i, j] if conv[i, j] > 0 else 0.0
        dw = np.zeros((3, 3))
        for di in range(3):
            for dj in range(3):
                s = 0.0
                for i in range(28):
                    for j in range(28):
                        s += dconv[i, j] * x[i + di, j + dj]
                dw[di, dj] = s
        grads = {"conv_w": dw, "fc_w": dfc_w, "fc_b": dfc_b}
        self.w -= lr * dw
        self.fc_w -= lr * dfc_w
        self.fc_b -= lr * dfc_b
        return loss, grads


def check_same_maths(images: np.ndarray, labels: np.ndarray) -> None:
    ours = NumpyCNN(seed=12, dtype=np.float64)
    loop = LoopCNN(ours.state_dict())
    loss, grads = ours.loss_and_grads(images[:1], labels[:1])
    loop_loss, loop_grads = loop.step(images[0] / 255.0, int(labels[0]), lr=0.0)
    assert abs(loss - loop_loss) < 1e-9, (loss, loop_loss)
    for k in grads:
        np.testing.assert_allclose(grads[k], loop_grads[k], rtol=1e-7, atol=1e-12, err_msg=k)


def time_loop(images, labels, n: int) -> float:
    loop = LoopCNN(NumpyCNN(seed=12).state_dict())
    t = time.perf_counter()
    for i in range(n):
        loop.step(images[i] / 255.0, int(labels[i]), lr=0.01)
    return n / (time.perf_counter() - t)


def time_ours(images, labels, n: int, batch_size: int) -> float:
    model = NumpyCNN(seed=12)
    t = time.perf_counter()
    model.train_epoch(images[:n], labels[:n], 0.01, batch_size, np.random.default_rng(0))
    return n / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", type=Path, default=SHARED_MNIST, help="folder with the MNIST .gz files")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop-samples", type=int, default=30, help="samples per loop timing")
    parser.add_argument("--batch", type=int, default=32, help="mini-batch size of the mini-batch row")
    args = parser.parse_args()

    x, y = mnist.load_split(args.mnist, "train")
    images, labels = x.numpy(), y.numpy()
    check_same_maths(images, labels)
    print(f"machine: {machine_info()}")
    print("check: loop and vectorised give the same loss and gradients on one image (float64)")

    rows: dict[str, list[float]] = {"loop, batch 1 (lab-D)": [], "ours, batch 1": [],
                                    f"ours, batch {args.batch}": []}
    for r in range(args.repeats):
        rows["loop, batch 1 (lab-D)"].append(time_loop(images, labels, args.loop_samples))
        rows["ours, batch 1"].append(time_ours(images, labels, len(images), 1))
        rows[f"ours, batch {args.batch}"].append(time_ours(images, labels, len(images), args.batch))
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:,.1f}/s" for k, v in rows.items()))

    loop = rows["loop, batch 1 (lab-D)"]
    print("\n| formulation | samples/s (min / median / max) | 60,000-sample epoch (median) | "
          "speed-up over the loop (min / median / max) |")
    print("|---|---:|---:|---:|")
    for name, rates in rows.items():
        ratios = [r / lr for r, lr in zip(rates, loop)]  # per repeat: same moment of the machine
        print(f"| {name} | {min(rates):,.1f} / {statistics.median(rates):,.1f} / {max(rates):,.1f} | "
              f"{60000 / statistics.median(rates):,.1f} s | "
              f"{min(ratios):,.0f}x / {statistics.median(ratios):,.0f}x / {max(ratios):,.0f}x |")


if __name__ == "__main__":
    main()
