"""ONNX Runtime's static int8 of the backbone: the fast path on x86 CPUs without AVX-512 VNNI, where its builds
ran 1.2-1.3x PyTorch's int8 at the same quality (docs/benchmarks.md#ort-int8). The quantized graph is made once,
at build time, from the build's calibration photos, and saved in the index: queries run the same graph, with
the Embedder's normalising and pooling spliced around it so that a whole pass is one session's (OrtModel)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

GRAPH_FILE = "backbone-int8.onnx"
OPSET = 17
# One photo per calibration pass: the calibration session's arena grows with the batch (gigabytes at 16),
# while the ranges, a min / max over every photo, give the same graph byte for byte (docs/benchmarks.md#ort-int8).
CALIBRATION_BATCH = 1


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
        graph = _exported(features, (torch.from_numpy(calibration[:1]),), ["x"], ["deep", "mid"])
        exported.write_bytes(graph.SerializeToString())
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


class OrtModel:
    """A whole forward pass in one ONNX Runtime session: the index's int8 backbone with the Embedder's float
    normalising before it and its pooling and classifier after it, so that nothing runs in torch around a
    pass (torch's thread pool and ONNX Runtime's taking turns on the same cores cost a one-photo query a
    quarter of its time: docs/benchmarks.md#ort-int8). A pass runs in C++ without the GIL."""

    def __init__(self, backbone: bytes, normalise: torch.nn.Module, head: torch.nn.Module, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        graph = _whole(backbone, normalise, head)
        self.session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, H, W, 3) uint8 pixels -> (pooled CNN features, ImageNet logits), float32."""
        features, logits = self.session.run(["out/features", "out/logits"], {"in/pixels": pixels})
        return features, logits

    def maps(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, H, W, 3) uint8 pixels -> the backbone's last and third-stage feature maps, float32."""
        deep, mid = self.session.run(["deep", "mid"], {"in/pixels": pixels})
        return deep, mid


def _whole(backbone: bytes, normalise: torch.nn.Module, head: torch.nn.Module) -> bytes:
    """pixels -> normalise -> the int8 backbone (x -> deep, mid) -> head -> (features, logits), one graph
    that also outputs the maps. Made when a session starts rather than stored: the index keeps only the
    quantized backbone, whose checksum the manifest records. The outer graphs' nodes are spliced into the
    backbone's graph in place (onnx.compose copies the 24 MB graph at each merge: ~100 MB more at an app's peak)."""
    import onnx
    from onnx import compose

    whole = onnx.load_from_string(backbone)
    (x,), maps = whole.graph.input, list(whole.graph.output)
    _, channels, height, width = _dims(x)
    # Prefixed (in/, out/): the exporter names its constants alike in every graph.
    first = _exported(normalise, (torch.zeros(1, height, width, channels, dtype=torch.uint8),), ["pixels"], ["x"])
    first = compose.add_prefix(first, "in/")
    last = _exported(head, tuple(torch.zeros(1, *_dims(m)[1:]) for m in maps), ["deep", "mid"], ["features", "logits"])
    last = compose.add_prefix(last, "out/")
    joins = {"in/x": x.name, **{f"out/{m.name}": m.name for m in maps}}
    nodes = onnx.GraphProto()
    for part in (first.graph, whole.graph, last.graph):  # in topological order, as ONNX requires
        nodes.node.extend(part.node)
    for node in nodes.node:
        node.input[:] = [joins.get(name, name) for name in node.input]
        node.output[:] = [joins.get(name, name) for name in node.output]
    del whole.graph.node[:]
    whole.graph.node.extend(nodes.node)
    whole.graph.initializer.extend([*first.graph.initializer, *last.graph.initializer])
    del whole.graph.input[:]
    whole.graph.input.extend(first.graph.input)
    whole.graph.output.extend(last.graph.output)
    return whole.SerializeToString()


def _dims(value) -> list[int | str]:
    return [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]


def _exported(module: torch.nn.Module, example: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str]):
    """A float torch module -> its ONNX model, the batch dimension left free."""
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices (torch is pinned)
        torch.onnx.export(
            module.eval(),
            example,
            buffer,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={name: {0: "n"} for name in inputs + outputs},
            dynamo=False,
            opset_version=OPSET,
        )
    return onnx.load_from_string(buffer.getvalue())
