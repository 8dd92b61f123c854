"""The public link's guards: every file an event names is checked, API image arguments come only from where
they may come, errors reach the visitor as one sentence, and what strangers can make the server hold (upload
folder, queue, request bodies) is bounded."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import gradio as gr
from gradio.components.api_component import Api
from gradio.data_classes import FileData
from gradio.utils import get_upload_folder
from gradio_client.utils import is_file_obj_with_meta

from ...errors import UserError
from ...images import ImageInput
from ..activity import QUERIES

if TYPE_CHECKING:
    from ..service import Service

log = logging.getLogger("recommender.ui")


def guarded(fn: Callable) -> Callable:
    """User errors become a one-sentence gr.Error; anything else is logged and explained politely. It runs as
    one of the process's queries (work in the background steps aside meanwhile)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with QUERIES.query():
                return fn(*args, **kwargs)
        except gr.Error:
            raise
        except UserError as exc:
            sentence = str(exc)
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            sentence = "Something went wrong on our side; please try again."
        # Raised outside the except clause, the sentence does not hold the error it replaces as its
        # context: that error's traceback keeps every frame's locals (a fetched body, a decoded photo),
        # and Gradio keeps the sentence in a reference cycle that only a full garbage collection frees.
        raise gr.Error(sentence, print_exception=False)

    return wrapper


def wire(event: Callable, fn: Callable, inputs: list, outputs: list, name: str):
    """A UI event: callable by the page, but neither in the API docs nor an MCP tool."""
    return event(fn, inputs, outputs, api_name=f"ui_{name}", api_visibility="undocumented")


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
