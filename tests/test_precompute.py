"""Precompute builds a complete, verifiable artifacts directory; interrupted runs resume to the same
result, on this machine or on Ray; the final name never shows a half-written index."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import timm
import torch

from recommender import artifacts, ort_int8
from recommender.backbones import INPUT_SIZE
from recommender.build import precompute
from recommender.catalog import CatalogSource
from recommender.embedder import Embedder
from recommender.foreground import colour_histogram, trim_background
from recommender.images import load_image, pad_to_aspect
from recommender.words import catalog_text
from tests.helpers import SAMPLE


def build(catalog_dir, out, embedder, text_encoder, **kwargs):
    return precompute(CatalogSource(str(catalog_dir)), out, embedder, text_encoder, progress=False, **kwargs)


def test_precompute_writes_every_artifact_and_a_manifest(text_encoder, catalog_dir, tmp_path, embedder):
    (catalog_dir / "images" / "broken.jpg").write_bytes(b"")
    first = sorted(catalog_dir.glob("images/*.jpg"))[0]
    first.write_bytes(first.read_bytes()[:40])  # truncated JPEG: skipped, not fatal
    manifest = build(catalog_dir, tmp_path / "idx", embedder, text_encoder, batch_size=16)
    # both models were let go before the fitting, the build's peak at full size
    assert embedder._backbone is None and text_encoder._model is None
    out = tmp_path / "idx"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            artifacts.MANIFEST,
            artifacts.EMBEDDINGS,
            artifacts.FEATURES,
            artifacts.PROJECTION,
            artifacts.INDEX,
            artifacts.METADATA,
            artifacts.HEADS,
            artifacts.TEXT_VECTORS,
            artifacts.MAP,
            artifacts.THUMBNAILS,
            artifacts.VIEWS,  # the synthetic views, kept for a refit
            # ONNX Runtime's int8 graph, where the build ran it (auto on x86 CPUs without VNNI)
            *([ort_int8.GRAPH_FILE] if manifest["model"]["precision"] == "ort-int8" else []),
        ]
    )
    projection = manifest["projection"]
    assert (
        manifest["count"] == 47 and manifest["feature_dim"] == 2048 + 1024 + 4 * 1024 + 64
    )  # last- and third-stage features, the third stage's 2x2 grid (the heads'), colour histogram
    assert manifest["model"]["feature_dim"] == projection["feature_dims"] == 2048 + 1024  # the search space's
    semantic = sum(len(manifest["heads"][c]["classes"]) for c in projection["semantic_heads"])
    assert manifest["dim"] == projection["raw_dims"] + 256 + 64 + semantic  # appearance, then head predictions
    assert projection["train_rows"] < 47  # fitted on the fit part of the split only
    assert 0 < projection["train_views"] <= projection["train_rows"]  # synthetic shopper photos of fit items
    assert manifest["skipped"]["counts"] == {"image that cannot be decoded": 1, "image without a styles.csv row": 1}
    assert int(first.stem) in manifest["skipped"]["items"]["image that cannot be decoded"]
    assert manifest["model"]["weights_sha256"] == embedder.weights_sha256
    assert manifest["model"]["preprocessing"]["pad"].startswith("white") and manifest["model"]["preprocessing"][
        "input_size"
    ] == [224, 168]
    assert manifest["model"]["precision"] in ("bf16", "fp32", "int8", "ort-int8")
    assert set(manifest["libraries"]) >= {"torch", "timm", "hnswlib"}
    assert len(list((out / "thumbnails").iterdir())) == 47
    positions = np.load(out / artifacts.MAP)  # every item on the embedding map (47 items: principal directions)
    assert positions.shape == (47, 2) and np.isfinite(positions).all() and manifest["map"]["method"] == "pca"
    assert manifest["text_model"]["sha256"] == text_encoder.sha256 and manifest["text_model"]["dim"] == 384
    text_vectors = np.load(out / artifacts.TEXT_VECTORS)  # each product's name and labels, row for row
    metadata = json.loads((out / artifacts.METADATA).read_text())
    row = 5
    attributes = {c: metadata["columns"][c][row] for c in metadata["columns"]}
    np.testing.assert_allclose(text_vectors[row], text_encoder.encode_one(catalog_text(attributes)), atol=1e-5)
    embeddings = np.load(out / artifacts.EMBEDDINGS)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-4)
    artifacts.read_manifest(out)  # checksums verify
    assert not (tmp_path / "idx.partial").exists()
    # The next pass, or the next text, makes the models the build let go again, and again the same.
    pixels = np.random.default_rng(0).integers(0, 256, (2, *INPUT_SIZE, 3), dtype=np.uint8)
    features, logits = embedder.forward(pixels)
    embedder.release_backbone()
    again = embedder.forward(pixels)
    np.testing.assert_array_equal(again[0], features)
    np.testing.assert_array_equal(again[1], logits)
    text_encoder.release()
    np.testing.assert_allclose(text_vectors[row], text_encoder.encode_one(catalog_text(attributes)), atol=1e-5)


class Interrupt(Exception):
    pass


def _interrupting(embedder: Embedder, after_batches: int):
    real = embedder.forward
    calls = {"n": 0}

    def forward(batch):
        calls["n"] += 1
        if calls["n"] > after_batches:
            raise Interrupt()
        return real(batch)

    return forward


def test_interrupted_precompute_resumes_to_the_uninterrupted_result(
    text_encoder, catalog_dir, tmp_path, embedder, monkeypatch, reference_build
):
    reference, ref = reference_build
    out = tmp_path / "idx"
    monkeypatch.setattr(embedder, "forward", _interrupting(embedder, after_batches=3))
    with pytest.raises(Interrupt):
        build(catalog_dir, out, embedder, text_encoder, batch_size=8, shard_size=16)
    assert not out.exists(), "a half-built index must never appear under the final name"
    assert sorted(p.name for p in (tmp_path / "idx.partial" / "shards").iterdir()) == [
        "shard-00000.npz",
        "shard-00000.npz.sha256",
    ]
    monkeypatch.undo()
    resumed = build(catalog_dir, out, embedder, text_encoder, batch_size=8, shard_size=16)
    assert resumed["count"] == reference["count"]
    assert json.loads((out / "metadata.json").read_text()) == json.loads((ref / "metadata.json").read_text())
    np.testing.assert_allclose(np.load(out / "features.npy"), np.load(ref / "features.npy"), atol=1e-5)
    np.testing.assert_allclose(np.load(out / "embeddings.npy"), np.load(ref / "embeddings.npy"), atol=1e-4)
    np.testing.assert_allclose(np.load(out / "text_vectors.npy"), np.load(ref / "text_vectors.npy"), atol=1e-5)


def test_rebuild_replaces_an_existing_index_only_when_complete(
    text_encoder, catalog_dir, tmp_path, embedder, monkeypatch, reference_build
):
    shutil.copytree(reference_build[1].parent, tmp_path / "copy", symlinks=True)  # the index, its versions, its lock
    out = tmp_path / "copy" / "index"
    before = (out / "manifest.json").read_text()
    monkeypatch.setattr(embedder, "forward", _interrupting(embedder, after_batches=1))
    with pytest.raises(Interrupt):
        build(catalog_dir, out, embedder, text_encoder, batch_size=16)
    assert (out / "manifest.json").read_text() == before  # the old index still serves, untouched
    artifacts.read_manifest(out)


def test_partial_run_with_other_settings_is_discarded_not_mixed(
    text_encoder, catalog_dir, tmp_path, embedder, monkeypatch, capsys
):
    out = tmp_path / "idx"
    monkeypatch.setattr(embedder, "forward", _interrupting(embedder, after_batches=2))
    with pytest.raises(Interrupt):
        build(catalog_dir, out, embedder, text_encoder, batch_size=8, shard_size=16)
    monkeypatch.undo()
    manifest = build(catalog_dir, out, embedder, text_encoder, batch_size=16, shard_size=32)
    assert "Discarding the partial build" in capsys.readouterr().out
    assert manifest["count"] == 48


def test_ray_engine_resumes_a_build_to_the_same_index_as_this_machine(
    text_encoder, text_model, catalog_dir, tmp_path, embedder, random_weights, monkeypatch, reference_build
):
    """A build killed on this machine, finished on a local Ray: the same ids, metadata, thumbnails and
    descriptors as one uninterrupted run here (Ray's actors load the same weights and calibration)."""
    from recommender.build.ray_engine import RayEngine

    reference, ref = reference_build
    out = tmp_path / "idx"
    monkeypatch.setattr(embedder, "forward", _interrupting(embedder, after_batches=3))
    with pytest.raises(Interrupt):
        build(catalog_dir, out, embedder, text_encoder, batch_size=8, shard_size=16)
    monkeypatch.undo()
    on_ray = build(
        catalog_dir,
        out,
        embedder,
        text_encoder,
        batch_size=8,
        shard_size=16,
        engine=RayEngine(str(random_weights), str(text_model)),
    )
    assert on_ray["build"]["engine"]["name"] == "ray" and on_ray["build"]["synthetic_views"] > 0
    assert on_ray["count"] == reference["count"]
    assert artifacts.read_manifest(out)["thumbnails"] == artifacts.read_manifest(ref)["thumbnails"]
    assert (out / "metadata.json").read_text() == (ref / "metadata.json").read_text()
    np.testing.assert_allclose(np.load(out / "features.npy"), np.load(ref / "features.npy"), atol=2e-2)
    np.testing.assert_allclose(np.load(out / "text_vectors.npy"), np.load(ref / "text_vectors.npy"), atol=1e-5)


def test_ray_engine_reports_a_missing_ray_in_one_sentence(monkeypatch):
    import sys

    from recommender.build.ray_engine import _ray
    from recommender.errors import UserError

    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without requirements-scale.txt sees
    with pytest.raises(UserError, match="requirements-scale.txt"):
        _ray()


def test_precompute_cli_reports_bad_source_in_one_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "scripts/precompute.py", "--source", str(tmp_path / "nope/x"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=SAMPLE.parents[1],
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: Catalog source") and "Traceback" not in result.stderr


def test_decode_pixels_normalised_in_the_batch_are_timms_eval_transform(embedder):
    """The decode processes send uint8 pixels; normalised in the model's batch they equal timm's eval
    transform (resize, ToTensor, Normalize) of the trimmed, padded photo, and the colour histogram
    (from the same mask) equals the standalone one."""
    image = load_image(sorted((SAMPLE / "images").glob("*.jpg"))[0])
    pixels, colour = embedder.preprocess(image)
    assert pixels.dtype == np.uint8 and pixels.shape == (*INPUT_SIZE, 3)
    config = timm.data.resolve_data_config({}, model=embedder.model)
    config.update(input_size=(3, *INPUT_SIZE), crop_pct=1.0)
    reference = timm.data.create_transform(**config)(
        pad_to_aspect(trim_background(image), INPUT_SIZE[1] / INPUT_SIZE[0])
    )
    assert torch.allclose(embedder.normalise(pixels[None])[0], reference, rtol=1e-5, atol=1e-3)
    assert np.array_equal(colour, colour_histogram(image))
