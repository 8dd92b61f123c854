"""Backbone descriptions: what the embedder, the weights loader, the int8 paths and GPU decode need to know
of a model, in timm's terms. timm's `pretrained_cfg` gives its mean, std and interpolation, its
`feature_info` its stages' modules and widths; a description adds which modules a pass runs, which two
stages the descriptor pools, the input size and where the weights come from. A new backbone (a ConvNeXt-T,
say) is one description here, plus its weights route."""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch

from .errors import WeightsError

# (height, width): 224 px high, 3:4 like the catalog photos: 1.32x faster than a 224 px square at the
# same quality; smaller inputs lose quality (docs/experiments.md#embedding).
INPUT_SIZE = (224, 168)


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone: timm's `architecture`; a pass runs the `stem` modules, then the `stages` (as
    feature_info names them); the descriptor pools the last stage by regional GeM and `mid_stage` by GeM
    (the heads gained most from the third stage: docs/experiments.md#embedding). `hub`: timm's own
    pretrained weights come from the Hugging Face Hub (else only from a weights file)."""

    architecture: str
    title: str  # as a shopper's sentence names it
    stem: tuple[str, ...]
    stages: tuple[str, ...]
    mid_stage: str
    input_size: tuple[int, int] = INPUT_SIZE
    hub: bool = True

    def create(self, pretrained: bool = False, **kwargs) -> torch.nn.Module:
        return timm.create_model(self.architecture, pretrained=pretrained, **kwargs)

    def width(self, model: torch.nn.Module, stage: str) -> int:
        """Channels of `stage`'s output, from timm's feature_info."""
        return int(next(f["num_chs"] for f in model.feature_info if f["module"] == stage))

    def widths(self, model: torch.nn.Module) -> tuple[int, int]:
        """(the last stage's channels, the mid stage's): the CNN part of a descriptor, in its order."""
        return self.width(model, self.stages[-1]), self.width(model, self.mid_stage)

    def feature_maps(self, model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised input -> (the last stage's maps, the mid stage's maps). Plain module calls in a fixed
        order: FX's int8 tracing, TorchScript and the ONNX export all follow it."""
        for name in self.stem:
            x = model.get_submodule(name)(x)
        mid = None
        for name in self.stages:
            x = model.get_submodule(name)(x)
            if name == self.mid_stage:
                mid = x
        return x, mid


_RESNET_STEM = ("conv1", "bn1", "act1", "maxpool")
_RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")
BACKBONES = {
    spec.architecture: spec
    for spec in (
        BackboneSpec("resnet50", "ResNet50", _RESNET_STEM, _RESNET_STAGES, "layer3"),
        # Small and fast: the seam's test builds an index through it (random weights).
        BackboneSpec("resnet18", "ResNet18", _RESNET_STEM, _RESNET_STAGES, "layer3"),
    )
}
DEFAULT = BACKBONES["resnet50"]


def backbone(architecture: str) -> BackboneSpec:
    """The description of `architecture`, or a sentence naming the ones there are."""
    try:
        return BACKBONES[architecture]
    except KeyError:
        raise WeightsError(
            f"No backbone description for {architecture!r}; this version knows {', '.join(BACKBONES)}."
        ) from None
