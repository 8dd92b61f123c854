"""Decoding on the GPU: a batch's JPEG photos decoded by nvJPEG and brought to the model's input as
tensor operations (trim to the product, colour histogram, catalog detail, white padding, resize), so a
GPU build is not bound by CPU decoding. The steps are the Preprocessor's (foreground.py, images.py,
timm's resize) in torch: the same mask and histogram, pixels equal up to the JPEG decoders' and the
resamplers' rounding (tests/test_gpu_decode.py). Runs on any device; the build uses it where the model
is on a GPU."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ..embedder import FRAMING_EXPONENT, MAX_SIDE_BEFORE_PAD, Preprocessor
from ..foreground import COLOUR_BINS, LEVELS, MASK_SIDE, MIN_SHARE, TOLERANCE
from ..images import MAX_PIXELS

WHITE = 255
_EXIF_ORIENTATION = 0x0112


def gpu_decodable(data: bytes | None) -> tuple[int, int] | None:
    """The (width, height) of a photo the GPU decodes as the CPU loader would (a JPEG, RGB or grayscale,
    upright, within the pixel limit), from its header alone; None for any other."""
    if not data or data[:3] != b"\xff\xd8\xff":
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            upright = image.getexif().get(_EXIF_ORIENTATION, 1) == 1
            if image.mode in ("RGB", "L") and upright and image.width * image.height <= MAX_PIXELS:
                return image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        pass
    return None


def thumbnail_size(width: int, height: int, side: int) -> tuple[int, int]:
    """Pillow's Image.thumbnail((side, side)) size for a width x height image (its rounding included)."""
    if width <= side and height <= side:
        return width, height
    aspect = width / height
    x, y = side, side

    def round_aspect(number: float, key) -> int:
        return max(min(math.floor(number), math.ceil(number), key=key), 1)

    if x / y >= aspect:
        x = round_aspect(y * aspect, key=lambda n: abs(aspect - n / y))
    else:
        y = round_aspect(x / aspect, key=lambda n: 0 if n == 0 else abs(aspect - x / n))
    return x, y


def _resized(image: torch.Tensor, size: tuple[int, int], mode: InterpolationMode) -> torch.Tensor:
    """(..., 3, H, W) uint8 -> (..., 3, height, width) uint8, antialiased as Pillow resamples."""
    return F.resize(image, list(size), interpolation=mode, antialias=True)


def _shrunk(image: torch.Tensor, side: int, mode: InterpolationMode) -> torch.Tensor:
    height, width = image.shape[-2:]
    new_w, new_h = thumbnail_size(width, height, side)
    return image if (new_w, new_h) == (width, height) else _resized(image, (new_h, new_w), mode)


