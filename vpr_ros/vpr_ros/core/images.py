"""Image decoding without ROS: raw ``sensor_msgs/Image`` fields and compressed bytes -> RGB arrays.

The functions take message *fields*, not message objects, so the rosbags reader and the rclpy node
share them. Every output is (H, W, 3) uint8 RGB, what :class:`vpr_ros.core.types.Frame` expects.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from vpr_ros.core.errors import InputError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageTooLargeError",
    "compressed_image_size",
    "SUPPORTED_ENCODINGS",
    "SUPPORTED_FORMATS",
    "image_from_raw",
    "image_from_compressed",
    "rgb_to_raw",
    "rgb_to_compressed",
]

#: encoding -> (channels, bytes per channel)
_LAYOUT: dict[str, tuple[int, int]] = {
    "mono8": (1, 1),
    "mono16": (1, 2),
    "rgb8": (3, 1),
    "bgr8": (3, 1),
    "rgba8": (4, 1),
    "bgra8": (4, 1),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUT)
# the 8-bit encodings other than rgb8 -> (H, W, 3) RGB
_TO_RGB = {"mono8": cv2.COLOR_GRAY2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgr8": cv2.COLOR_BGR2RGB,
           "bgra8": cv2.COLOR_BGRA2RGB}
SUPPORTED_FORMATS: tuple[str, ...] = ("jpeg", "png")

U8Image = npt.NDArray[np.uint8]

#: Largest image (width * height) decoded by default: 4096 x 4096, 16.8 MP, 50 MB as RGB. A small
#: PNG can claim 20000 x 20000 (1.2 GB decoded, ~26 s of decoding), so sizes are checked first.
DEFAULT_MAX_PIXELS = 4096 * 4096


class ImageTooLargeError(InputError):
    """An image (raw or as its compressed header claims) has more pixels than allowed."""


def _check_pixels(kind: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{kind} image of {width}x{height} ({width * height} pixels) is larger than the "
            f"{max_pixels} pixels allowed; raise image.max_pixels if the camera really sends such frames")


def _buffer(data: bytes | bytearray | memoryview | npt.NDArray[np.uint8] | list[int]) -> U8Image:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    # rclpy may hand over array.array or a list of ints
    return np.asarray(data, dtype=np.uint8).reshape(-1)


def image_from_raw(encoding: str, height: int, width: int, step: int,
                   data: bytes | bytearray | memoryview | npt.NDArray[np.uint8],
                   is_bigendian: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> U8Image:
    """Decode the fields of a ``sensor_msgs/Image`` into (height, width, 3) uint8 RGB.

    Supported encodings: mono8, mono16, rgb8, bgr8, rgba8, bgra8. mono16 keeps its top 8 bits
    (like cv_bridge's 16->8 bit conversion); alpha is dropped. ``data`` holds ``step * height`` bytes
    (rows may be padded: ``step >= width * bytes_per_pixel``). Raises :class:`InputError` for an
    unsupported encoding, a zero-size image, a too-small ``step`` or too little data, and
    :class:`ImageTooLargeError` when ``width * height > max_pixels``.
    """
    layout = _LAYOUT.get(encoding.lower()) if isinstance(encoding, str) else None
    if layout is None:
        raise InputError(f"unsupported image encoding {encoding!r}; supported encodings are "
                         f"{', '.join(SUPPORTED_ENCODINGS)} (or sensor_msgs/CompressedImage jpeg/png)")
    encoding = encoding.lower()
    channels, depth = layout
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise InputError(f"{encoding} image has zero size ({width}x{height}); the camera driver sent "
                         "an empty frame")
    _check_pixels(encoding, width, height, max_pixels)
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise InputError(f"{encoding} image {width}x{height}: step {step} is smaller than one row of "
                         f"pixels ({row_bytes} bytes); the message is malformed")
    buf = _buffer(data)
    if buf.size < step * height:
        raise InputError(f"{encoding} image {width}x{height}, step {step}: data has {buf.size} bytes, "
                         f"expected {step * height}; the message is truncated")
    rows = buf[:step * height].reshape(height, step)[:, :row_bytes]
    if depth == 2:
        dtype = np.dtype(">u2" if is_bigendian else "<u2")
        pixels16 = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
        mono = (pixels16 >> 8).astype(np.uint8)
        return np.repeat(mono[:, :, None], 3, axis=2)
    pixels = rows.reshape(height, width, channels)
    if encoding == "rgb8":
        return np.ascontiguousarray(pixels)
    # OpenCV's channel shuffles give the same bytes as numpy's strided copies (pixels[:, :, 2::-1],
    # np.repeat) in one pass, 30-40x faster at 1280x720 (docs/benchmarks.md, decode stages).
    return cv2.cvtColor(pixels, _TO_RGB[encoding])


def _sniff(buf: U8Image) -> str | None:
    head = bytes(buf[:8])
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head.startswith(b"\x89PNG"):
        return "png"
    return None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, ...); C4, C8 and CC are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length field
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        length = int.from_bytes(head[i + 2:i + 4], "big")
        if marker in _JPEG_SOF:
            if i + 9 > len(head):
                return None
            return int.from_bytes(head[i + 7:i + 9], "big"), int.from_bytes(head[i + 5:i + 7], "big")
        i += 2 + length
    return None


def compressed_image_size(data: bytes | bytearray | memoryview | npt.NDArray[np.uint8],
                          ) -> tuple[str, int, int] | None:
    """(codec, width, height) read from a PNG (IHDR) or JPEG (SOFn) header without decoding.

    None when the bytes are neither, or the header is truncated or malformed.
    """
    buf = _buffer(data)
    # A frame header follows the APPn/EXIF segments, which may be long (thumbnails): search the
    # first 256 KB, far beyond any real header, without copying a whole large image.
    head = bytes(buf[:262144])
    if head.startswith(_PNG_SIGNATURE) and len(head) >= 24 and head[12:16] == b"IHDR":
        return "png", int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head.startswith(b"\xff\xd8"):
        size = _jpeg_size(head)
        return None if size is None else ("jpeg", *size)
    return None


def image_from_compressed(format: str, data: bytes | bytearray | memoryview | npt.NDArray[np.uint8],
                          max_pixels: int = DEFAULT_MAX_PIXELS) -> U8Image:
    """Decode a ``sensor_msgs/CompressedImage`` (jpeg or png) into (H, W, 3) uint8 RGB.

    ``format`` is the message field: "jpeg", "png" or image_transport's long form
    ("rgb8; jpeg compressed bgr8"); when empty the codec is detected from the data. Raises
    :class:`InputError` for another codec (e.g. "compressedDepth", "theora") or undecodable data,
    and :class:`ImageTooLargeError` when the header claims more than ``max_pixels`` pixels (checked
    before decoding, so a small file that inflates to gigabytes costs nothing).
    """
    fmt = (format or "").lower()
    buf = _buffer(data)
    codec = next((c for c in SUPPORTED_FORMATS if c in fmt), None)
    if codec is None and ("jpg" in fmt):
        codec = "jpeg"
    if codec is None and not fmt.strip():
        codec = _sniff(buf)
    if codec is None or "compresseddepth" in fmt:
        raise InputError(f"unsupported compressed image format {format!r}; supported formats are "
                         f"{', '.join(SUPPORTED_FORMATS)}")
    if buf.size == 0:
        raise InputError(f"compressed {codec} image has no data; the camera driver sent an empty frame")
    header = compressed_image_size(buf)
    if header is None:
        # OpenCV would also decode TIFF, WebP, BMP ... whose sizes are not checked here.
        raise InputError(f"compressed {codec} image of {buf.size} bytes cannot be decoded: no "
                         "readable JPEG or PNG header; the message is corrupt, truncated or of another codec")
    _check_pixels(f"compressed {header[0]}", header[1], header[2], max_pixels)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise InputError(f"compressed {codec} image of {buf.size} bytes cannot be decoded; the "
                         "message is corrupt or truncated")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _check_rgb(image: npt.NDArray[np.uint8]) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
        raise InputError(f"expected a non-empty (H, W, 3) uint8 RGB image, got shape {image.shape} "
                         f"dtype {image.dtype}")


def rgb_to_raw(image: npt.NDArray[np.uint8], encoding: str = "rgb8") -> tuple[int, int, int, bytes]:
    """Encode (H, W, 3) uint8 RGB as ``sensor_msgs/Image`` fields ``(height, width, step, data)``.

    The inverse of :func:`image_from_raw` for rgb8/bgr8/rgba8/bgra8 (alpha 255); mono8 and mono16
    store the luma (mono16 as little-endian ``luma * 257``). Rows are unpadded.
    """
    _check_rgb(image)
    encoding = encoding.lower()
    if encoding not in _LAYOUT:
        raise InputError(f"unsupported image encoding {encoding!r}; supported encodings are "
                         f"{', '.join(SUPPORTED_ENCODINGS)}")
    height, width = image.shape[:2]
    if encoding in ("mono8", "mono16"):
        mono = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        pixels: np.ndarray = mono if encoding == "mono8" else (mono.astype("<u2") * 257)
    elif encoding == "rgb8":
        pixels = image
    elif encoding == "bgr8":
        pixels = image[:, :, ::-1]
    else:
        alpha = np.full((height, width, 1), 255, np.uint8)
        colour = image if encoding == "rgba8" else image[:, :, ::-1]
        pixels = np.concatenate([colour, alpha], axis=2)
    channels, depth = _LAYOUT[encoding]
    return height, width, width * channels * depth, np.ascontiguousarray(pixels).tobytes()


def rgb_to_compressed(image: npt.NDArray[np.uint8], format: str = "jpeg", quality: int = 95) -> bytes:
    """Encode (H, W, 3) uint8 RGB as jpeg or png bytes for a ``sensor_msgs/CompressedImage``."""
    _check_rgb(image)
    fmt = format.lower()
    if fmt not in SUPPORTED_FORMATS:
        raise InputError(f"unsupported compressed image format {format!r}; supported formats are "
                         f"{', '.join(SUPPORTED_FORMATS)}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", image[:, :, ::-1], params)
    if not ok:  # pragma: no cover - OpenCV fails only on absurd inputs
        raise InputError(f"OpenCV could not encode a {image.shape} image as {fmt}")
    return encoded.tobytes()
