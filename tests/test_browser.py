"""End to end in headless Chromium: upload a photo, see k results and the classification, select a
result for more like it; crop a photo of two products to one; fetch a URL into its editor; describe an
item in words and see results; the Explore tab charts and map."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recommender import Recommender
from recommender.evaluation import two_item_photo
from recommender.images import load_image
from recommender.serve.service import Service
from recommender.serve.ui.present import EDITOR_SIDE
from recommender.serve.url_fetch import URLFetcher
from tests.helpers import ROOT, SAMPLE, serve

HIRES = Path(__file__).parent / "data" / "hires"

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's chromium and playwright (make browser, requirements-dev.txt)")
        pytest.skip("chromium or playwright not installed (`make browser`)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def recommender(text_encoder, real_index, real_embedder) -> Recommender:
    return Recommender.load(real_index, embedder=real_embedder, text_encoder=text_encoder)


@pytest.fixture(scope="module")
def photo_searches() -> list[tuple[int, int]]:
    """The size of each photo searched (the app's Service.recommend calls)."""
    return []


@pytest.fixture(scope="module")
def app_url(recommender, real_index, photo_searches):
    service = Service(URLFetcher(allow_addresses=frozenset({"127.0.0.1"})))  # the URL test fetches from the app
    service.set_recommender(recommender)
    recommend = service.recommend

    def counted(image, *args, **kwargs):
        photo_searches.append(image.size)
        return recommend(image, *args, **kwargs)

    service.recommend = counted
    with serve(service, real_index, [str(SAMPLE / "images" / "10138.jpg")]) as url:
        yield url


@pytest.fixture
def page(browser, app_url):
    """The app's page, loaded and ready."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.wait_for_selector("text=Catalog:", timeout=30_000)
    page.wait_for_selector("[data-testid=image] canvas", timeout=30_000)  # the photo editor is drawn
    yield page
    page.close()


def shown_photo(editor) -> tuple[float, float, float, float]:
    """Where the editor shows its photo on the page (left, top, right, bottom) while cropping: the bright
    photo on the crop tool's dark backdrop."""
    box = editor.bounding_box()
    shot = np.asarray(Image.open(io.BytesIO(editor.screenshot())).convert("L")) > 200
    rows, cols = np.flatnonzero(shot.mean(axis=1) > 0.5), np.flatnonzero(shot.mean(axis=0) > 0.5)
    return box["x"] + cols[0], box["y"] + rows[0], box["x"] + cols[-1], box["y"] + rows[-1]


def name_of(recommender: Recommender, item_id: int) -> str:
    md = recommender.metadata
    return str(md.columns["productDisplayName"][md.row_of(item_id)])


def first_caption_is(page, name: str) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('.thumbnail-item').length === 12 && "
        "document.querySelector('.thumbnail-item').innerText.startsWith(n)",
        arg=name,
        timeout=60_000,
    )


