"""The GPU path (a Space with a GPU): same descriptors as the CPU, and a whole build + search on the GPU.
Skipped where there is no CUDA device (CI has none; run them on a lent GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recommender import Recommender
from recommender.build import precompute
from recommender.build.decode import default_workers
from recommender.build.runner import default_batch_size
from recommender.catalog import CatalogSource
from recommender.embedder import Embedder
from recommender.images import load_image
from tests.helpers import SAMPLE, make_catalog, sample_rows

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_gpu_descriptors_match_the_cpu(real_weights):
    """The GPU's bf16 descriptors are the CPU's float ones up to rounding, and so are the logits' top-1."""
    photos = sorted((SAMPLE / "images").glob("*.jpg"))[:40]
    cpu, gpu = Embedder(real_weights, device="cpu", precision="fp32"), Embedder(real_weights, device="cuda")
    assert gpu.weights_sha256 == cpu.weights_sha256
    a, b = cpu.embed(photos), gpu.embed(photos)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.995, cosine.min()
    batch = np.stack([cpu.preprocess(load_image(p))[0] for p in photos[:8]])
    assert (cpu.forward(batch)[1].argmax(1) == gpu.forward(batch)[1].argmax(1)).mean() >= 0.75


def test_build_and_search_on_the_gpu(text_encoder, tmp_path, real_weights):
    embedder = Embedder(real_weights, device="cuda")
    assert default_workers(embedder) >= 1 and default_batch_size(embedder) >= 32
    catalog = make_catalog(tmp_path / "catalog", sample_rows(200))
    manifest = precompute(CatalogSource(str(catalog)), tmp_path / "index", embedder, text_encoder, progress=False)
    assert manifest["build"]["device"] == "cuda"
    rec = Recommender.load(tmp_path / "index", embedder=embedder, text_encoder=text_encoder)
    first = min((catalog / "images").glob("*.jpg"))
    assert rec.search(first, 5)[0].id == int(first.stem)
    # An index built on the GPU serves on the CPU (same weights and preprocessing; the CPU follows the
    # index's float path rather than its own int8 one), with the same answer.
    on_cpu = Recommender.load(
        tmp_path / "index", embedder=Embedder(real_weights, device="cpu"), text_encoder=text_encoder
    )
    assert on_cpu.search(first, 5)[0].id == int(first.stem)
