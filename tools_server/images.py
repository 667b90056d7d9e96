"""Content-addressed, bounded, thread-safe image store with safe decoding.

An image's id is the sha256 (hex) of its stored PNG bytes: an uploaded PNG is kept byte for
byte (so a client can compute the id itself), a JPEG is re-encoded to PNG, and a tool's
output is encoded once. The store evicts least-recently-used images beyond `max_images` or
`max_bytes` (PNG bytes plus decoded pixels).

Decoding accepts PNG and JPEG only, checks the pixel count from the header before
decoding pixels (decompression bombs), and turns every decoder failure into InvalidImage.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import io
import re
import threading
import warnings
import weakref

from PIL import Image

IMAGE_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_FORMATS = ("PNG", "JPEG")
_KEEP_MODES = ("RGB", "RGBA", "L")


class InvalidImage(Exception):
    """Bytes that are not an image we accept. `status` is the HTTP status to answer with."""

    def __init__(self, message: str, *, code: str = "invalid_image", status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclasses.dataclass(frozen=True)
class StoredImage:
    image_id: str
    png: bytes
    image: Image.Image  # decoded, mode RGB / RGBA / L; shared: never modify it

    @property
    def nbytes(self) -> int:
        w, h = self.image.size
        return len(self.png) + w * h * len(self.image.getbands())


def is_image_id(value: str) -> bool:
    return bool(IMAGE_ID_RE.match(value))


def _canonical(image: Image.Image) -> Image.Image:
    if image.mode in _KEEP_MODES:
        return image
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # fast; the store is in memory anyway
    return buf.getvalue()


def _open(data: bytes) -> Image.Image:
    with warnings.catch_warnings():
        # Our own pixel limit (checked before decoding) replaces Pillow's global bomb warning.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=_FORMATS)


def decode_image(data: bytes, *, max_pixels: int) -> tuple[Image.Image, str]:
    """(decoded image in a canonical mode, format) or InvalidImage."""
    if not data:
        raise InvalidImage("empty body: expected PNG or JPEG bytes")
    try:
        with _open(data) as im:  # reads the header only
            w, h = im.size
            if w <= 0 or h <= 0:
                raise InvalidImage(f"image has an empty size {w}x{h}")
            if w * h > max_pixels:
                raise InvalidImage(f"image of {w}x{h} pixels exceeds the limit of {max_pixels} "
                                   "pixels (decompression bomb?)")
            fmt = im.format
            if fmt == "PNG":
                # PNGs are served back byte for byte, so they must be whole: verify() checks
                # every chunk's CRC and the IEND (decoding alone tolerates a missing tail).
                im.verify()
        with _open(data) as im:  # verify() leaves the image unusable: open again to decode
            im.load()
            image = _canonical(im)
            if image is im:
                image = im.copy()
    except InvalidImage:
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidImage(f"decompression bomb: {exc}") from None
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        raise InvalidImage(f"cannot decode image ({type(exc).__name__}: {exc}); "
                           "expected PNG or JPEG") from None
    return image, fmt


def per_image(fn):
    """Memoises `fn(image)` per image object, for as long as the image lives.

    Stored images are shared and never modified, and a policy's G samples of one task call
    the same readers on the same image: the pixels are analysed once. Results are shared
    between threads and calls, so they must be treated as read-only. Errors are not cached.
    Keyed by identity (PIL images are unhashable); a weak reference drops the entry with the
    image.
    """
    cache: dict[int, tuple[weakref.ref, object]] = {}
    lock = threading.Lock()

    def forget(key: int, ref: weakref.ref) -> None:
        with lock:
            if key in cache and cache[key][0] is ref:
                del cache[key]

    @functools.wraps(fn)
    def cached(image):
        key = id(image)
        with lock:
            hit = cache.get(key)
        if hit is not None and hit[0]() is image:
            return hit[1]
        value = fn(image)
        ref = weakref.ref(image, lambda r, key=key: forget(key, r))
        with lock:
            cache[key] = (ref, value)
        return value

    cached.cache_size = lambda: len(cache)  # for tests
    return cached


class ImageStore:
    def __init__(self, *, max_images: int = 4096, max_bytes: int = 1 << 30,
                 max_pixels: int = 25_000_000):
        self.max_images, self.max_bytes, self.max_pixels = max_images, max_bytes, max_pixels
        self._items: collections.OrderedDict[str, StoredImage] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._items

    @property
    def nbytes(self) -> int:
        return self._bytes

    def put_bytes(self, data: bytes) -> StoredImage:
        """Decodes and stores uploaded bytes (CPU-bound: call off the event loop)."""
        image, fmt = decode_image(data, max_pixels=self.max_pixels)
        png = data if fmt == "PNG" else encode_png(image)
        return self._put(StoredImage(hashlib.sha256(png).hexdigest(), png, image))

    def put_image(self, image: Image.Image) -> StoredImage:
        """Stores an image a tool produced."""
        w, h = image.size
        if w * h > self.max_pixels:
            raise InvalidImage(f"image of {w}x{h} pixels exceeds the limit of {self.max_pixels}")
        image = _canonical(image)
        png = encode_png(image)
        return self._put(StoredImage(hashlib.sha256(png).hexdigest(), png, image))

    def get(self, image_id: str) -> StoredImage | None:
        with self._lock:
            item = self._items.get(image_id)
            if item is not None:
                self._items.move_to_end(image_id)
            return item

    def _put(self, item: StoredImage) -> StoredImage:
        if item.nbytes > self.max_bytes:
            raise InvalidImage(f"image needs {item.nbytes} bytes, more than the store holds "
                               f"({self.max_bytes})", code="image_too_large", status=413)
        with self._lock:
            existing = self._items.get(item.image_id)
            if existing is not None:
                self._items.move_to_end(item.image_id)
                return existing
            self._items[item.image_id] = item
            self._bytes += item.nbytes
            while len(self._items) > self.max_images or self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes
            return item