def test_upload_shows_k_results_and_classification_then_more_like_this(page, tmp_path):
    page.set_input_files("input[type=file]", str(SAMPLE / "images" / "10138.jpg"))
    page.wait_for_function("document.querySelectorAll('.thumbnail-item').length === 12", timeout=60_000)
    page.wait_for_selector("[data-testid=label-output-value]", timeout=30_000)
    assert "Watches" in page.inner_text("[data-testid=label-output-value]")
    first_caption = page.locator(".thumbnail-item").first.inner_text()
    assert "same type" in first_caption  # why it matched, and the whole name
    assert "Most similar to your photo" in page.inner_text("body")
    assert "…" not in first_caption
    page.locator(".thumbnail-item").nth(1).click()
    page.wait_for_function(
        "c => document.querySelectorAll('.thumbnail-item').length === 12 && "
        "document.querySelector('.thumbnail-item').innerText !== c",
        arg=first_caption,
        timeout=30_000,
    )
    shot = Path(os.environ.get("SCREENSHOTS_TO", tmp_path)) / "screenshot.png"  # the README's picture
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_what_it_is_shows_above_the_results_without_scrolling_on_a_laptop_screen(browser, app_url, real_index):
    """At 1366x768, after an upload (and after fetching an image URL): the one-line summary of what the
    item is sits inside the viewport, above the gallery."""
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    try:
        page.goto(app_url)
        page.wait_for_selector("text=Catalog:", timeout=30_000)
        page.wait_for_selector("[data-testid=image] canvas", timeout=30_000)
        photo = sorted((SAMPLE / "images").glob("*.jpg"))[9]  # one no other test uploads
        page.set_input_files("input[type=file]", str(photo))
        page.wait_for_selector("#summary :text('What it is:')", timeout=60_000)
        summary = page.locator("#summary")
        box = summary.bounding_box()
        assert page.evaluate("window.scrollY") == 0
        assert 0 <= box["y"] and box["y"] + box["height"] <= 768 and box["x"] + box["width"] <= 1366
        assert summary.inner_text().count(" · ") == 2 and "%" in summary.inner_text()
        assert box["y"] < page.locator(".thumbnail-item").first.bounding_box()["y"]  # above the results
        page.get_by_role("tab", name="Image URL").click()
        page.get_by_label("Image URL").fill(f"{app_url}gradio_api/file={real_index / 'thumbnails' / '10138.jpg'}")
        page.get_by_role("button", name="Fetch and find similar").click()
        page.wait_for_selector("#summary :text('Watches')", timeout=60_000)
        box = summary.bounding_box()
        assert box["y"] + box["height"] <= 768 and page.evaluate("window.scrollY") == 0
    finally:
        page.close()


def test_an_upload_searches_once(page, photo_searches):
    """The editor fires an upload and a change event for one upload: one search answers both."""
    photo_searches.clear()
    photo = sorted((SAMPLE / "images").glob("*.jpg"))[5]  # one no other test uploads (answers are reused briefly)
    page.set_input_files("input[type=file]", str(photo))
    page.wait_for_function("document.querySelectorAll('.thumbnail-item').length === 12", timeout=60_000)
    page.wait_for_timeout(3_000)  # time for a second search to start, if one were coming
    assert len(photo_searches) == 1


def test_a_phone_sized_photo_is_scaled_to_the_editors_canvas_in_the_browser(page, photo_searches, tmp_path):
    """A 12-megapixel photo reaches the server at the editor's canvas side, its transparent margin cut:
    the browser composites and uploads a fraction of the pixels (docs/benchmarks.md#upload)."""
    load_image(HIRES / "10018.jpg").resize((3000, 4000), Image.Resampling.BICUBIC).save(tmp_path / "phone.jpg")
    photo_searches.clear()
    page.set_input_files("input[type=file]", str(tmp_path / "phone.jpg"))
    page.wait_for_function("document.querySelectorAll('.thumbnail-item').length === 12", timeout=60_000)
    width, height = photo_searches[0]
    assert height == EDITOR_SIDE and abs(width - EDITOR_SIDE * 3 / 4) <= 1