class TensorPreprocessor:
    """The Preprocessor's steps on a device: encoded JPEGs -> (the model's (H, W, 3) uint8 pixels on the
    device, the colour histogram as numpy), a batch at a time."""

    def __init__(self, preprocessor: Preprocessor, device: torch.device) -> None:
        self.preprocessor, self.device = preprocessor, device

    def decode(self, photos: list[bytes]) -> list[torch.Tensor | None]:
        """(3, H, W) uint8 RGB on the device per photo; None where the decoder refuses it."""
        encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in photos]
        with warnings.catch_warnings():
            # torchvision 0.29 points to TorchCodec for decoding; torchvision is pinned, its decoder stays.
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device))
            except (RuntimeError, ValueError):  # one bad photo fails the batch call (or memory ran out): one by one
                decoded: list[torch.Tensor | None] = []
                for one in encoded:
                    try:
                        decoded.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=self.device))
                    except (RuntimeError, ValueError):
                        decoded.append(None)
                return decoded

    def __call__(self, photos: list[bytes]) -> list[tuple[torch.Tensor, np.ndarray] | None]:
        """Model inputs of encoded photos (see `Preprocessor.__call__`); None where one cannot be decoded."""
        images = self.decode(photos)
        out: list[tuple[torch.Tensor, np.ndarray] | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            if image is not None:
                image = _shrunk(image, MAX_SIDE_BEFORE_PAD, InterpolationMode.BILINEAR)
                images[i] = image
                groups.setdefault(tuple(image.shape[-2:]), []).append(i)
        # Photos of one size (most of a catalog's) find their masks and histograms together.
        for members in groups.values():
            batch = torch.stack([images[i] for i in members])
            boxes, colours = self._trim_and_colour(batch)
            for j, i in enumerate(members):
                out[i] = self._pixels(images[i], boxes[j]), colours[j]
        return out

    def _trim_and_colour(self, batch: torch.Tensor) -> tuple[list[tuple[int, int, int, int]], np.ndarray]:
        """foreground.trim_and_colour of (n, 3, H, W) uint8 photos of one size: each one's product box
        (left, top, right, bottom) and colour histogram, with one copy back from the device."""
        height, width = batch.shape[-2:]
        small = _shrunk(batch, MASK_SIDE, InterpolationMode.BILINEAR).to(torch.int16)
        h, w = small.shape[-2:]
        border = torch.cat([small[..., 0, :], small[..., -1, :], small[..., :, 0], small[..., :, -1]], dim=-1)
        background = torch.quantile(border.float(), 0.5, dim=-1)  # numpy's median: middle values averaged
        mask = (small.float() - background[..., None, None]).abs().amax(dim=1) > TOLERANCE  # (n, h, w)
        rows, cols = mask.any(dim=2), mask.any(dim=1)
        count = mask.sum(dim=(1, 2))

        def first(flags: torch.Tensor) -> torch.Tensor:
            return flags.int().argmax(dim=1)

        def last(flags: torch.Tensor) -> torch.Tensor:
            return flags.shape[1] - 1 - flags.flip(1).int().argmax(dim=1)

        stats = torch.stack([count, first(rows), last(rows), first(cols), last(cols)], dim=1)
        # The histogram counts the product's pixels, or all of them where the product is a few pixels.
        weights = torch.where((count >= 30)[:, None, None], mask, torch.ones_like(mask)).float()
        q = small // (256 // LEVELS)
        bins = (q[:, 0] * LEVELS + q[:, 1]) * LEVELS + q[:, 2]
        offsets = torch.arange(len(batch), device=batch.device)[:, None, None] * COLOUR_BINS
        counts = torch.zeros(len(batch) * COLOUR_BINS, device=batch.device)
        counts.index_add_(0, (bins + offsets).flatten(), weights.flatten())
        counts = counts.view(len(batch), COLOUR_BINS)
        colours = torch.sqrt(counts / counts.sum(dim=1, keepdim=True).clamp(min=1.0))
        stats, colours = stats.cpu().numpy(), colours.cpu().numpy()
        boxes = []
        sx, sy = width / w, height / h
        for n, y0, y1, x0, x1 in stats.tolist():
            if n < 16 or (y1 - y0 + 1) * (x1 - x0 + 1) < MIN_SHARE * h * w:
                boxes.append((0, 0, width, height))
            else:
                boxes.append((int(x0 * sx), int(y0 * sy), int(np.ceil((x1 + 1) * sx)), int(np.ceil((y1 + 1) * sy))))
        return boxes, colours.astype(np.float32)

    def _pixels(self, image: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
        """Preprocessor._pixels: the product at the catalog's detail, padded white to the input's aspect,
        through timm's eval resize, as (H, W, 3) uint8."""
        frame_side = max(image.shape[-2:])
        left, top, right, bottom = box
        product = image[:, top:bottom, left:right]
        detail = self.preprocessor.detail_side
        if detail is not None:
            share = max(product.shape[-2:]) / frame_side
            product = _shrunk(product, max(1, round(detail * share**FRAMING_EXPONENT)), InterpolationMode.BICUBIC)
        height, width = product.shape[-2:]
        aspect = self.preprocessor.aspect
        canvas_w, canvas_h = max(width, round(height * aspect)), max(height, round(width / aspect))
        left, top = (canvas_w - width) // 2, (canvas_h - height) // 2
        padded = torch.nn.functional.pad(
            product, (left, canvas_w - width - left, top, canvas_h - height - top), value=WHITE
        )
        return self.preprocessor.resize(padded).permute(1, 2, 0)  # timm's transform works on tensors too
