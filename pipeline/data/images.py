"""Image files -> the grayscale uint8 pixels every model sees: one decoding for the prepare stage's
crack photos, `pipeline predict` and the served model alike."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def decode_image(data: bytes, size: int) -> np.ndarray:
    """One image file's bytes -> grayscale uint8 [size, size]: the decoding every crack model sees."""
    with Image.open(io.BytesIO(data)) as image:
        # draft() lets libjpeg decode only the luma at 1/2, 1/4 or 1/8 scale (never below `size`):
        # twice as fast at 64 px, and DCT-domain scaling is itself a clean low-pass. Lanczos then
        # does the final antialiased downscale, keeping thin cracks sharpest. Both are
        # deterministic for a given Pillow/libjpeg build.
        image.draft("L", (size, size))
        image.load()  # decodes everything now, so a truncated file raises here
        gray = image.convert("L")
        if gray.size != (size, size):
            gray = gray.resize((size, size), Image.Resampling.LANCZOS)
        return np.asarray(gray, dtype=np.uint8)
