"""The Embedder owns the model and its preprocessing, so precompute and queries cannot drift apart."""

from __future__ import annotations

import copy
import hashlib
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import timm
import torch
import torchvision
from PIL import Image

from . import ort_int8
from .backbones import BackboneSpec, backbone
from .batching import QueryBatcher
from .errors import ArtifactsError, UserError, WeightsError
from .foreground import COLOUR_BINS, TOLERANCE, trim_and_colour, trim_background
from .images import WORKING_SIDE, ImageInput, load_image, pad_to_aspect
from .model_paths import (
    INT8_PATHS,
    Backbone,
    ModelPath,
    choose_precision,
    float_precision,
    int8_supported,
    model_path,
    ort_int8_supported,
)
from .pooling import GEM_P, GRID, LEVELS, gem_pool, grid_gem, regional_gem
from .settings import PRECISIONS, Settings
from .weights import load_model, state_dict_sha256

# How much of a photo's framing its product keeps when it is brought to the catalog's detail: 0 sizes
# every product like one filling a catalog photo, 1 keeps the photo's own framing; 0.25 measured best
# on real photos and on re-framed ones together (docs/experiments.md#real-photos).
FRAMING_EXPONENT = 0.25
MAX_SIDE_BEFORE_PAD = WORKING_SIDE
# Catalog photos whose activations set int8's ranges: the first ones of the catalog being built.
INT8_CALIBRATION_IMAGES = 128


def _bounded(image: Image.Image) -> Image.Image:
    """At most MAX_SIDE_BEFORE_PAD on its longer side: a 20000x1 strip would otherwise become a huge
    canvas, and the model only sees 224 px anyway."""
    if max(image.size) <= MAX_SIDE_BEFORE_PAD:
        return image
    image = image.copy()
    image.thumbnail((MAX_SIDE_BEFORE_PAD, MAX_SIDE_BEFORE_PAD), Image.Resampling.BILINEAR)
    return image


