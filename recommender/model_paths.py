"""The model's paths, one small object each behind one interface: float (fp32, bf16), PyTorch's int8 and
ONNX Runtime's int8. A path makes the compiled pass from the embedder's float model (`make`), says what
the manifest records of it (`describe`), and an int8 path is first calibrated on catalog pixels
(`calibrated`). Which path a machine runs best is chosen here too (`choose_precision`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from . import ort_int8
from .errors import ArtifactsError, UserError
from .runtime import bf16_supported

# torch's feature extractor (normalised input -> last and mid-stage maps), or ONNX Runtime's whole pass.
Backbone = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | ort_int8.OrtModel
# int8: PyTorch's x86 int8 (oneDNN's kernels); ort-int8: ONNX Runtime's int8 (ort_int8.py).
INT8_PATHS = ("int8", "ort-int8")


def int8_supported(device: torch.device) -> bool:
    """PyTorch's x86 int8 kernels (fbgemm / oneDNN) need an x86 CPU with AVX2 or better."""
    return (
        device.type == "cpu"
        and "x86" in torch.backends.quantized.supported_engines
        and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    )


def ort_int8_supported(device: torch.device) -> bool:
    """ONNX Runtime's int8 runs on the CPU, wherever onnxruntime is installed."""
    return device.type == "cpu" and ort_int8.available()


def choose_precision(device: torch.device) -> str:
    """The fastest path this hardware runs at equal quality (docs/benchmarks.md#cpu-paths): on x86 CPUs
    int8, PyTorch's where there is AVX-512 VNNI (with or without bf16), ONNX Runtime's where there is
    not (its builds 1.2-1.3x PyTorch's on AVX2: docs/benchmarks.md#ort-int8); bf16 on GPUs that have it; else fp32."""
    if not int8_supported(device):
        return float_precision(device)
    return "int8" if torch.cpu._is_vnni_supported() or not ort_int8_supported(device) else "ort-int8"


def float_precision(device: torch.device) -> str:
    """bf16 where the hardware has it, else fp32: the same descriptors within 0.001 of cosine."""
    return "bf16" if bf16_supported(device) else "fp32"


