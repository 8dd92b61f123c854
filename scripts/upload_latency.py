"""Seconds from choosing a photo to seeing its results in the app's page (headless Chromium), for photos of
several sizes, with the photo editor's canvas fixed (the app's setting) and following each photo's size
(the baseline), side by side.

    python scripts/upload_latency.py --index DIR [--weights PATH] [--text-model DIR]
                                     [--sides 224 1600 4000] [--repeats 3] [--out FILE]

Needs Chromium and playwright (`make browser`). Each photo is a product photo of the repository's test set
scaled to the given longer side, with a camera's grain (Gaussian, sigma 2 levels: a phone photo's
pixels do not compress like a smooth upscale) and a new grain per upload, so no upload can reuse the
answer to another. The app runs in this process, one server per setting; the page is fresh per upload.
Reports per setting and side the median seconds and what the server received (the photo's size after the
loader)."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from recommender import Recommender
from recommender.artifacts import read_manifest
from recommender.cli import add_model_options, run_main
from recommender.errors import UserError
from recommender.evaluation import phone_photo
from recommender.runtime import configure_runtime, cpu_info
from recommender.serve.service import Service
from recommender.serve.ui.launch import launch
from recommender.serve.ui.page import build_app
from recommender.serve.ui.present import EDITOR_SIDE
from recommender.serve.url_fetch import URLFetcher

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "tests" / "data" / "hires" / "10000.jpg"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run"]


def photo_of_side(side: int, seed: int, folder: Path) -> Path:
    path = folder / f"photo-{side}-{seed}.jpg"
    path.write_bytes(phone_photo(Image.open(PHOTO).convert("RGB"), side, seed))
    return path


def measure(rec: Recommender, canvas_side: int | None, photos: dict[int, list[Path]], browser) -> dict:
    service = Service(URLFetcher())
    service.set_recommender(rec)
    received: list[tuple[int, int]] = []
    recommend = service.recommend

    def noted(image, *args, **kwargs):
        received.append(image.size)
        return recommend(image, *args, **kwargs)

    service.recommend = noted
    demo = launch(
        build_app(service, canvas_side=canvas_side),
        [rec.folder / "thumbnails"],
        "127.0.0.1",
        None,
        block=False,
    )
    out = {}
    try:
        for side, paths in photos.items():
            seconds = []
            for path in paths:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(demo.local_url)
                page.wait_for_selector("[data-testid=image] canvas", timeout=60_000)
                start = time.monotonic()
                page.set_input_files("input[type=file]", str(path))
                page.wait_for_function("document.querySelectorAll('.thumbnail-item').length >= 1", timeout=300_000)
                seconds.append(time.monotonic() - start)
                page.close()
            out[str(side)] = {
                "median_s": round(statistics.median(seconds), 2),
                "runs_s": [round(s, 2) for s in seconds],
                "server_received": list(received[-1]),
            }
            print(f"canvas {canvas_side or 'follows the photo'}: longer side {side}: {out[str(side)]}", flush=True)
    finally:
        demo.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True)
    add_model_options(parser)
    parser.add_argument("--sides", type=int, nargs="+", default=[224, 1600, 4000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    read_manifest(args.index, verify=False)  # one sentence if there is no index
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        raise UserError("This benchmark needs Chromium and playwright; run `make browser` first.")
    configure_runtime()
    rec = Recommender.load(args.index, weights=args.weights, text_model=args.text_model)
    rec.embedder.warm_up()
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as p:
        photos = {s: [photo_of_side(s, seed, Path(folder)) for seed in range(args.repeats)] for s in args.sides}
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            settings = {"fixed": EDITOR_SIDE, "follows_photo": None}
            result = {name: measure(rec, side, photos, browser) for name, side in settings.items()}
        finally:
            browser.close()
    result["speedup"] = {
        s: round(result["follows_photo"][s]["median_s"] / result["fixed"][s]["median_s"], 2) for s in result["fixed"]
    }
    result["canvas_side"] = EDITOR_SIDE
    result["cpu"] = cpu_info()["model"]
    print(json.dumps(result["speedup"]))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
