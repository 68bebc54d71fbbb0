"""lab-D's CNN in pure NumPy: vectorised layers with hand-written backward passes, no autograd.

Network (lab-D): x (28,28) -> conv 3x3, 1->1 channel, stride 1, pad 1, no bias -> (28,28) -> ReLU
-> max-pool 2x2 stride 2 -> (14,14) -> flatten 196 -> linear 10 -> softmax + cross-entropy.
Parameters: 9 + 196*10 + 10 = 1,979.

Layer functions work on a batch: images are (N,H,W) (one channel, so no C axis), features (N,D).
Each `*_forward` returns (output, cache) and each `*_backward(dout, cache)` returns the gradients.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.models.registry import Reported, register_model

IMAGE_SIZE = 28
POOLED = IMAGE_SIZE // 2  # 14
FEATURES = POOLED * POOLED  # 196
NUM_CLASSES = 10
KERNEL = 3
INIT_STD = 0.01  # lab-D: N(0,1) * 0.01 for both weight arrays
# Images per im2col block in train_epoch: 512 * 9 * 784 float32 is 14 MB.
_CHUNK = 512


def _column_index() -> np.ndarray:
    """(9, 784) flat positions in a 1-pixel-padded 30x30 image: see NumpyCNN._columns."""
    window_row, window_col, row_in, col_in = np.meshgrid(
        np.arange(POOLED), np.arange(POOLED), np.arange(2), np.arange(2), indexing="ij")
    rows = (2 * window_row + row_in).reshape(-1)  # conv output pixel of each column
    cols = (2 * window_col + col_in).reshape(-1)
    tap_row, tap_col = np.divmod(np.arange(KERNEL * KERNEL), KERNEL)
    return (rows + tap_row[:, None]) * (IMAGE_SIZE + 2) + cols + tap_col[:, None]


_COLUMN_INDEX = _column_index()
_WINDOW_START = np.arange(FEATURES) * 4  # column of each pool window's first pixel


# ----------------------------------------------------------------------------------------- layers

def conv2d_forward(x: np.ndarray, w: np.ndarray, stride: int = 1, pad: int = 1):
    """Cross-correlation of x (N,H,W) with one kernel w (KH,KW), zero padding: out (N,Ho,Wo)."""
    kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad))) if pad else x
    # A view (no copy) of every KHxKW patch; tensordot makes the im2col copy once.
    windows = sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    out = np.tensordot(windows, w, axes=([3, 4], [0, 1]))
    return out, (windows, w, x.shape, stride, pad)


def conv2d_backward(dout: np.ndarray, cache):
    """Gradients (dx (N,H,W), dw (KH,KW)) of conv2d_forward given dout (N,Ho,Wo)."""
    windows, w, x_shape, stride, pad = cache
    dw = np.tensordot(dout, windows, axes=([0, 1, 2], [0, 1, 2]))
    n, h, wd = x_shape
    _, ho, wo = dout.shape
    dxp = np.zeros((n, h + 2 * pad, wd + 2 * pad), dtype=dout.dtype)
    # col2im one kernel tap at a time: 9 strided adds instead of a loop over output pixels.
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            dxp[:, i:i + stride * ho:stride, j:j + stride * wo:stride] += w[i, j] * dout
    dx = dxp[:, pad:pad + h, pad:pad + wd] if pad else dxp
    return dx, dw


def relu_forward(x: np.ndarray):
    """max(x, 0) elementwise; the cache is the mask of positive inputs."""
    mask = x > 0
    return x * mask, mask


def relu_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Gradient of ReLU: passes dout where the input was > 0 (0 at exactly 0, as torch does)."""
    return dout * mask


def maxpool_forward(x: np.ndarray, size: int = 2):
    """Non-overlapping size x size max-pool (stride = size) of x (N,H,W), H and W divisible by size."""
    n, h, w = x.shape
    if h % size or w % size:
        raise ValueError(f"maxpool {size}x{size}: input {h}x{w} is not divisible by {size}")
    ho, wo = h // size, w // size
    # (N,Ho,Wo,size*size): each window flattened in row-major order.
    flat = x.reshape(n, ho, size, wo, size).transpose(0, 1, 3, 2, 4).reshape(n, ho, wo, size * size)
    # argmax keeps the first maximum, so a tie sends the gradient to exactly one element.
    arg = flat.argmax(axis=3)
    out = np.take_along_axis(flat, arg[..., None], axis=3)[..., 0]
    return out, (arg, x.shape, size)


