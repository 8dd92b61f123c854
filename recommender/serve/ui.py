"""Adapters between the Service and Gradio: errors as one sentence, results as gallery items,
labels and served files. No business logic lives here."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Hashable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import gradio as gr
from gradio.components.api_component import Api
from gradio.data_classes import FileData
from gradio.utils import get_upload_folder
from gradio_client.utils import is_file_obj_with_meta
from PIL import Image

from ..errors import UserError
from ..images import ImageInput
from ..vocabulary import TITLES

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger("recommender.ui")
T = TypeVar("T")
# The photo editors' canvas: the browser scales each photo to fit it before compositing and uploading,
# which costs seconds per megapixel. The model sees at most 80 px of a product's detail, which this side
# still holds for a product a twelfth of its photo's longer side (docs/benchmarks.md#upload).
EDITOR_SIDE = 512
DETAIL_HEADS = ("gender", "masterCategory", "subCategory", "baseColour", "usage")  # article type has its own label


def guarded(fn: Callable) -> Callable:
    """User errors become a one-sentence gr.Error; anything else is logged and explained politely."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except UserError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error("Something went wrong on our side; please try again.", print_exception=False) from None

    return wrapper


class SharedAnswers:
    """Identical requests arriving together share one answer: the image editor fires an upload event and
    one or more change events for a single upload, all with the same photo (2 to 4 searches an upload,
    measured in the browser test). The first request computes, the others wait for it, and its answer
    serves the same request for `seconds` more."""

    def __init__(self, seconds: float = 5.0) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._answers: dict[Hashable, tuple[float, Future]] = {}

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        now = time.monotonic()
        with self._lock:
            self._answers = {k: v for k, v in self._answers.items() if now - v[0] < self.seconds}
            entry = self._answers.get(key)
            mine = entry is None
            if mine:
                entry = self._answers[key] = (now, Future())
        answer = entry[1]
        if mine:
            try:
                answer.set_result(compute())
            except BaseException as exc:  # not kept: the next request tries again
                with self._lock:
                    if self._answers.get(key) is entry:
                        del self._answers[key]
                answer.set_exception(exc)
        return answer.result()


def pixels_key(image: Image.Image | None) -> str | None:
    """A photo's identity by its pixels (the editor re-encodes the same photo under new file names)."""
    if image is None:
        return None
    return f"{image.size}{image.mode}" + hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()


NOT_UPLOADED = (
    "Send the photo as an upload (gradio_client: handle_file(path)), an http(s) image URL or a catalog "
    "product id; files on the server are not read."
)
BUSY = "The app is busy with many requests right now; try again in a few seconds."


def uploaded(path: str) -> bool:
    """Whether `path` lies in Gradio's upload folder, where files that clients uploaded (and the editor's
    composites, and cached examples) are kept."""
    root = Path(get_upload_folder()).resolve()
    try:
        return Path(path).resolve().is_relative_to(root)
    except (OSError, ValueError, RuntimeError):
        return False


def _screened(value: Any, to_url: bool) -> Any:
    """`value` with every file it names checked (see GuardedBlocks); `to_url`: a file given by URL becomes
    the plain URL string (an API argument, fetched by the app's guard)."""
    if is_file_obj_with_meta(value):
        path = value["path"]
        if path.startswith(("http://", "https://")):
            if to_url:
                return path
            raise gr.Error("Files are taken as uploads only; upload the photo instead.", print_exception=False)
        if not uploaded(path):
            raise gr.Error(NOT_UPLOADED, print_exception=False)
        return value
    if isinstance(value, dict):
        return {key: _screened(item, False) for key, item in value.items()}
    if isinstance(value, list):
        return [_screened(item, False) for item in value]
    return value


class GuardedBlocks(gr.Blocks):
    """Blocks that check every file an event names before Gradio touches it: a file must have been
    uploaded to this app (a path elsewhere on the server gets one sentence, not a traceback), and a file
    given by URL is never downloaded by Gradio itself: an API argument turns into the URL, which the app
    fetches through its guard (url_fetch); anywhere else it is refused."""

    async def preprocess_data(self, block_fn, inputs, state, explicit_call: bool = False):
        inputs = [
            _screened(value, isinstance(block, Api)) for block, value in zip(block_fn.inputs, inputs, strict=False)
        ]
        return await super().preprocess_data(block_fn, inputs, state, explicit_call)


