"""Synthetic shopper photos of catalog items, for teaching the search space that a re-photographed,
cropped, re-exposed product is still the same product.

Deliberately wider than the evaluation's fixed shopper-photo protocol (evaluation.shopper_photo), so
the measured robustness is not the training distribution replayed."""

from __future__ import annotations

import hashlib
import io
import random

from PIL import Image, ImageEnhance

from .split import is_heldout

# One fit item in three gets a synthetic view, among the first AUGMENT_WINDOW stream positions, so the
# extra forward passes stay a fixed cost whatever the catalog's size. The search space trains on them
# with an instance loss (docs/experiments.md#search-space: shopper-photo rank-1).
AUGMENT_PERCENT = 33
AUGMENT_WINDOW = 10_000


def gets_view(item_id: int, position: int) -> bool:
    """Deterministic per item (resumable, independent of batching): does this item get a view? Never
    a held-out item: evaluation queries must stay unseen."""
    if position >= AUGMENT_WINDOW or is_heldout(item_id):
        return False
    digest = hashlib.sha1(f"view:{int(item_id)}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % 100 < AUGMENT_PERCENT


def shopper_view(image: Image.Image, seed: int) -> Image.Image:
    """Upscaled 2-5x and re-compressed, cropped up to 15%, on up to 25% white margin, rotated up to
    10 degrees, brightness and contrast changed up to 25%."""
    rng = random.Random(seed)
    scale = rng.uniform(2.0, 5.0)
    img = image.convert("RGB").resize(
        (max(1, int(image.width * scale)), max(1, int(image.height * scale))), Image.Resampling.BICUBIC
    )
    w, h = img.size
    keep_w, keep_h = rng.uniform(0.85, 1.0), rng.uniform(0.85, 1.0)
    dx, dy = int(w * (1 - keep_w) * rng.random()), int(h * (1 - keep_h) * rng.random())
    img = img.crop((dx, dy, dx + int(w * keep_w), dy + int(h * keep_h)))
    # Arguments are drawn left to right: the same order as the steps they drive.
    return rephotograph(
        img,
        rng.uniform(0.0, 0.25),
        rng.uniform(-10, 10),
        rng.uniform(0.75, 1.25),
        rng.uniform(0.75, 1.25),
        rng.randint(60, 90),
    ).convert("RGB")


def rephotograph(
    img: Image.Image, margin_share: float, angle: float, brightness: float, contrast: float, quality: int
) -> Image.Image:
    """`img` on a white margin (a share of its longer side), rotated, re-lit and re-compressed as JPEG."""
    margin = int(margin_share * max(img.size))
    canvas = Image.new("RGB", (img.width + 2 * margin, img.height + 2 * margin), "white")
    canvas.paste(img, (margin, margin))
    img = canvas.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255))
    img = ImageEnhance.Brightness(img).enhance(brightness)
    img = ImageEnhance.Contrast(img).enhance(contrast)
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))