class Preprocessor:
    """A photo -> (the pixels the model sees, colour histogram). Holds no model, so it pickles cheaply
    into the decode processes; the pixels stay uint8 (half of float16's bytes between processes) and
    the model's batch does the arithmetic of normalising them (Embedder.feature_maps)."""

    def __init__(
        self, resize: Callable[[Image.Image], Image.Image], aspect: float, detail_side: int | None = None
    ) -> None:
        self.resize, self.aspect, self.detail_side = resize, aspect, detail_side

    def __call__(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
        """RGB PIL image -> (the model input of the product, see `model_input`; its colour histogram)."""
        image = _bounded(image)
        product, colour = trim_and_colour(image)
        return self._pixels(product, max(image.size)), colour

    def model_input(self, image: Image.Image, trim: bool = True) -> np.ndarray:
        """RGB PIL image -> (H, W, 3) uint8: the product trimmed from its background (unless `trim` is
        False), brought to the catalog's level of detail, padded on white to the input's aspect and resized."""
        image = _bounded(image)
        return self._pixels(trim_background(image) if trim else image, max(image.size))

    def at_catalog_detail(self, product: Image.Image, frame_side: int | None = None) -> Image.Image:
        """A product sharper than the catalog's photos (a shopper's upload, a large product image),
        shrunk to the detail they carry before the model sees it: at most `detail_side` px on its longer
        side, less when it fills less of its photo (`frame_side`, the photo's longer side), as a small
        item does in a catalog photo. The catalog's own photos are already within it."""
        if self.detail_side is None:
            return product
        share = max(product.size) / max(frame_side or 0, *product.size)
        side = max(1, round(self.detail_side * share**FRAMING_EXPONENT))
        if max(product.size) <= side:
            return product
        product = product.copy()
        # Pillow's thumbnail (box reduction, then bicubic): the way catalogs' small images are made.
        product.thumbnail((side, side))
        return product

    def _pixels(self, product: Image.Image, frame_side: int) -> np.ndarray:
        product = self.at_catalog_detail(product, frame_side)
        return np.asarray(self.resize(pad_to_aspect(product, self.aspect)).convert("RGB"), np.uint8)


class _Features(torch.nn.Module):
    """The backbone's last and mid-stage feature maps, as its description (backbones.py) runs it."""

    def __init__(self, model: torch.nn.Module, spec: BackboneSpec) -> None:
        super().__init__()
        self.model, self.spec = model, spec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.spec.feature_maps(self.model, x)


class _Normalise(torch.nn.Module):
    """(n, H, W, 3) uint8 pixels -> the model's (n, 3, H, W) float32 input: ToTensor then Normalize, as one
    multiply-add per channel on a whole batch (channels_last: the pixels' layout seen as (n, 3, H, W)
    already is, no copy)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1))
        self.register_buffer("shift", (-mean / std).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.permute(0, 3, 1, 2).float() * self.scale + self.shift


class _Head(torch.nn.Module):
    """The backbone's maps -> (CNN features: the last stage's unit regional GeM, the third stage's unit GeM,
    then the third stage's unit GeM of each cell of a 2x2 grid; ImageNet logits). The third stage is what
    the heads gained most from (docs/experiments.md#embedding), its grid what they gained next
    (docs/experiments.md#heads-grid)."""

    def __init__(self, classifier: torch.nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, deep: torch.Tensor, mid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.cat([regional_gem(deep), torch.nn.functional.normalize(gem_pool(mid), dim=1), grid_gem(mid)], 1)
        return pooled, self.classifier(deep.mean((2, 3)))  # the classifier was trained on averages


def _on_host(pixels: np.ndarray | torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(torch.as_tensor(pixels).cpu().numpy())


class Embedder:
    """A photo -> its descriptor: the backbone's last stage pooled by regional GeM (ResNet50: 2048, unit
    length), its mid stage pooled by GeM (ResNet50's third: 1024, unit length), the mid stage pooled on a
    2x2 grid (4 x 1024, each cell unit length; read by the heads only), then the product's colour histogram
    (64, unit length); plus the ImageNet logits. The backbone is the one its weights name
    (backbones.py; ResNet50 by default)."""

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device: str | None = None,
        precision: str = "auto",
        input_size: tuple[int, int] | None = None,
        detail_side: int | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise UserError(f"Unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
        model, self.weights_info = load_model(weights)
        self.spec = backbone(self.weights_info["architecture"])
        input_size = input_size or self.spec.input_size
        self._weights = weights  # to reload the float trunk once a backbone has released it
        self._trunk_released = False
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.weights_sha256 = state_dict_sha256(model)
        self.labels: list[str] = self.weights_info["layout"].get("labels", [])
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        # cudnn.benchmark stays off: precompute's batches vary in size (the views ride along), and cuDNN
        # would time its kernels again for every new size (docs/benchmarks.md#gpu).
        if precision == "int8" and not int8_supported(self.device):
            raise UserError("int8 needs an x86 CPU with AVX2 or better; use --precision fp32 (or auto) here.")
        if precision == "ort-int8" and not ort_int8_supported(self.device):
            raise UserError(
                "ort-int8 runs on the CPU with onnxruntime installed (pip install -r requirements.txt); "
                "use --precision auto here."
            )
        self.forced = precision != "auto"  # a path asked for by flag: an index of another path is refused
        # Left to choose, the model computes float descriptors until a build calibrates it for int8 or an
        # index it serves says how it was built (`follow`). An int8 path holds its calibration: PyTorch's
        # each activation's (scale, zero point), ONNX Runtime's its quantized graph.
        self.path: ModelPath = model_path(precision if self.forced else float_precision(self.device))
        self._calibration: tuple[tuple[str, str], ModelPath] | None = None  # (path, photos' sha256) -> its result
        # Made on first use: torch's (normalised input -> maps) or ONNX Runtime's whole pass (ort_int8.OrtModel).
        self._backbone: Backbone | None = None
        config = timm.data.resolve_data_config({}, model=self.model)
        # crop_pct 1.0: the image already has the input's aspect after padding, so nothing may be cropped away.
        config.update(input_size=(3, *input_size), crop_pct=1.0)
        *resize, to_tensor, normalize = timm.data.create_transform(**config).transforms
        assert isinstance(normalize, torchvision.transforms.Normalize), "timm's eval transform changed its layout"
        self.preprocessor = Preprocessor(torchvision.transforms.Compose(resize), input_size[1] / input_size[0])
        self._normalise = _Normalise(normalize.mean.float(), normalize.std.float()).to(self.device)
        self._head = _Head(self.model.get_classifier())
        self.preprocessing = {
            "trim_background": f"border colour +-{TOLERANCE}",
            "pad": "white, to the input's aspect",
            "pooling": f"regional gem p={GEM_P:g}, {LEVELS} levels",
            "mid_level": f"layer3 gem p={GEM_P:g}",
            "mid_grid": f"layer3 {GRID}x{GRID} gem p={GEM_P:g}",
            "colour_bins": COLOUR_BINS,
            "input_size": list(input_size),
            "interpolation": config["interpolation"],
            "mean": [round(float(v), 6) for v in config["mean"]],
            "std": [round(float(v), 6) for v in config["std"]],
        }
        self.detail_side = detail_side
        # One forward pass at a time: two requests sharing 2 cores only slow each other down and double
        # peak memory (a dedicated model thread was slower: two OpenMP teams spin against each other).
        self._lock = threading.Lock()
        self._queries = QueryBatcher(self.descriptors, Settings.from_env().query_batch)

    @property
    def detail_side(self) -> int | None:
        """The longest side, in px, a product keeps before the model sees it: the catalog's typical photo
        size, set by the build (CatalogSource.typical_side) and by the index a Recommender loads."""
        return self.preprocessor.detail_side

    @detail_side.setter
    def detail_side(self, side: int | None) -> None:
        self.preprocessor.detail_side = None if side is None else int(side)
        self.preprocessing.pop("detail_side", None)
        self.preprocessing.pop("detail_framing", None)
        if side is not None:
            self.preprocessing.update(detail_side=int(side), detail_framing=FRAMING_EXPONENT)

    @property
    def feature_dim(self) -> int:
        """Length of the CNN features the search space reads, first in a descriptor: the last stage's
        features, then the mid stage's."""
        return sum(self.spec.widths(self.model))

    @property
    def mid_dim(self) -> int:
        """Channels of the mid stage (1024 in ResNet50)."""
        return self.spec.widths(self.model)[1]

    @property
    def grid_dim(self) -> int:
        """Length of the mid stage's grid, after `feature_dim` in a descriptor: the heads read it too."""
        return GRID * GRID * self.mid_dim

    @property
    def dim(self) -> int:
        """Length of a descriptor: CNN features, the mid stage's grid, then the colour histogram."""
        return self.feature_dim + self.grid_dim + COLOUR_BINS

    def describe(self) -> dict:
        """What the manifest records so an index can refuse a different model or preprocessing."""
        return {
            "architecture": self.spec.architecture,
            "weights_source": self.weights_info["source"],
            "weights_sha256": self.weights_sha256,
            "layout": {k: v for k, v in self.weights_info["layout"].items() if k != "labels"},
            "preprocessing": self.preprocessing,
            "precision": self.precision,
            **self.path.describe(),
            "dim": self.dim,
            "feature_dim": self.feature_dim,
        }

    def follow(self, built: dict, where: object, graph: bytes | None = None) -> None:
        """Compute queries the way the index at `where` was built (its manifest's `model`): int8 with its
        calibration, ONNX Runtime's int8 with its graph (`graph`, else the file in the folder `where`), or
        float (bf16 where the hardware has it, fp32: the same descriptors within 0.001 of cosine). A path
        forced by flag that would give other descriptors is refused."""
        wanted = built.get("precision", "fp32")
        if self.forced and self.precision != wanted and (self.precision in INT8_PATHS or wanted in INT8_PATHS):
            raise ArtifactsError(
                f"The index at {where} was built with {wanted} descriptors and {self.precision} ones would differ; "
                f"drop --precision, or rebuild the index with --precision {self.precision}."
            )
        if wanted == "int8":
            if not int8_supported(self.device):
                raise ArtifactsError(
                    f"The index at {where} was built with int8 descriptors, which need an x86 CPU with AVX2; "
                    "rebuild it here with --precision fp32."
                )
            self._use(model_path("int8", qparams=built["int8"]["qparams"]))
        elif wanted == "ort-int8":
            self._use(model_path("ort-int8", graph=self._index_graph(built["ort_int8"], where, graph)))
        elif self.precision in INT8_PATHS:
            self._use(model_path(float_precision(self.device)))

    def _index_graph(self, info: dict, where: object, graph: bytes | None) -> bytes:
        """The index's ONNX Runtime int8 graph, checked against the manifest's sha256."""
        if not ort_int8.available():
            raise ArtifactsError(
                f"The index at {where} was built with ONNX Runtime's int8 descriptors; install onnxruntime and "
                "onnx (pip install -r requirements.txt) or rebuild the index here with --precision fp32."
            )
        if graph is None:
            path = Path(str(where)) / info["file"]
            if not path.is_file():
                raise ArtifactsError(f"{path} is missing; rebuild the index with `python scripts/precompute.py`.")
            graph = path.read_bytes()
        if ort_int8.sha256(graph) != info["sha256"]:
            raise ArtifactsError(
                f"The int8 graph of the index at {where} does not match its checksum in manifest.json "
                "(truncated or edited); rebuild the index with `python scripts/precompute.py`."
            )
        return graph

    @property
    def build_precision(self) -> str:
        """The path a build with this model uses: the one forced, else the fastest here (`choose_precision`)."""
        return self.precision if self.forced else choose_precision(self.device)

    @property
    def precision(self) -> str:
        """The path queries and builds run now: fp32, bf16, int8 or ort-int8."""
        return self.path.name

    @property
    def int8_qparams(self) -> dict[str, list[float]] | None:
        return getattr(self.path, "qparams", None)

    @property
    def ort_graph(self) -> bytes | None:
        return getattr(self.path, "graph", None)

    def _use(self, path: ModelPath) -> None:
        if path != self.path:
            self.path, self._backbone = path, None

    def calibrate(self, pixels: np.ndarray) -> None:
        """The build's int8 path calibrated on (n, H, W, 3) uint8 catalog pixels (`model_input`): PyTorch's
        histogram observers, or ONNX Runtime's quantized graph (model_paths). The same photos again (a
        resume, another build of the catalog by this process) reuse the last result (ONNX Runtime's
        quantizing takes ~17 s)."""
        key = (self.build_precision, hashlib.sha256(np.ascontiguousarray(pixels)).hexdigest())
        if self._calibration is None or self._calibration[0] != key:
            self._calibration = (key, model_path(key[0]).calibrated(self, pixels))
        self._use(self._calibration[1])

    def float_features(self, dtype: torch.dtype = torch.float32, contiguous: bool = False) -> torch.nn.Module:
        """A fresh copy of the float feature extractor in `dtype` (`contiguous`: not channels_last, as the
        ONNX export wants), for a path to compile."""
        model = copy.deepcopy(self.float_model()).to(dtype)
        if contiguous:
            model = model.to(memory_format=torch.contiguous_format)
        return _Features(model, self.spec)

    def preprocess(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
        return self.preprocessor(image)

    def model_input(self, image: Image.Image, trim: bool = True) -> np.ndarray:
        return self.preprocessor.model_input(image, trim)

    def _make_backbone(self, example: torch.Tensor) -> Backbone:
        """The feature extractor as the path makes it (model_paths): for ort-int8, ONNX Runtime's session of
        the whole pass (ort_int8.OrtModel); else TorchScript. Either way a pass runs in C++ without the GIL,
        where FX's Python graph takes it back for each of its ~170 operations and so, in a busy server,
        waited behind every Python thread (docs/benchmarks.md#serving-overhead). torch.jit and FX
        quantization are deprecated (for torch.compile, minutes of compilation at every start, and
        torchao); torch is pinned, so their warnings are silenced here."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            backbone = self.path.make(self, example)
        self._release_float_trunk()
        return backbone

    def release_backbone(self) -> None:
        """Let the backbone go (ONNX Runtime's session with its arena, or the traced module) until the next
        pass makes it again from the float weights or the int8 graph: a build drops it before its fitting,
        whose peak is the build's at full catalog size (docs/benchmarks.md#build-memory)."""
        with self._lock:
            self._backbone = None

    def float_model(self) -> torch.nn.Module:
        """The eager float ResNet50, reloaded from the weights if a backbone released its trunk."""
        if self._trunk_released:
            model, _ = load_model(self._weights)
            if state_dict_sha256(model) != self.weights_sha256:
                raise WeightsError("The weights file changed while the model was in use; restart to load the new one.")
            self.model = model.to(self.device, memory_format=torch.channels_last).eval()
            self._head = _Head(self.model.get_classifier())
            self._trunk_released = False
        return self.model

    def _release_float_trunk(self) -> None:
        """The backbone holds its own weights (folded, converted), and queries use only the float model's
        classifier: the rest goes until another backbone is needed (with the FX caches cleared, an app at
        44k holds 188 MB less: docs/benchmarks.md#app-memory)."""
        classifier = self.model.get_classifier()
        for child in self.model.children():
            if child is not classifier:
                child.to("meta")
        self._trunk_released = True

    def warm_up(self) -> None:
        """Make the backbone now rather than at the first query. Serving must: FX's int8 conversion traces
        the model by patching torch.nn.Module.__call__ process-wide, which breaks any module another
        thread calls meanwhile (a query's resize, the text model) with a NameError."""
        height, width = self.preprocessing["input_size"]
        self.forward(np.zeros((1, height, width, 3), np.uint8))

    def feature_maps(self, pixels: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, H, W, 3) uint8 pixels (`model_input`) -> the backbone's last and third-stage feature maps
        ((n, 2048, 7, 6) and (n, 1024, 14, 11) at 224x168), float32 on the model's device."""
        with self._lock, torch.inference_mode():
            backbone = self._ready_backbone(pixels)
            if isinstance(backbone, ort_int8.OrtModel):
                return tuple(torch.from_numpy(m) for m in backbone.maps(_on_host(pixels)))
            deep, mid = backbone(self.normalise(pixels).to(self._dtype))
            return deep.float(), mid.float()

    def forward(self, pixels: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(n, H, W, 3) uint8 pixels -> (CNN features: the last stage's unit regional GeM, the third stage's
        unit GeM, then its grid; ImageNet logits), as float32 numpy (_Head)."""
        with self._lock, torch.inference_mode():
            backbone = self._ready_backbone(pixels)
            if isinstance(backbone, ort_int8.OrtModel):  # normalising and pooling run in its graph
                return backbone(_on_host(pixels))
            deep, mid = backbone(self.normalise(pixels).to(self._dtype))
            features, logits = self._head(deep.float(), mid.float())
            return features.cpu().numpy(), logits.cpu().numpy()

    @property
    def _dtype(self) -> torch.dtype:
        return self.path.dtype  # int8 quantizes in its graph

    def _ready_backbone(self, pixels: np.ndarray | torch.Tensor) -> Backbone:
        if self._backbone is None:
            self._backbone = self._make_backbone(self.normalise(pixels[:1]).to(self._dtype))
        return self._backbone

    def normalise(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(n, H, W, 3) uint8 pixels -> the model's (n, 3, H, W) float32 input on its device, channels_last."""
        return self._normalise(torch.as_tensor(pixels).to(self.device, non_blocking=True))

    def descriptors(self, prepared: Sequence[tuple[np.ndarray | torch.Tensor, np.ndarray]]) -> np.ndarray:
        """Preprocessed (pixels, colour) pairs -> (n, dim) descriptors [features, colour histogram]. The
        pixels are numpy, or tensors already on the model's device (a GPU build's decoder)."""
        if not prepared:
            return np.zeros((0, self.dim), np.float32)
        pixels = [pixels for pixels, _ in prepared]
        if all(isinstance(p, np.ndarray) for p in pixels):
            batch = np.stack(pixels)  # one copy to the device for the whole batch
        else:
            batch = torch.stack([torch.as_tensor(p).to(self.device, non_blocking=True) for p in pixels])
        features = self.forward(batch)[0]
        return np.concatenate([features, np.stack([colour for _, colour in prepared])], axis=1).astype(np.float32)

    def embed(self, images: Sequence[ImageInput], batch_size: int = 32) -> np.ndarray:
        """Images of any supported input kind -> (n, dim) float32 descriptors, `batch_size` at a time (a
        forward pass over thousands at once would need tens of GB for the intermediate maps)."""
        chunks = [
            self.descriptors([self.preprocess(load_image(img)) for img in images[start : start + batch_size]])
            for start in range(0, len(images), batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def embed_one(self, image: ImageInput) -> np.ndarray:
        """One query's descriptor. Decoding and preprocessing run in the caller's thread; concurrent
        callers share the model's forward passes (batching.QueryBatcher)."""
        return self._queries(self.preprocess(load_image(image)))