def answer_busy_politely(demo: gr.Blocks) -> None:
    """The queue's overflow answers with the app's sentence instead of Gradio's "Queue is full. Max size
    is 64 and size is 64." (HTTP 503 either way)."""
    queue = demo._queue
    push = queue.push

    async def push_or_busy(*args, **kwargs):
        accepted, detail, state = await push(*args, **kwargs)
        return (accepted, BUSY, state) if state == "queue_full" else (accepted, detail, state)

    queue.push = push_or_busy


def sweep_uploads(uploads: set[str], cap_bytes: int, min_age_s: float) -> None:
    """One pass of bound_uploads over the set of uploaded files' names."""
    files = []
    for name in list(uploads):
        try:
            info = os.stat(name)
        except OSError:
            uploads.discard(name)
            continue
        files.append((info.st_mtime, info.st_size, info.st_ino, name))
    total, now = sum(f[1] for f in files), time.time()
    for mtime, size, inode, name in sorted(files):
        if total <= cap_bytes or now - mtime < min_age_s:
            break
        total -= size
        try:
            # Gradio stores identical uploads under one name: the same photo uploaded again since the
            # listing is a new file there, which a request is about to read. Only the old file goes.
            again = os.stat(name)
            if (again.st_ino, again.st_mtime) != (inode, mtime):
                continue
            os.remove(name)
        except OSError:
            pass
        uploads.discard(name)


def bound_uploads(demo: gr.Blocks, cap_bytes: int, every_s: float = 30.0, min_age_s: float = 60.0) -> None:
    """Beside delete_cache's age limit, a size limit on what clients uploaded (a stranger can send 20 MB
    files as fast as the link carries them): past `cap_bytes`, the oldest uploads go first, never one
    younger than `min_age_s` (a request may still be reading it). Checked every `every_s` seconds."""

    def run() -> None:
        while True:
            time.sleep(every_s)
            try:
                sweep_uploads(demo.upload_file_set, cap_bytes, min_age_s)
            except Exception:  # the sweep must never stop; the next one tries again
                log.exception("bounding the upload folder failed")

    threading.Thread(target=run, name="upload-bound", daemon=True).start()


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets HTTP 413 and one sentence before anything
    parses it (Gradio would parse, validate and keep in the session a 10 MB argument before any function
    of ours could refuse it). `limits`: larger bounds for path prefixes (uploads have Gradio's own
    max_file_size; MCP clients may send a photo inline, as base64)."""

    def __init__(self, app, max_bytes: int, limits: dict[str, int | None]) -> None:
        self.app, self.max_bytes, self.limits = app, max_bytes, limits

    def _limit(self, path: str) -> int | None:
        for prefix, limit in self.limits.items():
            if path.startswith(prefix):
                return limit
        return self.max_bytes

    async def __call__(self, scope, receive, send):
        limit = self._limit(scope.get("path", "")) if scope["type"] == "http" else None
        if limit is None:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"").decode()
        if length.isdigit():  # the server holds the client to it
            if int(length) > limit:
                return await self._refuse(limit, send)
            return await self.app(scope, receive, send)
        if b"chunked" not in headers.get(b"transfer-encoding", b""):
            return await self.app(scope, receive, send)
        # A streamed body of unannounced length: read up to the limit first, then hand it on whole.
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client left
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                return await self._refuse(limit, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        return await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(limit: int, send) -> None:
        megabytes = f"{limit / 2**20:g} MB"
        sentence = (
            f"The request is larger than {megabytes}; send photos as uploads and at most 2,000 characters of words."
        )
        body = json.dumps({"detail": sentence}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def image_argument(value: object, service: Service) -> ImageInput | None:
    """An API client's image, only from where it may come: a file uploaded to this app, an http(s) URL
    (fetched through the guard) or a catalog product id (its catalog photo). A path on the server is
    refused in one sentence: its caller does not own this machine."""
    if value is None or value == "":
        return None
    if isinstance(value, (dict, FileData)):
        path = file_path(value)
        if not path or not uploaded(path):
            raise UserError(NOT_UPLOADED)
        return path
    if isinstance(value, int) and not isinstance(value, bool):
        return service.item_photo(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lower().startswith(("http://", "https://")):
            return service.fetch_url(text)
        if re.fullmatch(r"\d{1,12}", text):
            return service.item_photo(int(text))
    raise UserError(NOT_UPLOADED)


def file_path(image) -> str | None:
    """The local path of an uploaded file however a client sent it (FileData dict, FileData, path)."""
    if image is None:
        return None
    if isinstance(image, dict):
        return image.get("path")
    if isinstance(image, FileData):
        return image.path
    return str(image)


def edited_photo(value) -> str | None:
    """The photo as the shopper left it in the image editor: the composite, cropped if they cropped it (the
    background while the editor has not drawn its composite yet); None when the editor is empty."""
    if not value:
        return None
    if isinstance(value, dict):
        return file_path(value.get("composite") or value.get("background")) or None
    return file_path(value) or None


def for_editor(image: Image.Image) -> Image.Image:
    """A fetched photo as the image editor shows it: at most EDITOR_SIDE pixels a side (its canvas), so a
    50-megapixel photo does not travel to the browser whole."""
    if max(image.size) <= EDITOR_SIDE:
        return image
    small = image.copy()
    small.thumbnail((EDITOR_SIDE, EDITOR_SIDE), Image.Resampling.LANCZOS)
    return small


def served(payload: dict) -> dict:
    """Turn every result's thumbnail path into a FileData, which Gradio serves to clients as a file."""
    out = dict(payload)
    if "results" in out:
        out["results"] = [dict(r, image=FileData(path=r["image"])) for r in out["results"]]
    return out