def test_the_upload_benchmark_compares_the_fixed_canvas_with_the_photos_own(
    browser, real_index, real_weights, text_model, tmp_path
):
    """scripts/upload_latency.py, shortened: both settings measured, and what the server received shows each."""
    args = ["--index", str(real_index), "--weights", str(real_weights), "--text-model", str(text_model)]
    out = tmp_path / "upload.json"
    run = subprocess.run(
        [sys.executable, "scripts/upload_latency.py", *args, "--sides", "640", "--repeats", "1", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["fixed"]["640"]["server_received"] == [EDITOR_SIDE * 3 // 4, EDITOR_SIDE]
    assert result["follows_photo"]["640"]["server_received"] == [480, 640]
    assert result["speedup"]["640"] > 0


def test_a_catalog_example_searches(page, recommender):
    page.locator("text=Try a catalog photo").locator("xpath=..").locator("img").first.click()
    first_caption_is(page, name_of(recommender, 10138))  # the example is a catalog photo: itself first


def test_describe_in_words_shows_results_and_what_the_words_asked_for(page, tmp_path):
    page.get_by_role("tab", name="Describe").click()
    page.get_by_label("What are you looking for?").fill("black tee for men")
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_function("document.querySelectorAll('.thumbnail-item').length === 12", timeout=60_000)
    page.wait_for_selector("text=Your words asked for:", timeout=30_000)
    captions = page.locator(".thumbnail-item").all_inner_texts()
    assert sum("same type, colour and gender" in c for c in captions) >= 10
    page.screenshot(path=str(Path(os.environ.get("SCREENSHOTS_TO", tmp_path)) / "screenshot-words.png"), full_page=True)


def test_explore_charts_the_catalog(page, tmp_path):
    page.get_by_role("tab", name="Explore").click()
    page.wait_for_function("document.querySelectorAll('.vega-embed').length >= 10", timeout=60_000)
    page.wait_for_selector("text=Products by article type", timeout=30_000)
    page.wait_for_timeout(1_000)  # the charts draw
    page.screenshot(
        path=str(Path(os.environ.get("SCREENSHOTS_TO", tmp_path)) / "screenshot-explore.png"), full_page=True
    )
    assert page.locator(".vega-embed svg, .vega-embed canvas").count() >= 10  # 8 counts, accuracy, the map
    # Dragging across the map puts that stretch's products in the gallery.
    catalog_map = page.locator(".vega-embed").last
    catalog_map.scroll_into_view_if_needed()  # the mouse acts on the visible page only
    box = catalog_map.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=10)
    page.mouse.up()
    page.wait_for_selector("text=products in that stretch of the map", timeout=30_000)
    page.get_by_role("tab", name="Search").click()
    page.wait_for_function("document.querySelectorAll('.thumbnail-item').length === 12", timeout=30_000)


def test_crop_a_photo_of_two_products_to_one_and_search_only_it(page, recommender, tmp_path):
    from playwright.sync_api import TimeoutError as PageTimeout

    target, other = 10009, 10037  # a red T-shirt beside sports shoes
    photo, box = two_item_photo(
        load_image(HIRES / f"{target}.jpg"), load_image(HIRES / f"{other}.jpg"), random.Random(1)
    )
    photo.save(tmp_path / "two.jpg")
    for attempt in range(2):  # the editor's canvas sometimes misses a headless page's first upload or drag
        try:
            crop_and_search(page, tmp_path / "two.jpg", photo.width, box, name_of(recommender, target))
            break
        except PageTimeout:
            if attempt:
                raise
            page.reload()
            page.wait_for_selector("[data-testid=image] canvas", timeout=30_000)
    assert "Tshirts" in page.inner_text("[data-testid=label-output-value]")
    page.screenshot(path=str(Path(os.environ.get("SCREENSHOTS_TO", tmp_path)) / "screenshot-crop.png"), full_page=True)


def crop_and_search(page, path: Path, width: int, box: tuple, target_name: str) -> None:
    page.set_input_files("input[type=file]", str(path))
    page.get_by_role("button", name="Find similar").click()  # an upload searching at once: the first test
    page.wait_for_function("document.querySelectorAll('.thumbnail-item').length === 12", timeout=60_000)
    page.get_by_role("button", name="Image", exact=True).first.click()
    page.get_by_role("button", name="Crop", exact=True).first.click()
    editor = page.locator("[data-testid=image]").first
    page.wait_for_selector("button[aria-label='Confirm crop']", timeout=10_000)
    left, top, right, bottom = shown_photo(editor)
    scale, middle = (right - left) / width, (top + bottom) / 2
    for edge, to in ((right - 1, left + box[2] * scale), (left + 1, left + box[0] * scale)):  # a shopper's box
        page.mouse.move(float(edge), float(middle))
        page.mouse.down()
        page.mouse.move(float(to), float(middle), steps=12)
        page.mouse.up()
    page.get_by_role("button", name="Confirm crop").click()
    first_caption_is(page, target_name)


def test_a_fetched_url_lands_in_its_editor_and_is_searched(page, recommender, real_index, app_url):
    page.get_by_role("tab", name="Image URL").click()
    page.get_by_label("Image URL").fill(f"{app_url}gradio_api/file={real_index / 'thumbnails' / '10138.jpg'}")
    page.get_by_role("button", name="Fetch and find similar").click()
    first_caption_is(page, name_of(recommender, 10138))
    assert page.locator("[data-testid=image] canvas").count() >= 2  # the fetched photo, in an editor to crop