def maxpool_backward(dout: np.ndarray, cache) -> np.ndarray:
    """Routes dout (N,Ho,Wo) to the one element of each window that max-pool picked."""
    arg, (n, h, w), size = cache
    ho, wo = dout.shape[1:]
    flat = np.zeros((n, ho, wo, size * size), dtype=dout.dtype)
    np.put_along_axis(flat, arg[..., None], dout[..., None], axis=3)
    return flat.reshape(n, ho, wo, size, size).transpose(0, 1, 3, 2, 4).reshape(n, h, w)


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray):
    """x (N,D) @ w (D,K) + b (K,)."""
    return x @ w + b, (x, w)


def linear_backward(dout: np.ndarray, cache):
    """Gradients (dx (N,D), dw (D,K), db (K,)) of linear_forward given dout (N,K)."""
    x, w = cache
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray):
    """(mean cross-entropy over the batch, dloss/dlogits) for logits (N,K) and int labels (N,)."""
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)  # exp cannot overflow
    log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_z
    rows = np.arange(n)
    loss = -log_p[rows, labels].mean()
    dlogits = np.exp(log_p)
    dlogits[rows, labels] -= 1
    dlogits /= n
    return float(loss), dlogits


# ------------------------------------------------------------------------------------------ model

class NumpyCNN:
    """lab-D's network. params: conv_w (3,3), fc_w (196,10) laid out for `h @ fc_w`, fc_b (10,)."""

    def __init__(self, seed: int = 12, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        # Drawn in float64 then cast, so a float32 and a float64 model of one seed start alike.
        self.params = {
            "conv_w": (rng.standard_normal((KERNEL, KERNEL)) * INIT_STD).astype(self.dtype),
            "fc_w": (rng.standard_normal((FEATURES, NUM_CLASSES)) * INIT_STD).astype(self.dtype),
            "fc_b": np.zeros(NUM_CLASSES, dtype=self.dtype),
        }

    def flops_per_image(self) -> int:
        """Forward FLOPs counted as torch's FlopCounterMode counts a torch model's: 2 per
        multiply-add of the convolution and the linear layer, nothing for ReLU and pooling."""
        return 2 * (IMAGE_SIZE * IMAGE_SIZE * KERNEL * KERNEL + FEATURES * NUM_CLASSES)

    def num_params(self) -> int:
        """Number of trainable scalars: 1,979."""
        return sum(p.size for p in self.params.values())

    def _to_input(self, x: np.ndarray) -> np.ndarray:
        """(N,28,28) in self.dtype; uint8 pixels are divided by 255 (lab-D: no mean/std step)."""
        x = np.asarray(x)
        if x.ndim == 2:
            x = x[None]
        if x.dtype == np.uint8:
            return x.astype(self.dtype) / self.dtype.type(255)
        return x.astype(self.dtype, copy=False)

    def _forward(self, x: np.ndarray):
        p = self.params
        z, conv_cache = conv2d_forward(x, p["conv_w"], stride=1, pad=1)
        a, relu_cache = relu_forward(z)
        pooled, pool_cache = maxpool_forward(a, 2)
        logits, fc_cache = linear_forward(pooled.reshape(len(x), FEATURES), p["fc_w"], p["fc_b"])
        return logits, (conv_cache, relu_cache, pool_cache, fc_cache)

    def layer_table(self) -> list[dict]:
        """Output shape and parameter count per layer (the report's lab-C table), as summary.layer_table
        gives a torch model's: the shapes from a forward pass of one image."""
        p = self.params
        x = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), self.dtype)
        z, _ = conv2d_forward(x, p["conv_w"], stride=1, pad=1)
        a, _ = relu_forward(z)
        pooled, _ = maxpool_forward(a, 2)
        flat = pooled.reshape(1, -1)
        logits, _ = linear_forward(flat, p["fc_w"], p["fc_b"])
        rows = [("conv", "conv 3x3, pad 1, no bias", z, p["conv_w"].size), ("relu", "ReLU", a, 0),
                ("pool", "max-pool 2", pooled, 0), ("flatten", "flatten", flat, 0),
                ("fc", "linear", logits, p["fc_w"].size + p["fc_b"].size)]
        # One channel: shown as (1, H, W) beside torch's (C, H, W).
        return [{"name": name, "type": kind, "output_shape": (1, *out.shape[1:]) if out.ndim == 3 else out.shape[1:],
                 "params": int(count)} for name, kind, out, count in rows]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N,10) of images x (N,28,28), uint8 or already-scaled floats."""
        return self._forward(self._to_input(x))[0]

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray):
        """(mean cross-entropy, {param name: gradient}) on a batch, through the layer functions."""
        logits, (conv_cache, relu_cache, pool_cache, fc_cache) = self._forward(self._to_input(x))
        loss, dlogits = softmax_cross_entropy(logits, np.asarray(y))
        dpooled, dfc_w, dfc_b = linear_backward(dlogits, fc_cache)
        da = maxpool_backward(dpooled.reshape(-1, POOLED, POOLED), pool_cache)
        dz = relu_backward(da, relu_cache)
        _, dconv_w = conv2d_backward(dz, conv_cache)
        return loss, {"conv_w": dconv_w, "fc_w": dfc_w, "fc_b": dfc_b}

    def sgd_step(self, grads: dict, lr: float) -> None:
        """Plain SGD in place: p -= lr * grad."""
        for name, g in grads.items():
            self.params[name] -= self.dtype.type(lr) * g

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Predicted classes (N,) of images x, batch_size images at a time to bound memory."""
        return np.concatenate([
            self.forward(x[i:i + batch_size]).argmax(axis=1) for i in range(0, len(x), batch_size)
        ])

    def state_dict(self) -> dict:
        """Copies of the parameters as plain numpy arrays."""
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, d: dict) -> None:
        """Replaces the parameters by copies of d's arrays (same names and shapes), cast to dtype."""
        if set(d) != set(self.params):
            raise KeyError(f"state dict keys {sorted(d)} != {sorted(self.params)}")
        for k, v in d.items():
            v = np.asarray(v)
            if v.shape != self.params[k].shape:
                raise ValueError(f"{k}: shape {v.shape} != {self.params[k].shape}")
            self.params[k] = v.astype(self.dtype, copy=True)

    # -------------------------------------------------------------------- fast training path

    def _columns(self, images: np.ndarray) -> np.ndarray:
        """im2col of images (B,28,28) in pool-window order: (B, 9, 784) in self.dtype.

        [b, k, c] is tap k (row-major in the 3x3 kernel) of the patch under conv output pixel c,
        where c = 4 * pool window (row-major over 14x14) + pixel in the 2x2 window (row-major).
        One gather from the padded images, on the raw uint8 pixels before scaling; the columns
        do not depend on the weights, so train_epoch builds them once per block.
        """
        padded = np.pad(np.asarray(images), ((0, 0), (1, 1), (1, 1)))
        return self._to_input(np.take(padded.reshape(len(padded), -1), _COLUMN_INDEX, axis=1))

    def _column_loss_and_grads(self, cols: np.ndarray, y: np.ndarray):
        """loss_and_grads from _columns' output, with conv, ReLU and pool fused.

        ReLU is monotonic, so pool(relu(z)) = relu(pool(z)) and the gradient reaches only the
        chosen pixel of each window, both picked as maxpool_forward does (first max): the results
        equal loss_and_grads' up to rounding (tests/test_numpy_cnn.py checks it).
        Returns (loss, grads, number of correct predictions).
        """
        p = self.params
        b = len(cols)
        z = np.matmul(p["conv_w"].reshape(-1), cols)  # (B,784) conv outputs
        pick = _WINDOW_START + z.reshape(b, FEATURES, 4).argmax(axis=2)  # (B,196) max-pool picks
        zmax = np.take_along_axis(z, pick, axis=1)
        h = np.maximum(zmax, 0)
        logits = h @ p["fc_w"] + p["fc_b"]
        loss, dlogits = softmax_cross_entropy(logits, y)
        dh = (dlogits @ p["fc_w"].T) * (zmax > 0)
        picked = np.take_along_axis(cols, pick[:, None, :], axis=2)  # (B,9,196) taps of the picks
        grads = {
            "conv_w": np.einsum("bkw,bw->k", picked, dh).reshape(KERNEL, KERNEL),
            "fc_w": h.T @ dlogits,
            "fc_b": dlogits.sum(axis=0),
        }
        correct = int((logits.argmax(axis=1) == y).sum())
        return loss, grads, correct

    def train_epoch(self, images_uint8: np.ndarray, labels: np.ndarray, lr: float,
                    batch_size: int, rng: np.random.Generator):
        """One epoch of SGD over a permutation drawn from rng: (mean loss, accuracy).

        batch_size 1 is lab-D's per-sample SGD; larger is mini-batch SGD on the batch's mean loss.
        Loss and accuracy are those of each batch before its update (lab-D's running figures).
        """
        n = len(images_uint8)
        labels = np.asarray(labels, dtype=np.int64)
        order = rng.permutation(n)
        chunk = batch_size * max(1, _CHUNK // batch_size)  # no batch straddles two blocks
        total_loss, correct = 0.0, 0
        for start in range(0, n, chunk):
            idx = order[start:start + chunk]
            cols = self._columns(images_uint8[idx])
            y = labels[idx]
            if batch_size == 1:
                loss_sum, ok = self._per_sample_sgd(cols, y, lr)
                total_loss += loss_sum
                correct += ok
                continue
            for i in range(0, len(idx), batch_size):
                loss, grads, ok = self._column_loss_and_grads(
                    cols[i:i + batch_size], y[i:i + batch_size])
                self.sgd_step(grads, lr)
                total_loss += loss * len(y[i:i + batch_size])
                correct += ok
        return total_loss / n, correct / n

    def _per_sample_sgd(self, columns: np.ndarray, y: np.ndarray, lr: float) -> tuple[float, int]:
        """lab-D's per-sample SGD over a block from _columns: (sum of losses, correct).

        The maths of _column_loss_and_grads + sgd_step with a batch of one (a test checks it),
        written for one image: at batch 1 the cost is per NumPy call, not per flop, so each step
        is a few calls on 1-D and 2-D arrays. Updates the weights in place.
        """
        conv_w, fc_w, fc_b = self.params["conv_w"], self.params["fc_w"], self.params["fc_b"]
        w = conv_w.reshape(-1)  # a view: updating it updates conv_w
        lr = self.dtype.type(lr)
        dz = np.zeros(FEATURES * 4, dtype=self.dtype)  # conv output gradient, zero off the picks
        # Each step's logits (before its update) are kept; loss and accuracy come after the loop.
        step_logits = np.empty((len(y), NUM_CLASSES), dtype=self.dtype)
        for i, (cols, label) in enumerate(zip(columns, y.tolist())):  # cols (9, 784): 4 taps per window
            z = np.dot(w, cols)
            pick = _WINDOW_START + z.reshape(FEATURES, 4).argmax(axis=1)  # first max, as max-pool
            h = np.maximum(z[pick], 0)
            logits = step_logits[i] = np.dot(h, fc_w) + fc_b
            exp = np.exp(logits - logits.max())
            step = exp * (lr / exp.sum())  # lr * softmax
            step[label] -= lr  # lr * dloss/dlogits
            dz[pick] = np.dot(fc_w, step) * (h > 0)
            w -= np.dot(cols, dz)
            dz[pick] = 0
            fc_w -= np.outer(h, step)
            fc_b -= step
        loss, _ = softmax_cross_entropy(step_logits, y)
        return loss * len(y), int((step_logits.argmax(axis=1) == y).sum())


@register_model(dataset="mnist", input_size=IMAGE_SIZE, source="lab-D", framework="numpy", family="numpy",
                reported=Reported(0.9051, "lab-D", note="after 2 epochs, 7.3 samples/s"))
def numpy_cnn(in_channels: int = 1, num_classes: int = NUM_CLASSES, seed: int = 12) -> NumpyCNN:
    """lab-D's one-kernel CNN in NumPy (1,979 params); its layers are fixed by lab-D."""
    if in_channels != 1 or num_classes != NUM_CLASSES:
        raise ValueError(f"numpy_cnn is lab-D's 1-channel, {NUM_CLASSES}-class network; got "
                         f"in_channels={in_channels}, num_classes={num_classes}")
    return NumpyCNN(seed=seed)
