"""ROS-free image decoding: every supported encoding, compressed formats and malformed inputs."""

import cv2
import numpy as np
import pytest

from vpr_ros.core.errors import InputError
from vpr_ros.core.images import (DEFAULT_MAX_PIXELS, SUPPORTED_ENCODINGS, ImageTooLargeError,
                                 compressed_image_size, image_from_compressed, image_from_raw,
                                 rgb_to_compressed, rgb_to_raw)


@pytest.fixture
def rgb(rng):
    return rng.integers(0, 256, size=(7, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_round_trip_exactly(rgb, encoding):
    h, w, step, data = rgb_to_raw(rgb, encoding)
    assert (h, w) == (7, 5) and len(data) == step * h
    np.testing.assert_array_equal(image_from_raw(encoding, h, w, step, data), rgb)


def test_bgr_byte_order_is_reversed(rgb):
    _, _, _, data = rgb_to_raw(rgb, "bgr8")
    assert np.frombuffer(data, np.uint8)[:3].tolist() == rgb[0, 0, ::-1].tolist()


@pytest.mark.parametrize("encoding", ["mono8", "mono16"])
def test_mono_encodings_give_grey_rgb(rgb, encoding):
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    out = image_from_raw(encoding, *rgb_to_raw(rgb, encoding))
    assert out.shape == (7, 5, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)


def test_mono16_big_endian_and_top_byte():
    values = np.array([[0x1234, 0xFF00], [0x00FF, 0xABCD]], dtype=">u2")
    out = image_from_raw("mono16", 2, 2, 4, values.tobytes(), is_bigendian=True)
    assert out[:, :, 0].tolist() == [[0x12, 0xFF], [0x00, 0xAB]]
    little = image_from_raw("mono16", 2, 2, 4, values.astype("<u2").tobytes(), is_bigendian=False)
    np.testing.assert_array_equal(out, little)


def test_padded_rows_are_cropped(rgb):
    h, w, step, data = rgb_to_raw(rgb, "rgb8")
    padded = b"".join(data[r * step:(r + 1) * step] + b"\x99" * 9 for r in range(h))
    np.testing.assert_array_equal(image_from_raw("rgb8", h, w, step + 9, padded), rgb)


def test_encoding_is_case_insensitive_and_accepts_numpy_data(rgb):
    h, w, step, data = rgb_to_raw(rgb, "rgb8")
    np.testing.assert_array_equal(image_from_raw("RGB8", h, w, step, np.frombuffer(data, np.uint8)), rgb)


def test_unsupported_encoding_names_it_and_the_supported_list():
    with pytest.raises(InputError, match="32FC1") as err:
        image_from_raw("32FC1", 2, 2, 16, bytes(16))
    for enc in SUPPORTED_ENCODINGS:
        assert enc in str(err.value)


@pytest.mark.parametrize("h, w, step, size, pattern", [
    (0, 5, 15, 0, "zero size"),
    (3, 0, 0, 0, "zero size"),
    (3, 5, 10, 30, "step 10 is smaller"),
    (3, 5, 15, 44, "truncated"),
])
def test_malformed_raw_images_raise(h, w, step, size, pattern):
    with pytest.raises(InputError, match=pattern):
        image_from_raw("rgb8", h, w, step, bytes(size))


def test_png_round_trip_is_exact(rgb):
    data = rgb_to_compressed(rgb, "png")
    assert data[:4] == b"\x89PNG"
    np.testing.assert_array_equal(image_from_compressed("png", data), rgb)


def test_jpeg_round_trip_is_close():
    smooth = np.dstack(list(np.meshgrid(np.linspace(0, 255, 32), np.linspace(0, 255, 24))) +
                       [np.full((24, 32), 128.0)]).astype(np.uint8)
    out = image_from_compressed("rgb8; jpeg compressed bgr8", rgb_to_compressed(smooth, "jpeg", 95))
    assert out.shape == smooth.shape
    assert np.abs(out.astype(int) - smooth).mean() < 3.0
    # channel order: a red image stays red
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    assert image_from_compressed("jpeg", rgb_to_compressed(red))[8, 8, 0] > 240


def test_empty_format_sniffs_the_codec(rgb):
    np.testing.assert_array_equal(image_from_compressed("", rgb_to_compressed(rgb, "png")), rgb)


@pytest.mark.parametrize("fmt", ["theora", "16UC1; compressedDepth png", "webp"])
def test_unsupported_compressed_format_names_it(rgb, fmt):
    with pytest.raises(InputError, match="unsupported compressed image format") as err:
        image_from_compressed(fmt, rgb_to_compressed(rgb, "png"))
    assert fmt in str(err.value) and "jpeg" in str(err.value)


def test_corrupt_compressed_data_raises():
    with pytest.raises(InputError, match="cannot be decoded"):
        image_from_compressed("jpeg", b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(InputError, match="no data"):
        image_from_compressed("png", b"")


def test_writer_rejects_non_rgb_input():
    with pytest.raises(InputError, match="RGB"):
        rgb_to_raw(np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match="yuv422"):
        rgb_to_raw(np.zeros((4, 4, 3), np.uint8), "yuv422")


def _huge_png(side: int) -> bytes:
    """A PNG of side x side black pixels: compresses ~1000:1, so a 20000^2 image is ~0.4 MB.

    Built by encoding a small black PNG and patching its IHDR would give a corrupt CRC; encoding
    the real image is too slow here, so the header of a real 64x64 PNG is rewritten and its CRC fixed.
    """
    import struct
    import zlib
    small = bytearray(rgb_to_compressed(np.zeros((64, 64, 3), np.uint8), "png"))
    small[16:24] = struct.pack(">II", side, side)
    small[29:33] = struct.pack(">I", zlib.crc32(bytes(small[12:29])))
    return bytes(small)


def test_compressed_header_size_is_read_without_decoding(rgb):
    assert compressed_image_size(rgb_to_compressed(rgb, "png")) == ("png", 5, 7)
    big = np.zeros((40, 90, 3), np.uint8)
    assert compressed_image_size(rgb_to_compressed(big, "jpeg")) == ("jpeg", 90, 40)
    # progressive JPEG (SOF2) behind an EXIF-sized APP1 segment
    ok, prog = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    data = prog.tobytes()
    app1 = b"\xff\xe1" + (3002).to_bytes(2, "big") + b"\0" * 3000
    assert compressed_image_size(data[:2] + app1 + data[2:]) == ("jpeg", 90, 40)
    assert compressed_image_size(b"GIF89a" + b"\0" * 40) is None
    assert compressed_image_size(data[:4]) is None  # truncated inside the first segment


def test_huge_compressed_image_is_refused_before_decoding():
    data = _huge_png(20000)
    assert compressed_image_size(data) == ("png", 20000, 20000)
    import time
    t0 = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="20000x20000.*image.max_pixels"):
        image_from_compressed("png", data)
    assert time.perf_counter() - t0 < 0.5  # the decoder never ran (it takes ~26 s)
    jpeg = rgb_to_compressed(np.zeros((30, 40, 3), np.uint8), "jpeg")
    with pytest.raises(ImageTooLargeError):
        image_from_compressed("jpeg", jpeg, max_pixels=40 * 30 - 1)
    assert image_from_compressed("jpeg", jpeg, max_pixels=40 * 30).shape == (30, 40, 3)


def test_huge_raw_image_is_refused_before_touching_its_data():
    side = 5000  # 25 MP > DEFAULT_MAX_PIXELS; no data is needed to refuse it
    assert side * side > DEFAULT_MAX_PIXELS
    with pytest.raises(ImageTooLargeError, match="5000x5000"):
        image_from_raw("rgb8", side, side, side * 3, b"")
    assert issubclass(ImageTooLargeError, InputError)


def test_compressed_data_of_another_codec_is_refused(rgb):
    ok, bmp = cv2.imencode(".bmp", rgb)  # OpenCV would decode it, but its size is not checked
    with pytest.raises(InputError, match="no readable JPEG or PNG header"):
        image_from_compressed("jpeg", bmp.tobytes())
