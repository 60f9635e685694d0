"""PNG in and out with the standard library alone (zlib), for the GPU check's parity images.

`read(path)` returns an `Image`: width, height, channels (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA),
bit depth (8 or 16) and the samples as a flat list of ints in row-major, channel-interleaved
order. Non-interlaced PNGs of colour types 0, 2, 4 and 6 at 8 or 16 bits, filters 0-4: what
diffsr writes and what the fixtures hold. Palette and Adam7 images are refused with a message.
OpenCV is used instead where it is installed (it is on the GPU machine), since it is faster.

`write(path, image)` writes such an image (filter 0, one IDAT); `to_16bit(image)` scales 8-bit
samples by 257, so 16-bit and 8-bit versions hold the same values in 0..1.
"""

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


class Image:
    """Decoded samples: `data[(y * width + x) * channels + c]`, each 0..2**depth - 1."""

    def __init__(self, width, height, channels, depth, data):
        self.width = width
        self.height = height
        self.channels = channels
        self.depth = depth
        self.data = data

    @property
    def max_value(self):
        return (1 << self.depth) - 1

    def describe(self):
        return f"{self.width}x{self.height}x{self.channels}, {self.depth}-bit"


def _chunks(raw, path):
    if raw[:8] != SIGNATURE:
        raise ValueError(f"{path}: not a PNG file")
    pos = 8
    while pos + 8 <= len(raw):
        length, kind = struct.unpack(">I4s", raw[pos:pos + 8])
        body = raw[pos + 8:pos + 8 + length]
        if len(body) != length:
            raise ValueError(f"{path}: truncated {kind!r} chunk")
        yield kind, body
        pos += 12 + length
        if kind == b"IEND":
            return
    raise ValueError(f"{path}: no IEND chunk")


def _unfilter(scanlines, height, stride, bpp):
    """Undoes the per-row filters (PNG spec section 9) into one bytearray of pixel rows."""
    out = bytearray(height * stride)
    prev = bytearray(stride)
    pos = 0
    for y in range(height):
        kind = scanlines[pos]
        row = bytearray(scanlines[pos + 1:pos + 1 + stride])
        pos += 1 + stride
        if kind == 1:
            for i in range(bpp, stride):
                row[i] = (row[i] + row[i - bpp]) & 0xFF
        elif kind == 2:
            for i in range(stride):
                row[i] = (row[i] + prev[i]) & 0xFF
        elif kind == 3:
            for i in range(stride):
                left = row[i - bpp] if i >= bpp else 0
                row[i] = (row[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = row[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                row[i] = (row[i] + pred) & 0xFF
        elif kind != 0:
            raise ValueError(f"bad PNG filter type {kind} in row {y}")
        out[y * stride:(y + 1) * stride] = row
        prev = row
    return out


def read_stdlib(path):
    """Decodes a PNG with zlib alone (see the module's docstring for what it accepts)."""
    with open(path, "rb") as f:
        raw = f.read()
    header = None
    idat = []
    for kind, body in _chunks(raw, path):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    if header is None:
        raise ValueError(f"{path}: no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if colour not in CHANNELS or depth not in (8, 16):
        raise ValueError(f"{path}: colour type {colour} at {depth} bits is not supported here")
    if interlace:
        raise ValueError(f"{path}: interlaced PNGs are not supported here")
    channels = CHANNELS[colour]
    bpp = channels * depth // 8
    stride = width * bpp
    scanlines = zlib.decompress(b"".join(idat))
    if len(scanlines) < height * (stride + 1):
        raise ValueError(f"{path}: image data is shorter than {width}x{height} needs")
    pixels = _unfilter(scanlines, height, stride, bpp)
    if depth == 8:
        data = list(pixels)
    else:
        data = list(struct.unpack(f">{len(pixels) // 2}H", bytes(pixels)))
    return Image(width, height, channels, depth, data)


def read(path):
    """Decodes a PNG, with OpenCV where it is installed, else with `read_stdlib`."""
    try:
        import cv2  # noqa: PLC0415 (optional)
        import numpy as np  # noqa: PLC0415
    except ImportError:
        return read_stdlib(path)
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        return read_stdlib(path)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    channels = arr.shape[2]
    if channels == 3:
        arr = arr[:, :, ::-1]  # BGR -> RGB
    elif channels == 4:
        arr = arr[:, :, [2, 1, 0, 3]]
    depth = 16 if arr.dtype == np.uint16 else 8
    image = Image(arr.shape[1], arr.shape[0], channels, depth, None)
    image.array = np.ascontiguousarray(arr)
    image.data = image.array.reshape(-1)
    return image


def _chunk(kind, body):
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def write(path, image):
    """Writes `image` as a non-interlaced PNG (filter 0 on every row)."""
    colour = {1: 0, 3: 2, 2: 4, 4: 6}[image.channels]
    stride = image.width * image.channels
    if image.depth == 16:
        pixels = struct.pack(f">{len(image.data)}H", *image.data)
        stride *= 2
    else:
        pixels = bytes(image.data)
    rows = b"".join(b"\x00" + pixels[y * stride:(y + 1) * stride] for y in range(image.height))
    header = struct.pack(">IIBBBBB", image.width, image.height, image.depth, colour, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows, 9))
                + _chunk(b"IEND", b""))


def to_16bit(image):
    """The same picture at 16 bits a sample (v * 257: 255 -> 65535)."""
    if image.depth == 16:
        return image
    return Image(image.width, image.height, image.channels, 16, [v * 257 for v in image.data])
