"""A corpus of hostile inputs sent through gradio_client to a running app: each gets one clear
sentence (or a correct answer, where the input is odd but valid), the server stays up and answers a
normal request right after, and nothing is written outside its temp area."""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from recommender import Recommender
from recommender.serve.service import Service
from recommender.serve.url_fetch import URLFetcher
from tests.helpers import ROOT, SAMPLE, serve
from tests.helpers.image_server import ImageServer

WATCH = SAMPLE / "images" / "10138.jpg"


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def zipped() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo.jpg", WATCH.read_bytes())
    return buffer.getvalue()


def animated() -> bytes:
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "green")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], loop=0)


# name -> (file bytes, expected: an error pattern, or None for "valid, must answer")
UPLOADS = {
    "bomb.png": (lambda: encode(Image.new("1", (20000, 20000)), "PNG"), "megapixels"),
    "truncated.jpg": (lambda: WATCH.read_bytes()[:400], "damaged or truncated"),
    "drawing.svg": (
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><rect width="9" height="9"/></svg>',
        "not an image",
    ),
    "doc.pdf": (lambda: b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n%%EOF", "not an image"),
    "archive.zip": (zipped, "not an image"),
    "notes.txt": (lambda: b"hello", "not an image"),
    "empty.jpg": (lambda: b"", "empty"),
    "fake.jpg": (lambda: b"\xff\xd8\xff\xe0" + os.urandom(3000), "damaged or truncated|not an image"),
    "one_pixel.png": (lambda: encode(Image.new("RGB", (1, 1), "white"), "PNG"), None),
    "strip.png": (lambda: encode(Image.new("RGB", (20000, 1), "navy"), "PNG"), None),
    "cmyk.jpg": (lambda: encode(Image.open(WATCH).convert("CMYK"), "JPEG"), None),
    "sixteen.png": (
        lambda: encode(Image.fromarray(np.linspace(0, 65535, 64 * 64, dtype=np.uint16).reshape(64, 64)), "PNG"),
        None,
    ),
    "animated.gif": (animated, None),
    "transparent.png": (lambda: encode(Image.open(WATCH).convert("RGBA"), "PNG"), None),
}

REFUSED_URLS = [
    "http://127.0.0.1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://0x7f000001/",
    "http://2130706433/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:70/",
]


@pytest.fixture(scope="module")
def images():
    with ImageServer() as server:
        yield server


@pytest.fixture(scope="module")
def app(text_encoder, real_index, real_embedder):
    service = Service()
    service.set_recommender(Recommender.load(real_index, embedder=real_embedder, text_encoder=text_encoder))
    with serve(service, real_index) as url:
        yield service, Client(url, verbose=False)


def snapshot(*folders) -> dict:
    return {
        str(p): p.stat().st_mtime_ns
        for f in folders
        for p in f.rglob("*")
        if ".git" not in p.parts and "__pycache__" not in p.parts and ".pytest_cache" not in p.parts
    }


def still_up(client: Client) -> None:
    assert client.predict(10138, 2, api_name="/similar_item")["results"]


@pytest.mark.parametrize("name", list(UPLOADS))
def test_hostile_upload(app, tmp_path, real_index, name):
    service, client = app
    make, expected = UPLOADS[name]
    path = tmp_path / name
    path.write_bytes(make())
    before = snapshot(real_index, ROOT)
    if expected is None:
        out = client.predict(handle_file(str(path)), 3, api_name="/recommend_image")
        assert len(out["results"]) == 3 and out["classification"]["articleType"]
    else:
        with pytest.raises(Exception, match=expected) as info:
            client.predict(handle_file(str(path)), 3, api_name="/recommend_image")
        assert "Traceback" not in str(info.value) and str(info.value).count(".") <= 3
    still_up(client)
    assert snapshot(real_index, ROOT) == before


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_urls_the_guard_must_refuse(app, url):
    service, client = app
    with pytest.raises(Exception, match="private or local|Only http"):
        client.predict(url, 3, api_name="/recommend_url")
    still_up(client)


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/redirect-private", r"private or local address \(127.0.0.2\)"),
        ("/slow", "within 3 seconds"),
        ("/huge", "larger than 10 MB"),
        ("/huge-chunked", "larger than 10 MB"),
        ("/text", "not an image"),
    ],
)
def test_misbehaving_local_server(app, images, path, expected, monkeypatch):
    service, client = app
    monkeypatch.setattr(service, "fetcher", URLFetcher(allow_addresses=frozenset({"127.0.0.1"}), timeout_s=3))
    with pytest.raises(Exception, match=expected):
        client.predict(images.url(path), 3, api_name="/recommend_url")
    still_up(client)
