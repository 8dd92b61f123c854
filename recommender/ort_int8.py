"""ONNX Runtime's static int8 of the backbone: the fast path on x86 CPUs without AVX-512 VNNI, where its builds
ran 1.2-1.3x PyTorch's int8 at the same quality (docs/benchmarks.md#ort-int8). The quantized graph is made once,
at build time, from the build's calibration photos, and saved in the index: queries run the same graph."""

from __future__ import annotations

import hashlib
import importlib.util
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

GRAPH_FILE = "backbone-int8.onnx"
OPSET = 17
CALIBRATION_BATCH = 16


def available() -> bool:
    """onnxruntime runs the graph; onnx is what its quantization tool edits graphs with."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def sha256(graph: bytes) -> str:
    return hashlib.sha256(graph).hexdigest()


def quantize(features: torch.nn.Module, calibration: np.ndarray) -> bytes:
    """The float feature extractor (x -> (last stage, third stage)) -> its int8 ONNX graph: activations
    u8 with MinMax ranges over `calibration` ((n, 3, H, W) float32, normalised), weights s8 per channel,
    as quantize/dequantize pairs ONNX Runtime fuses into int8 kernels. Reduced range, as PyTorch's x86
    recipe: AVX2's u8*s8 pair sums cannot saturate."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                {"x": calibration[i : i + CALIBRATION_BATCH]} for i in range(0, len(calibration), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        exported, prepared, quantized = (Path(tmp) / name for name in ("float.onnx", "prepared.onnx", "int8.onnx"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice (torch is pinned)
            torch.onnx.export(
                features,
                torch.from_numpy(calibration[:1]),
                str(exported),
                input_names=["x"],
                output_names=["deep", "mid"],
                dynamic_axes={"x": {0: "n"}, "deep": {0: "n"}, "mid": {0: "n"}},
                dynamo=False,
                opset_version=OPSET,
            )
        quant_pre_process(str(exported), str(prepared))  # shapes and folded constants, as the tool asks
        quantize_static(
            str(prepared),
            str(quantized),
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return quantized.read_bytes()


class OrtBackbone:
    """The int8 graph in an ONNX Runtime session: a (n, 3, H, W) float32 batch -> the last and third
    stage's feature maps, as the float backbone returns them. A pass runs in C++ without the GIL."""

    def __init__(self, graph: bytes, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        deep, mid = self.session.run(None, {"x": batch.detach().cpu().contiguous().numpy()})
        return torch.from_numpy(deep).to(batch.device), torch.from_numpy(mid).to(batch.device)
