"""Serving the page with the public link's bounds: the one launch the app, its tests and the benchmarks share."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from .guards import BodyLimit, answer_busy_politely, bound_uploads

# What a stranger can make the public link hold: uploads up to this size (Gradio refuses larger ones with
# a sentence naming it), requests waiting beyond the queue's size get "busy, try again", and every file
# uploaded or made for a visitor is deleted an hour at most after it was written.
MAX_UPLOAD = "20mb"
QUEUE_SIZE = 64
WORKERS = 8
DELETE_CACHE = (600, 3000)  # (every 10 minutes, files older than 50 minutes)
UPLOADS_CAP = 2 * 1024**3  # and past 2 GB of uploads the oldest go first (bound_uploads)
# Any other request body: an API call's arguments are a few kB (words at most 2,000 characters); an MCP
# call may carry a 20 MB photo inline as base64.
MAX_BODY = 1024**2
BODY_LIMITS = {"/gradio_api/upload": None, "/gradio_api/mcp": 28 * 1024**2}
# Gallery captions whole, on as many lines as they need, instead of one line cut to "Puma Men …".
CSS = (
    ".caption-label { white-space: normal !important; max-width: 100% !important; font-size: 11px !important;"
    " line-height: 1.2; opacity: 0.92 !important; }"
)


def launch(
    demo: gr.Blocks,
    served: list[Path],
    host: str,
    port: int | None,
    share: bool = False,
    mcp: bool = True,
    block: bool = True,
) -> gr.Blocks:
    """Serve `demo` (and the files under the `served` folders: thumbnails, example photos) with the public
    link's bounds; `block`: False returns once it serves (tests)."""
    demo.queue(default_concurrency_limit=WORKERS, max_size=QUEUE_SIZE)
    answer_busy_politely(demo)
    bound_uploads(demo, UPLOADS_CAP)
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        allowed_paths=[str(path.resolve()) for path in served],
        max_file_size=MAX_UPLOAD,
        app_kwargs={"middleware": [Middleware(BodyLimit, max_bytes=MAX_BODY, limits=BODY_LIMITS)]},
        mcp_server=mcp,
        css=CSS,
        prevent_thread_lock=not block,
        quiet=not block,
    )
    return demo
