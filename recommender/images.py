"""The one image loader every path goes through (catalog, upload, URL, API): bytes in, safe RGB out."""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

ImageInput = Union[Image.Image, str, os.PathLike, bytes, bytearray, np.ndarray]

# A 60x80 catalog photo is 4,800 px and a phone photo ~12-50 MP; anything larger is refused before
# decoding so a "decompression bomb" cannot exhaust memory.
MAX_PIXELS = 50_000_000
MAX_BYTES = 10 * 1024 * 1024
# The most any step uses of a photo: the model's preprocessing shrinks it to this side before anything
# else, the editor's canvas is smaller still, and a catalog thumbnail is 256 pixels.
WORKING_SIDE = 1024
WHITE = (255, 255, 255)


def _open(data: bytes, max_side: int | None) -> Image.Image:
    if not data:
        raise ImageError("The file is empty; upload a JPEG, PNG, WebP or GIF photo.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
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
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"The image has more than the {MAX_PIXELS // 1_000_000} megapixels this service accepts; "
            "send a smaller photo."
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            "The file is not an image this service can read; send a JPEG, PNG, WebP or GIF photo."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise ImageError("The image file is damaged or truncated; send the complete photo again.") from None
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """EXIF orientation applied, transparent margins cut and the rest composited on white, any mode
    converted to 8-bit RGB."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of clipping everything above 255 to white.
        arr = np.asarray(img, dtype=np.float64)
        peak = arr.max() if arr.size and arr.max() > 255 else 255
        img = Image.fromarray((arr * (255.0 / peak)).clip(0, 255).astype(np.uint8), "L")
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
