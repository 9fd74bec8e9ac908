"""Shared fixtures: the benign test media in ../shared/testdata and generated images.

No test uses any image that is not benign: Meta's PDQ reference photos (a bridge, a
pen, labelme street scenes), generated noise and gradients, and scikit-image samples.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("HASHSVC_TESTDATA", REPO.parent / "shared" / "testdata"))
PDQ_DATA = TESTDATA / "pdq"


@pytest.fixture(scope="session")
def pdq_data() -> Path:
    assert PDQ_DATA.is_dir(), f"test data missing: {PDQ_DATA} (CI lays shared/ beside the repo)"
    return PDQ_DATA


def smooth_image(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A generated photo-like RGB image: upsampled noise, so PDQ quality is high."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC)


def encode(img: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()
