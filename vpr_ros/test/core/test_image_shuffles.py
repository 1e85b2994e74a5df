"""image_from_raw's OpenCV channel shuffles give the bytes of the numpy reference (strided copies),
for every 8-bit encoding, with and without row padding."""

import numpy as np
import pytest

from vpr_ros.core.images import image_from_raw


def _numpy_reference(encoding: str, pixels: np.ndarray) -> np.ndarray:
    if encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if encoding in ("rgb8", "rgba8"):
        return np.ascontiguousarray(pixels[:, :, :3])
    return np.ascontiguousarray(pixels[:, :, 2::-1])


@pytest.mark.parametrize("encoding,channels", [("mono8", 1), ("rgb8", 3), ("rgba8", 4), ("bgr8", 3), ("bgra8", 4)])
@pytest.mark.parametrize("h,w,pad", [(5, 7, 0), (5, 7, 3), (48, 64, 0), (1, 1, 5)])
def test_shuffles_equal_the_numpy_reference(encoding, channels, h, w, pad):
    step = w * channels + pad
    raw = np.random.default_rng(h * w + pad).integers(0, 256, h * step, dtype=np.uint8).tobytes()
    pixels = np.frombuffer(raw, np.uint8).reshape(h, step)[:, :w * channels].reshape(h, w, channels)
    out = image_from_raw(encoding, h, w, step, raw)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.array_equal(out, _numpy_reference(encoding, pixels))
