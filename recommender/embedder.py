"""The Embedder owns the model and its preprocessing, so precompute and queries cannot drift apart."""
from __future__ import annotations

import os
import threading
from contextlib import nullcontext
from typing import Sequence

import numpy as np
import timm
import torch
from PIL import Image

from .images import ImageInput, load_image, pad_to_square
from .weights import load_model, state_dict_sha256

# 224 px, pad-to-square on white: leave-one-out P@10 articleType 0.743 on fashion-dev; 128 px loses
# ~4.6 points (see README results).
INPUT_SIZE = 224
MAX_SIDE_BEFORE_PAD = 1024


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast pays off where the hardware has native bf16 (AVX-512 BF16/AMX on CPU, Ampere+ GPUs)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class Embedder:
    """ResNet50 -> global-average-pooled 2048-d features, L2-normalised; plus ImageNet logits."""

    def __init__(self, weights: str | os.PathLike | None = None, device: str | None = None,
                 precision: str = "auto", input_size: int = INPUT_SIZE) -> None:
        weights = weights if weights is not None else os.environ.get("RECOMMENDER_WEIGHTS") or None
        model, self.weights_info = load_model(weights)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.weights_sha256 = state_dict_sha256(model)
        self.labels: list[str] = self.weights_info["layout"].get("labels", [])
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        if precision == "auto":
            precision = "bf16" if bf16_supported(self.device) else "fp32"
        self.precision = precision
        config = timm.data.resolve_data_config({}, model=self.model)
        # crop_pct 1.0: the image is already square after padding, so nothing may be cropped away.
        config.update(input_size=(3, input_size, input_size), crop_pct=1.0)
        self.transform = timm.data.create_transform(**config)
        self.preprocessing = {
            "pad_to_square": "white",
            "input_size": input_size,
            "interpolation": config["interpolation"],
            "mean": [round(float(v), 6) for v in config["mean"]],
            "std": [round(float(v), 6) for v in config["std"]],
        }
        # One forward pass at a time: two requests sharing 2 cores only slow each other down and double
        # peak memory. (A dedicated model thread was tried: each thread's OpenMP team then spins against
        # the other's, and a query's features took 51 ms instead of 29.)
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return int(self.model.num_features)

    def describe(self) -> dict:
        """What the manifest records so an index can refuse a different model or preprocessing."""
        return {
            "architecture": "resnet50",
            "weights_source": self.weights_info["source"],
            "weights_sha256": self.weights_sha256,
            "layout": {k: v for k, v in self.weights_info["layout"].items() if k != "labels"},
            "preprocessing": self.preprocessing,
            "precision": self.precision,
            "dim": self.dim,
        }

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> normalised CHW tensor (pad to a white square, resize)."""
        if max(image.size) > MAX_SIDE_BEFORE_PAD:
            # A 20000x1 strip would become a 20000x20000 canvas; the model only sees 224 px anyway.
            image = image.copy()
            image.thumbnail((MAX_SIDE_BEFORE_PAD, MAX_SIDE_BEFORE_PAD), Image.Resampling.BILINEAR)
        return self.transform(pad_to_square(image))

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def forward(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """A preprocessed batch -> (L2-normalised features, ImageNet logits), as float32 numpy."""
        batch = batch.to(self.device, memory_format=torch.channels_last, non_blocking=True)
        with self._lock, torch.inference_mode(), self._autocast():
            features = self.model.forward_head(self.model.forward_features(batch), pre_logits=True)
            logits = self.model.get_classifier()(features)
        features = torch.nn.functional.normalize(features.float(), dim=1)
        return features.cpu().numpy(), logits.float().cpu().numpy()

    def embed(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Images of any supported input kind -> (n, dim) float32 unit vectors."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        batch = torch.stack([self.preprocess(load_image(img)) for img in images])
        return self.forward(batch)[0]

    def embed_one(self, image: ImageInput) -> np.ndarray:
        return self.embed([image])[0]
