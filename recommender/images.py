"""The one image loader every path goes through (catalog, upload, URL, API): bytes in, safe RGB out."""

from __future__ import annotations

import io
import math
import os
import threading
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

ImageInput = Union[Image.Image, str, os.PathLike, bytes, bytearray, np.ndarray]

try:  # HEIC/HEIF, what iPhones send: a plugin with its own libheif in the wheel
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - the app works without it, and says which formats it reads
    pass

# The formats Pillow may parse, checked from the file's first bytes before any parser runs: what cameras,
# phones and the web send. Everything else (EPS runs Ghostscript, PSD, FITS, ICO, TIFF...) is refused
# unread, as Pillow's advisory GHSA-whj4-6x5x-4v2j recommends. MPO is the JPEG many phone cameras write.
Image.init()  # every plugin registered, so that the list below names only formats this Pillow reads
FORMATS = tuple(f for f in ("JPEG", "MPO", "PNG", "WEBP", "GIF", "AVIF", "HEIF") if f in Image.OPEN)
FORMAT_NAMES = "a JPEG, PNG, WebP, GIF, AVIF" + (" or HEIC photo" if "HEIF" in FORMATS else " photo")
# A 60x80 catalog photo is 4,800 px and a phone photo ~12-50 MP; anything larger is refused before
# decoding so a "decompression bomb" cannot exhaust memory.
MAX_PIXELS = 50_000_000
MAX_BYTES = 10 * 1024 * 1024
# Photos over this many pixels decode two at a time: each holds up to ~250 MB while it is decoded and
# shrunk (a 16-bit 50 MP PNG), so eight at once would need 2 GB; the rest decode freely.
LARGE_PIXELS = 16_000_000
_large_decodes = threading.BoundedSemaphore(2)
# The most any step uses of a photo: the model's preprocessing shrinks it to this side before anything
# else, the editor's canvas is smaller still, and a catalog thumbnail is 256 pixels.
WORKING_SIDE = 1024
WHITE = (255, 255, 255)


def _open(data: bytes, max_side: int | None) -> Image.Image:
    if not data:
        raise ImageError(f"The file is empty; upload {FORMAT_NAMES}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = img.size  # read from the header, before any pixel is decoded
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"The image is {width}x{height} pixels, more than the {MAX_PIXELS // 1_000_000} megapixels "
                    "this service accepts; send a smaller photo."
                )
            img.seek(0)  # animated GIF/WebP/APNG: the first frame
            if max_side is not None and img.format == "JPEG" and max(width, height) >= 2 * max_side:
                # libjpeg scales by 1/2, 1/4 or 1/8 as it decodes (in the DCT): a phone's 12-megapixel
                # photo in a quarter of the time, still at least max_side on its longer side.
                scale = max_side / max(width, height)
                img.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))
            with _large_decodes if width * height > LARGE_PIXELS else nullcontext():
                img.load()
                img = _shrink(img, max_side)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"The image has more than the {MAX_PIXELS // 1_000_000} megapixels this service accepts; "
            "send a smaller photo."
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"The file is not an image this service can read; send {FORMAT_NAMES}.") from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise ImageError("The image file is damaged or truncated; send the complete photo again.") from None
    return img


def _to_8bit(img: Image.Image) -> Image.Image:
    """16/32-bit grayscale scaled to 8 bits (instead of clipping everything above 255 to white), a band
    of rows at a time: a 50 MP image never exists as one float (or even one 16-bit) array."""
    peak = float(img.getextrema()[1] or 0)
    scale = np.float32(255.0 / peak) if peak > 255 else np.float32(1.0)
    width, height = img.size
    out = np.empty((height, width), np.uint8)
    for top in range(0, height, 256):
        band = np.asarray(img.crop((0, top, width, min(height, top + 256))), dtype=np.float32)
        out[top : top + 256] = (band * scale).clip(0, 255)
    return Image.fromarray(out)


def _shrink(img: Image.Image, max_side: int | None) -> Image.Image:
    """A photo at least twice `max_side` reduced by a whole factor (box filter, fast, little memory),
    keeping at least `max_side`: what JPEG's decode-time scaling does, for every other format."""
    if max_side is None or max(img.size) < 2 * max_side:
        return img
    info = img.info
    if img.mode in ("I;16", "I;16B", "I;16L"):
        img = _to_8bit(img)
    elif img.mode in ("P", "1"):
        img = img.convert("RGBA" if img.mode == "P" else "L")
    img = img.reduce(max(img.size) // max_side)
    img.info.update(info)  # the EXIF orientation still applies
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """EXIF orientation applied, transparent margins cut and the rest composited on white, any mode
    converted to 8-bit RGB."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        # A transparent margin is not part of the photo: the app's photo editor centres every photo on a
        # fixed, transparent canvas.
        img = img.crop(img.getchannel("A").getbbox() or (0, 0, *img.size))
        canvas = Image.new("RGB", img.size, WHITE)
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas
    return img.convert("RGB") if img.mode != "RGB" else img


def load_image(source: ImageInput, max_side: int | None = WORKING_SIDE) -> Image.Image:
    """Any supported input (PIL image, path, bytes, HxWxC array) as a safe RGB PIL image. A JPEG at least
    twice `max_side` is decoded smaller, keeping at least `max_side` (None: always whole)."""
    if isinstance(source, Image.Image):
        if source.width * source.height > MAX_PIXELS:
            raise ImageError("The image is larger than this service accepts; send a smaller photo.")
        return to_rgb(source)
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or source.size == 0:
            raise ImageError("The array is not an image (expected height x width x channels); send a photo instead.")
        return to_rgb(Image.fromarray(source.astype(np.uint8)))
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"No image file at {path}; check the path.")
        if path.stat().st_size > MAX_BYTES * 5:
            raise ImageError("The file is larger than 50 MB; send a smaller photo.")
        data = path.read_bytes()
    return to_rgb(_open(data, max_side))


def pad_to_aspect(img: Image.Image, aspect: float, fill: tuple[int, int, int] = WHITE) -> Image.Image:
    """Centre the image on a white canvas of width/height `aspect`, so no part of the product is cropped
    away. On the catalog, padding tied with centre crop; for shopper photos of any shape it keeps the
    whole item in view."""
    width, height = img.size
    canvas_w, canvas_h = max(width, round(height * aspect)), max(height, round(width / aspect))
    if (canvas_w, canvas_h) == (width, height):
        return img
    canvas = Image.new("RGB", (canvas_w, canvas_h), fill)
    canvas.paste(img, ((canvas_w - width) // 2, (canvas_h - height) // 2))
    return canvas
