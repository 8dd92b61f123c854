"""The backbone seam: a model is one description (backbones.py) that the weights loader, the embedder, the
int8 paths and the build read; a second one (timm's ResNet18, random weights) builds and serves an index."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from recommender import Recommender
from recommender.backbones import BACKBONES, DEFAULT
from recommender.build import precompute
from recommender.catalog import CatalogSource
from recommender.embedder import Embedder
from recommender.errors import ArtifactsError, WeightsError
from recommender.foreground import COLOUR_BINS
from recommender.images import load_image
from recommender.model_paths import choose_precision
from recommender.weights import save_weights


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("resnet18") / "resnet18.safetensors"
    save_weights(BACKBONES["resnet18"].create().eval(), path, {"architecture": "resnet18", "origin": "random init"})
    return path


def test_the_descriptions_read_timms_feature_info():
    model = timm.create_model("resnet50", pretrained=False)
    assert DEFAULT.widths(model) == (2048, 1024)
    x = torch.zeros(1, 3, *DEFAULT.input_size)
    deep, mid = DEFAULT.feature_maps(model.eval(), x)
    assert deep.shape == (1, 2048, 7, 6) and mid.shape == (1, 1024, 14, 11)
    with torch.inference_mode():
        assert torch.equal(deep, model.forward_features(x))  # timm's own pass to the last stage


@pytest.mark.parametrize("precision", ["fp32", choose_precision(torch.device("cpu"))])
def test_a_second_backbone_builds_and_serves_an_index(
    resnet18_weights, precision, catalog_dir, tmp_path, text_encoder, random_weights
):
    built_with = Embedder(resnet18_weights, precision=precision)
    assert built_with.spec.architecture == "resnet18" and built_with.dim == 512 + 256 + 4 * 256 + COLOUR_BINS
    out = tmp_path / "index"
    precompute(CatalogSource(str(catalog_dir)), out, built_with, text_encoder, progress=False)
    rec = Recommender.load(out, weights=resnet18_weights, text_encoder=text_encoder, precision=precision)
    assert rec.manifest["model"]["architecture"] == "resnet18"
    assert rec.manifest["model"]["precision"] == precision and rec.embedder.precision == precision
    assert np.load(out / "features.npy").shape == (len(rec.metadata), built_with.dim)
    item_id = int(rec.metadata.ids[5])
    first = rec.search(load_image(catalog_dir / "images" / f"{item_id}.jpg"), 3)[0]
    assert first.id == item_id and first.score > 0.95
    with pytest.raises(ArtifactsError, match="built with other weights"):  # the ResNet50 did not build it
        Recommender.load(out, weights=random_weights, text_encoder=text_encoder)


def test_weights_naming_an_unknown_backbone_are_one_sentence(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(BACKBONES["resnet18"].create().eval(), path, {"architecture": "vit_tiny"})
    with pytest.raises(WeightsError, match="No backbone description for 'vit_tiny'; this version knows resnet50"):
        Embedder(path)


def test_the_traced_float_backbone_computes_the_eager_models_maps(resnet18_weights):
    embedder = Embedder(resnet18_weights, precision="fp32")
    x = torch.rand(2, 3, *embedder.spec.input_size)
    eager = embedder.float_features().eval()
    with torch.inference_mode():
        expected = eager(x)
        embedder.warm_up()
        traced = embedder._backbone(x)
    assert isinstance(embedder._backbone, torch.jit.ScriptModule)
    assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(traced, expected))
