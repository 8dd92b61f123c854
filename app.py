"""Gradio app: upload a photo, paste a URL or describe it in words; see what it is and the most similar
catalog products.

python app.py [--index DIR] [--weights PATH] [--text-model DIR] [--precision auto|fp32|bf16|int8|ort-int8] [--share]
              [--host H] [--port P] [--no-mcp] [--grow-source SRC|none]

The JSON endpoints are also MCP tools (streamable HTTP at /gradio_api/mcp/) unless --no-mcp. With no index at
--index, the app builds a starter index from the bundled sample, serves it, then builds the whole catalog
(--grow-source, default the card's Hub dataset) in the background and switches to it. The page lives in
recommender/serve/ui/ (page.py assembles its rooms); this file opens the index and launches it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from recommender.artifacts import versions_of
from recommender.build.starter import build_starter_index
from recommender.catalog import DEFAULT_SOURCE
from recommender.cli import add_model_options, add_precision_option, run_cli
from recommender.runtime import configure_runtime
from recommender.serve.follow import IndexFollower
from recommender.serve.grow import Growth, build_command
from recommender.serve.recommender import Recommender
from recommender.serve.service import Service
from recommender.serve.startup import built_from_sample, grow_when_ready, open_index
from recommender.serve.ui.launch import launch
from recommender.serve.ui.page import build_app
from recommender.serve.ui.search import forget_cached_examples
from recommender.serve.url_fetch import URLFetcher
from recommender.settings import Settings

ROOT = Path(__file__).resolve().parent
SAMPLE = ROOT / "data" / "sample"
PRECOMPUTE = ROOT / "scripts" / "precompute.py"
EXAMPLE_IDS = (10009, 10138, 10156, 10205, 11241, 11496, 14908)


def served(index: Path) -> list[Path]:
    """The folders whose files the page shows: the index's thumbnails (in every version an update or a
    build publishes there) and the example photos."""
    return [index / "thumbnails", versions_of(index), SAMPLE]


def default_index() -> Path:
    """On a Space with persistent storage (/data), the index lives there: it and the whole catalog's
    background build outlive a restart."""
    data = Path("/data")
    return data / "fashion-index" if data.is_dir() and os.access(data, os.W_OK) else ROOT / "artifacts" / "index"


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=settings.index or default_index())
    add_model_options(parser)
    add_precision_option(parser, "the index's (int8 or ort-int8, or the fastest float one here)")
    parser.add_argument("--share", action="store_true", default=settings.share, help="public link")
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument(
        "--no-mcp", action="store_true", default=settings.no_mcp, help="do not serve the endpoints as MCP tools"
    )
    parser.add_argument(
        "--grow-source",
        default=settings.grow_source or DEFAULT_SOURCE,
        help="while serving the starter index, build this catalog in the background and switch to it ('none': don't)",
    )
    args = parser.parse_args(argv)
    configure_runtime()
    # Gradio's queue rebuilds its monitoring summary (a pandas table of the last 10,000 events) after every
    # event unless told otherwise: 5-10 ms holding the GIL per request, for a dashboard this app does not
    # enable (docs/benchmarks.md#serving-overhead). Once every 1,000 events instead.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    # It also keeps that table's last 10,000 events: the server's RSS climbed ~8 KB a request until then
    # (+21 MB over 2,700 requests; +1 MB keeping 1,000, plenty for the queue's wait estimates;
    # docs/benchmarks.md#hostile-soak).
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")
    # The examples' answers are cached at their first click, for this process only: Gradio's default
    # folder (.gradio/ in the working directory) outlives a restart, and with it answers from the index
    # served before (the starter index, an older build).
    os.environ.setdefault("GRADIO_EXAMPLES_CACHE", tempfile.mkdtemp(prefix="fashion-examples-"))

    service = Service(URLFetcher(allow_addresses=settings.test_allow_addresses))

    opened = run_cli(
        lambda: open_index(
            service,
            args.index,
            SAMPLE,
            args.weights,
            args.text_model,
            settings.index_repo,
            args.precision,
            build_starter=lambda: build_starter_index(
                args.index, SAMPLE, args.weights, args.text_model, args.precision
            ),
        )
    )
    if opened is None:
        return 2
    if (
        args.grow_source != "none"
        and not settings.index_repo
        and (opened == "building" or built_from_sample(args.index, SAMPLE))
    ):
        command = build_command(PRECOMPUTE, args.grow_source, args.index, args.weights, args.text_model, args.precision)
        grow_when_ready(service, Growth(command, args.index))
    # A version published at --index later (an update, a rebuild) is served without a restart.
    IndexFollower(
        service,
        args.index,
        lambda version: Recommender.load(
            version, weights=args.weights, text_model=args.text_model, precision=args.precision
        ),
        on_swap=forget_cached_examples,
    ).start()
    examples = [str(SAMPLE / "images" / f"{i}.jpg") for i in EXAMPLE_IDS if (SAMPLE / "images" / f"{i}.jpg").is_file()]
    launch(build_app(service, examples), served(args.index), args.host, args.port, args.share, not args.no_mcp)
    return 0


# glibc malloc settings, read only at process start (hence the re-exec below). MALLOC_ARENA_MAX=2: each
# of Gradio's worker threads would otherwise get its own arena. A fixed mmap threshold of 128 KiB: glibc
# otherwise raises it after every large free, so image buffers land in the arenas and fragment them
# (RSS under load, docs/benchmarks.md#memory-under-load).
MALLOC_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}

if __name__ == "__main__":
    if any(name not in os.environ for name in MALLOC_ENV):
        os.environ.update({name: value for name, value in MALLOC_ENV.items() if name not in os.environ})
        os.execv(sys.executable, [sys.executable, *sys.argv])
    sys.exit(main())