# What a shopper reads for each attribute a result can share with the query.
SHARED = (("articleType", "type"), ("baseColour", "colour"), ("gender", "gender"))


def why(result: dict, reference: dict[str, object] | None) -> str:
    """Why a result matched, in a shopper's words: "same type and colour" (as the query's `reference`)."""
    if not reference:
        return f"{result['articleType']}, {result['baseColour']}"

    def shares(column: str) -> bool:
        wanted = reference[column]
        return result[column] in wanted if isinstance(wanted, (set, list, tuple)) else result[column] == wanted

    same = [word for column, word in SHARED if column in reference and shares(column)]
    if not same:
        return "looks alike"
    return "same " + (same[0] if len(same) == 1 else ", ".join(same[:-1]) + " and " + same[-1])


def gallery(results: list[dict], reference: dict[str, object] | None = None) -> list[tuple[str, str]]:
    """Gallery items: each result's thumbnail with its whole name, score and why it matched (`reference`:
    per column, the attribute the query has or the words asked for)."""

    def caption(r: dict) -> str:
        score = "" if r["score"] is None else f"{r['score']:.2f} · "  # browse results have no score
        return f"{r['name']}\n{score}{why(r, reference)}"

    return [(r["image"], caption(r)) for r in results]


def photo_reference(classification: dict, understood: dict[str, list[str]] | None = None) -> dict[str, object]:
    """What a photo query is, per column: the heads' top label, or what the shopper's words asked for."""
    reference: dict[str, object] = {c: classification[c][0]["label"] for c, _ in SHARED if classification.get(c)}
    return reference | {c: set(labels) for c, labels in (understood or {}).items() if c in dict(SHARED)}


def article_label(classification: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in classification.get("articleType", [])}


def details_markdown(classification: dict, understood: str | None = None) -> str:
    """The heads' predictions as a table, and what the shopper's words were understood to ask for."""
    rows = [
        f"| {TITLES[h]} | {c[0]['label']} | {c[0]['confidence']:.0%} |"
        for h, c in classification.items()
        if h in DETAIL_HEADS and c
    ]
    table = "| | prediction | confidence |\n|---|---|---|\n" + "\n".join(rows) if rows else ""
    if understood is None:
        return table
    words = f"**Your words asked for:** {understood}" if understood else "**Your words:** matched by meaning only"
    return f"{words}\n\n{table}" if table else words


def result_choices(results: list[dict]) -> list[tuple[str, int]]:
    return [(f"{r['name']} ({r['id']})", r["id"]) for r in results]
