"""Untrusted image bytes -> image_bgr uint8 (H, W, 3), or a RequestError naming the problem.

Only JPEG, PNG, WebP and BMP are accepted, told by their first bytes (never by a file name or a content type). Their
width and height are read from the header before anything is decoded, so a small file that claims a huge picture (a
decompression bomb) is refused without allocating it.
"""

import base64
import binascii
import struct

import cv2
import numpy as np

FORMATS = ("jpeg", "png", "webp", "bmp")


class RequestError(Exception):
    """A request the server refuses: HTTP status and a message naming the problem (sent as {"error": message})."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def sniff_format(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM":
        return "bmp"
    return None


def image_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) from the header of a `fmt` file, or None when the header is cut short or malformed."""
    try:
        if fmt == "png":  # IHDR is the first chunk: width, height as big-endian uint32 at bytes 16..24
            return struct.unpack(">II", data[16:24]) if data[12:16] == b"IHDR" else None
        if fmt == "bmp":  # BITMAPINFOHEADER: int32 width, int32 height (negative: top-down rows)
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)
        if fmt == "webp":
            return _webp_size(data)
        return _jpeg_size(data)
    except struct.error:
        return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit width and height after the 3-byte start code at 23..26
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14 bits each, minus one, after the 0x2f signature byte
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas width and height, minus one
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the marker segments to the first start-of-frame (SOF0..SOF15 but DHT C4, JPG C8 and DAC CC)."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes of a JPEG, PNG, WebP or BMP file -> image_bgr uint8 (H, W, 3). RequestError: 422 for an empty body,
    bytes that are no image or an image that does not decode, 415 for another image format, 413 for a picture of more
    than max_pixels pixels."""
    if not data:
        raise RequestError(422, "empty image: the request carried no bytes")
    fmt = sniff_format(data)
    if fmt is None:
        if data[:4] in (b"GIF8", b"II*\x00", b"MM\x00*"):
            raise RequestError(415, f"unsupported image format ({'GIF' if data[:3] == b'GIF' else 'TIFF'}); send "
                                    f"JPEG, PNG, WebP or BMP")
        raise RequestError(422, f"not an image: {len(data)} bytes starting {data[:8]!r} are not JPEG, PNG, WebP "
                                f"or BMP")
    size = image_size(data, fmt)
    if size is None:
        raise RequestError(422, f"corrupt {fmt.upper()}: no readable width and height in its header "
                                f"({len(data)} bytes)")
    width, height = size
    if width * height > max_pixels:
        raise RequestError(413, f"image too large: {width}x{height} = {width * height} pixels, the limit is "
                                f"{max_pixels} pixels")
    if width == 0 or height == 0:
        raise RequestError(422, f"corrupt {fmt.upper()}: its header says {width}x{height} pixels")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise RequestError(422, f"corrupt {fmt.upper()}: {len(data)} bytes that OpenCV cannot decode "
                                f"(header says {width}x{height})")
    return image


def decode_base64(text: str, field: str = "image") -> bytes:
    """A base64 string, or a data URL (data:image/jpeg;base64,...), -> bytes; RequestError 422 naming the field."""
    if not isinstance(text, str) or not text:
        raise RequestError(422, f"JSON field '{field}' must be a non-empty base64 string, got {type(text).__name__}")
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise RequestError(422, f"JSON field '{field}': a data URL must be base64 ('data:image/jpeg;base64,...')")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(422, f"JSON field '{field}' is not valid base64 ({error})") from None