class ModelParts(Protocol):
    """What a path needs of the embedder: a fresh float copy of its feature extractor, its normalising of
    uint8 pixels (as a module, and applied), its pooling head, and its threads."""

    _normalise: torch.nn.Module
    _head: torch.nn.Module

    def float_features(self, dtype: torch.dtype = torch.float32, contiguous: bool = False) -> torch.nn.Module: ...

    def normalise(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class ModelPath:
    """A precision's pass. `dtype`: what the pass takes its normalised input as."""

    name: str

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def calibrated(self, parts: ModelParts, pixels: np.ndarray) -> ModelPath:
        """This path ready for a build whose catalog starts with `pixels` ((n, H, W, 3) uint8)."""
        return self

    def make(self, parts: ModelParts, example: torch.Tensor) -> Backbone:
        raise NotImplementedError

    def describe(self) -> dict:
        """What the manifest records beside the path's name."""
        return {}


@dataclass(frozen=True)
class FloatPath(ModelPath):
    """fp32 or bf16: traced and frozen, which folds batch norm into the convolutions and lets oneDNN fuse
    conv+ReLU+add: 1.3x bf16 autocast's speed, cosine to fp32 >= 0.999 (docs/benchmarks.md#model)."""

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.name == "bf16" else torch.float32

    def make(self, parts: ModelParts, example: torch.Tensor) -> Backbone:
        module = parts.float_features(self.dtype).eval()
        # check_trace would run the model twice more to compare (seconds at every start); the tests
        # compare the traced outputs with the eager model's instead.
        return torch.jit.freeze(torch.jit.trace(module, example.to(self.dtype), check_trace=False))


@dataclass(frozen=True)
class TorchInt8Path(ModelPath):
    """PyTorch's x86 int8: each activation's (scale, zero point) from histogram observers over the
    calibration photos; FX's conversion with those ranges fixed and weights per channel, then traced (the
    same outputs bit for bit; freezing it too gained no speed and held 23 MB more)."""

    name: str = "int8"
    qparams: dict[str, list[float]] | None = None

    def calibrated(self, parts: ModelParts, pixels: np.ndarray) -> ModelPath:
        prepared = _prepared_int8(parts, parts.normalise(pixels[:1]))
        with torch.inference_mode():
            for start in range(0, len(pixels), 16):
                prepared(parts.normalise(pixels[start : start + 16]))
        qparams = {}
        for name, observer in _activation_observers(prepared):
            scale, zero_point = observer.calculate_qparams()
            qparams[name] = [float(scale), int(zero_point)]
        del prepared
        _release_fx_caches()
        return TorchInt8Path(qparams=qparams)

    def make(self, parts: ModelParts, example: torch.Tensor) -> Backbone:
        return torch.jit.trace(self.converted(parts, example), example, check_trace=False)

    def converted(self, parts: ModelParts, example: torch.Tensor) -> torch.nn.Module:
        """FX's int8 model with the calibrated ranges (what `make` traces)."""
        if self.qparams is None:
            raise UserError("int8 needs its calibration first: build the index with it, or load one built so.")
        from torch.ao.quantization.observer import FixedQParamsObserver
        from torch.ao.quantization.quantize_fx import convert_fx

        prepared = _prepared_int8(parts, example)
        observers = dict(_activation_observers(prepared))
        if set(observers) != set(self.qparams):
            raise ArtifactsError(
                "The index's int8 calibration was made by another version of the int8 graph; rebuild the index."
            )
        for name, observer in observers.items():
            scale, zero_point = self.qparams[name]
            fixed = FixedQParamsObserver(
                scale, zero_point, observer.dtype, observer.qscheme, observer.quant_min, observer.quant_max
            )
            setattr(prepared, name, fixed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = convert_fx(prepared).eval()
        for node in converted.graph.nodes:  # its observers' constructors hold the float modules
            node.meta.clear()
        _release_fx_caches()
        return converted

    def describe(self) -> dict:
        return {"int8": {"qparams": self.qparams}}


@dataclass(frozen=True)
class OrtInt8Path(ModelPath):
    """ONNX Runtime's int8: the quantized graph of the whole pass (ort_int8.py), made from the calibration
    photos at build and published with the index."""

    name: str = "ort-int8"
    graph: bytes | None = field(default=None, repr=False)

    def calibrated(self, parts: ModelParts, pixels: np.ndarray) -> ModelPath:
        features = parts.float_features(contiguous=True)
        calibration = parts.normalise(pixels).contiguous().cpu().numpy()
        return OrtInt8Path(graph=ort_int8.quantize(features.eval(), calibration))

    def make(self, parts: ModelParts, example: torch.Tensor) -> Backbone:
        if self.graph is None:
            raise UserError("ort-int8 needs its graph first: build the index with it, or load one built so.")
        return ort_int8.OrtModel(self.graph, parts._normalise, parts._head, torch.get_num_threads())

    def describe(self) -> dict:
        info = {} if self.graph is None else {"file": ort_int8.GRAPH_FILE, "sha256": ort_int8.sha256(self.graph)}
        return {"ort_int8": info}


def model_path(name: str, qparams: dict | None = None, graph: bytes | None = None) -> ModelPath:
    """The path object for a precision's `name`, with an int8 path's calibration if given."""
    if name == "int8":
        return TorchInt8Path(qparams=qparams)
    if name == "ort-int8":
        return OrtInt8Path(graph=graph)
    return FloatPath(name)


def _release_fx_caches() -> None:
    """FX quantization caches each model it prepares in a process-wide functools.cache, which keeps a
    copy of the float weights alive after conversion (with the node metadata, 170 MB in an app)."""
    from torch.ao.quantization.fx import utils as fx_utils

    cached = getattr(fx_utils, "assert_and_get_unique_device", None)
    if hasattr(cached, "cache_clear"):
        cached.cache_clear()


def _activation_observers(prepared: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The observers FX inserted on activations (weights are quantized per channel from the weights)."""
    from torch.ao.quantization.observer import ObserverBase

    return [(n, m) for n, m in prepared.named_children() if isinstance(m, ObserverBase)]


def _prepared_int8(parts: ModelParts, example: torch.Tensor) -> torch.fx.GraphModule:
    """The fp32 feature extractor with PyTorch's x86 int8 observers inserted (FX graph mode)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    # The x86 recipe run by oneDNN's kernels on every CPU (the engine counts when convert_fx packs the
    # weights): the x86 engine picks them itself where there is AVX-512 VNNI, and on an AVX2-only CPU
    # they ran 1.07-1.40x fbgemm's, the recipe's reduced range keeping AVX2's u8*s8 pairs from
    # saturating (docs/benchmarks.md#real-avx2).
    torch.backends.quantized.engine = "onednn"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FX quantization's deprecation notice (torch is pinned)
        return prepare_fx(parts.float_features().eval(), get_default_qconfig_mapping("x86"), (example,))
