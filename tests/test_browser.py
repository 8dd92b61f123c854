"""End to end in headless Chromium: upload a photo, see k results and the classification, select a
result for more like it; describe an item in words and see results; the Explore tab charts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from recommender import Recommender
from recommender.serve.service import Service
from tests.helpers import SAMPLE, serve

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
def app_url(text_encoder, real_index, real_embedder):
    service = Service()
    service.set_recommender(Recommender.load(real_index, embedder=real_embedder, text_encoder=text_encoder))
    with serve(service, real_index, [str(SAMPLE / "images" / "10138.jpg")]) as url:
        yield url


@pytest.fixture
def page(browser, app_url):
    """The app's page, loaded and ready."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.wait_for_selector("text=Catalog:", timeout=30_000)
    yield page
    page.close()


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
