"""A corpus of hostile inputs sent through gradio_client to a running app: each gets one clear
sentence (or a correct answer, where the input is odd but valid), the server stays up and answers a
normal request right after, and nothing is written outside its temp area."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from recommender import Recommender
from recommender.serve.service import Service
from recommender.serve.ui.launch import DELETE_CACHE
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


def raw_call(client: Client, endpoint: str, *args) -> tuple[str, object]:
    """Gradio's plain HTTP API as any stranger can speak it: ("complete", output) or ("error", sentence)."""
    import httpx

    base = client.src.rstrip("/") + "/gradio_api/"
    with httpx.Client(base_url=base, timeout=60) as http:
        event_id = http.post(f"call/{endpoint}", json={"data": list(args)}).json()["event_id"]
        event = None
        with http.stream("GET", f"call/{endpoint}/{event_id}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line[len("event:") :].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    data = json.loads(line[len("data:") :])
                    return event, (data or {}).get("error") if event == "error" else data[0]
    raise AssertionError("no answer")


FILE = {"_type": "gradio.FileData"}
# Every argument after the image, as a plain HTTP client must send them.
REST = {"classify": (), "recommend_image": (3, "All", "All", "All", "All", "")}


@pytest.mark.parametrize("endpoint", ["classify", "recommend_image"])
@pytest.mark.parametrize(
    "value",
    [
        str(WATCH),  # an image that exists on the server
        "/nonexistent/x.jpg",  # the same sentence: no probing which files exist
        "/etc/passwd",
        "../../data/sample/images/10138.jpg",
        {"path": str(WATCH), "meta": FILE},  # a FileData naming a server file outside the uploads
        {"path": "/etc/passwd", "meta": FILE},
    ],
)
def test_a_server_path_is_never_read(app, endpoint, value):
    service, client = app
    event, answer = raw_call(client, endpoint, value, *REST[endpoint])
    assert event == "error" and answer is not None
    assert "files on the server are not read" in answer and "Traceback" not in answer
    assert str(WATCH) not in answer
    still_up(client)


def test_a_file_given_by_url_goes_through_the_apps_guard(app, images):
    """Gradio would download a FileData's URL itself; here it reaches the app's guard, which refuses
    loopback (the default fetcher) with its sentence."""
    service, client = app
    for endpoint in ("classify", "recommend_image"):
        event, answer = raw_call(
            client, endpoint, {"path": images.url("/images/10138.jpg"), "meta": FILE}, *REST[endpoint]
        )
        assert event == "error" and "private or local address (127.0.0.1)" in answer


def test_a_catalog_id_is_an_image_argument(app):
    service, client = app
    item = int(service.recommender.metadata.ids[0])
    for value in (item, str(item)):
        event, answer = raw_call(client, "classify", value)
        assert event == "complete" and answer["articleType"]
    event, answer = raw_call(client, "recommend_image", 99999999, *REST["recommend_image"])
    assert event == "error" and "No catalog item with id 99999999" in answer


def test_an_upload_over_the_limit_is_refused_with_a_sentence_naming_it(app):
    import httpx

    service, client = app
    response = httpx.post(
        client.src.rstrip("/") + "/gradio_api/upload",
        files={"files": ("big.jpg", b"\xff" * (21 * 1024 * 1024), "image/jpeg")},
        timeout=60,
    )
    assert response.status_code == 413
    assert "maximum allowed size of 20971520 bytes" in response.text
    still_up(client)


def test_the_app_bounds_its_queue_and_cleans_its_uploads(app):
    """The launch every server uses: a queue of bounded size and uploads deleted within the hour."""
    import app as app_module

    demo = app_module.build_app(Service())
    assert demo.delete_cache == DELETE_CACHE and sum(DELETE_CACHE) <= 3600
    service, client = app
    assert client.config["max_file_size"] == 20 * 1024 * 1024


def test_a_full_queue_answers_busy_in_one_sentence():
    """More requests than the queue holds: the overflow hears "busy, try again", not Gradio's internals."""
    import threading

    import gradio as gr
    import httpx

    from recommender.serve.ui.guards import BUSY, GuardedBlocks, answer_busy_politely

    release = threading.Event()

    def slow(x: str) -> str:
        release.wait(20)
        return x

    with GuardedBlocks() as demo:
        gr.api(slow, api_name="slow")
    demo.queue(default_concurrency_limit=1, max_size=2)
    answer_busy_politely(demo)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        with httpx.Client(base_url=demo.local_url.rstrip("/") + "/gradio_api/", timeout=30) as http:
            answers = [http.post("call/slow", json={"data": [str(i)]}) for i in range(6)]
        refused = [a for a in answers if a.status_code == 503]
        assert refused and all(BUSY in a.text for a in refused)
        assert sum(a.status_code == 200 for a in answers) >= 2
    finally:
        release.set()
        demo.close()


def test_uploads_are_deleted_once_old():
    """Gradio's cache clean-up, as the app sets it (here every second, for files over a second old)."""
    import time

    import gradio as gr
    import httpx

    from recommender.serve.ui.guards import GuardedBlocks

    def echo(x: str) -> str:
        return x

    with GuardedBlocks(delete_cache=(1, 1)) as demo:
        gr.api(echo, api_name="echo")
    demo.queue().launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        response = httpx.post(
            demo.local_url.rstrip("/") + "/gradio_api/upload",
            files={"files": ("photo.jpg", WATCH.read_bytes(), "image/jpeg")},
        )
        stored = response.json()[0]
        assert os.path.exists(stored)
        deadline = time.monotonic() + 10
        while os.path.exists(stored) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not os.path.exists(stored)
    finally:
        demo.close()


def test_uploads_past_the_size_cap_go_oldest_first(tmp_path):
    """However fast a stranger uploads, the upload folder stays under its cap: the oldest files go first,
    never one a request may still be reading."""
    import time

    from recommender.serve.ui.guards import bound_uploads

    class Demo:
        upload_file_set: set[str] = set()

    now = time.time()
    for i, age in enumerate((600, 500, 400, 300, 5)):  # seconds old; 1 MB each
        path = tmp_path / f"upload-{i}.jpg"
        path.write_bytes(b"\0" * 2**20)
        os.utime(path, (now - age, now - age))
        Demo.upload_file_set.add(str(path))
    bound_uploads(Demo, cap_bytes=2 * 2**20 + 10, every_s=0.05, min_age_s=60)
    deadline = time.monotonic() + 5
    while len(list(tmp_path.iterdir())) > 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upload-3.jpg", "upload-4.jpg"]
    assert Demo.upload_file_set == {str(tmp_path / "upload-3.jpg"), str(tmp_path / "upload-4.jpg")}


def test_a_request_body_over_the_limit_is_refused_before_it_is_parsed(app):
    """A 10 MB argument would be parsed, validated and kept in the session before any function of the
    app could refuse it: the body is refused at the door, announced or streamed."""
    import httpx

    service, client = app
    base = client.src.rstrip("/") + "/gradio_api/"
    words = {"data": ["a" * 3_000_000, 5, "All", "All", "All", "All"]}
    announced = httpx.post(base + "call/recommend_text", json=words, timeout=60)
    assert announced.status_code == 413 and "larger than 1 MB" in announced.json()["detail"]

    def streamed():
        yield json.dumps(words).encode()

    chunked = httpx.post(
        base + "call/recommend_text", content=streamed(), headers={"content-type": "application/json"}, timeout=60
    )
    assert chunked.status_code == 413 and "larger than 1 MB" in chunked.json()["detail"]
    event, answer = raw_call(client, "recommend_text", "navy polo for men", 3, "All", "All", "All", "All")
    assert event == "complete" and len(answer["results"]) == 3


def test_an_upload_stored_again_under_the_same_name_is_not_swept(tmp_path, monkeypatch):
    """Gradio keeps identical uploads under one name: the same photo uploaded again between the sweep's
    listing and its removal is a new file a request is about to read, and it stays."""
    import time

    from recommender.serve.ui import guards as ui

    old = tmp_path / "photo.jpg"
    old.write_bytes(b"\0" * 1000)
    os.utime(old, (time.time() - 600, time.time() - 600))
    uploads = {str(old)}
    real_stat, calls = os.stat, []

    def stat_then_upload_again(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the sweep's check before removing: meanwhile the photo came again
            fresh = tmp_path / "fresh.tmp"
            fresh.write_bytes(b"\0" * 1000)
            os.rename(fresh, old)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(ui.os, "stat", stat_then_upload_again)
    ui.sweep_uploads(uploads, cap_bytes=0, min_age_s=60)
    monkeypatch.undo()
    assert old.exists() and uploads == {str(old)}
    ui.sweep_uploads(uploads, cap_bytes=0, min_age_s=0)  # once old enough, it goes like any other
    assert not old.exists() and uploads == set()


def test_the_pages_sentence_does_not_carry_the_error_it_replaces():
    """An app's error sentence is kept by Gradio in a reference cycle; as the context of the error it
    replaces, it would keep that error's frames and their locals (a fetched body, a decoded photo)."""
    import gradio as gr

    from recommender.errors import UserError
    from recommender.serve.ui.guards import guarded

    def fails(size: int):
        body = b"x" * size  # noqa: F841 - what the frame holds
        raise UserError("The image at that URL is larger than 10 MB; use a smaller photo.")

    with pytest.raises(gr.Error, match="larger than 10 MB") as said:
        guarded(fails)(1_000_000)
    assert said.value.__context__ is None and said.value.__cause__ is None
