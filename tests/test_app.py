"""The app's JSON API, called as clients call it: gradio_client against the app on a loopback port,
with the real weights and a small real catalog."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client, handle_file

import app as app_module
from recommender import Recommender
from recommender.errors import ArtifactsError, UserError
from recommender.serve import startup
from recommender.serve.service import Profile, Service
from recommender.serve.ui.launch import CSS
from recommender.serve.url_fetch import URLFetcher
from tests.helpers import SAMPLE, script, serve
from tests.helpers.image_server import ImageServer

WATCH = SAMPLE / "images" / "10138.jpg"


@pytest.fixture(scope="module")
def index_dir(real_index):
    return real_index


@pytest.fixture(scope="module")
def images():
    with ImageServer() as server:
        yield server


@pytest.fixture(scope="module")
def client(text_encoder, index_dir, real_embedder, images):
    service = Service(URLFetcher(allow_addresses=frozenset({"127.0.0.1"}), timeout_s=5))
    service.set_recommender(Recommender.load(index_dir, embedder=real_embedder, text_encoder=text_encoder))
    with serve(service, index_dir) as url:
        yield Client(url, verbose=False)


def assert_matches(results, k, **expected):
    assert len(results) == k
    for match in results:
        assert set(match) == {
            "id",
            "name",
            "score",
            "gender",
            "masterCategory",
            "subCategory",
            "articleType",
            "baseColour",
            "image",
        }
        for key, value in expected.items():
            assert match[key] == value
        assert open(match["image"], "rb").read(2) == b"\xff\xd8"  # the thumbnail really came over


def test_recommend_image_classifies_and_returns_k_similar_items(client):
    out = client.predict(handle_file(str(WATCH)), 6, api_name="/recommend_image")
    assert out["classification"]["articleType"][0]["label"] == "Watches"
    assert set(out["classification"]) >= {"articleType", "gender", "masterCategory", "baseColour", "usage"}
    assert all(len(v) <= 3 and 0 <= v[0]["confidence"] <= 1 for v in out["classification"].values())
    assert_matches(out["results"], 6)
    assert out["results"][0]["id"] == 10138 and out["results"][0]["score"] > 0.99
    assert [m["articleType"] for m in out["results"]].count("Watches") >= 5


def test_recommend_image_respects_filters(client):
    out = client.predict(handle_file(str(WATCH)), 5, "Women", "Apparel", "All", api_name="/recommend_image")
    assert_matches(out["results"], 5, gender="Women", masterCategory="Apparel")
    out = client.predict(handle_file(str(WATCH)), 4, "All", "All", "Tshirts", api_name="/recommend_image")
    assert_matches(out["results"], 4, articleType="Tshirts")


def test_every_endpoint_takes_a_sub_category_filter_as_its_last_argument(client, images):
    shoes = ("All", "All", "All", "Shoes")  # gender, master_category, article_type, sub_category
    out = client.predict(handle_file(str(WATCH)), 4, *shoes, api_name="/recommend_image")
    assert_matches(out["results"], 4, subCategory="Shoes")
    out = client.predict(images.url("/images/10138.jpg"), 3, *shoes, api_name="/recommend_url")
    assert_matches(out["results"], 3, subCategory="Shoes")
    out = client.predict(10138, 5, *shoes, api_name="/similar_item")
    assert_matches(out["results"], 5, subCategory="Shoes")
    out = client.predict("All", "All", "All", 1, 12, "Shoes", api_name="/browse")
    assert_matches(out["results"], 12, subCategory="Shoes")
    assert out["total"] < client.predict("All", "All", "All", 1, 12, api_name="/browse")["total"]


def test_a_new_filter_is_one_line_in_the_vocabulary(monkeypatch, index_dir, real_embedder, text_encoder):
    """A filter added to vocabulary.API_FILTERS: every filtered endpoint takes it as its last argument (the
    published order stays), documented, and honours it; the page shows its dropdown with the catalog's values."""
    from recommender import vocabulary
    from recommender.serve.ui.endpoints import ENDPOINTS, published

    colour = vocabulary.ApiFilter("colour", "baseColour", "Navy Blue")
    monkeypatch.setattr(vocabulary, "API_FILTERS", (*vocabulary.API_FILTERS, colour))
    service = Service()
    service.set_recommender(Recommender.load(index_dir, embedder=real_embedder, text_encoder=text_encoder))
    demo = app_module.build_app(service)
    named = demo.get_api_info()["named_endpoints"]
    for endpoint in ENDPOINTS:
        names = [p["parameter_name"] for p in named[f"/{endpoint.fn.__name__}"]["parameters"]]
        assert names == ([*endpoint.order, "colour"] if "gender" in endpoint.order else list(endpoint.order))
    calls = {e.fn.__name__: published(e, service) for e in ENDPOINTS}
    assert 'e.g. "Navy Blue"' in calls["browse"].__doc__
    black = calls["browse"]("All", "All", "All", 1, 12, "All", "Black")
    assert black["results"] and {r["baseColour"] for r in black["results"]} == {"Black"}
    near = calls["similar_item"](10138, 5, "All", "All", "All", "All", "Black")
    assert len(near["results"]) == 5 and {r["baseColour"] for r in near["results"]} == {"Black"}
    dropdowns = [b for b in demo.blocks.values() if isinstance(b, gr.Dropdown)]
    assert "Colour" in [d.label for d in dropdowns]
    assert "Black" in service.filter_choices()["baseColour"]


def test_recommend_text_finds_what_the_words_describe(client):
    out = client.predict("black tee for men", 4, api_name="/recommend_text")
    assert_matches(out["results"], 4, articleType="Tshirts", baseColour="Black", gender="Men")
    assert out["understood"] == "gender Men · colour Black · article type Tshirts"
    out = client.predict("wristwatch", 3, "Women", "All", "All", "All", api_name="/recommend_text")
    assert_matches(out["results"], 3, gender="Women", articleType="Watches")


def test_photo_endpoints_take_words_as_their_last_argument(client, images):
    plain = client.predict(handle_file(str(WATCH)), 4, api_name="/recommend_image")
    assert "understood" not in plain
    out = client.predict(
        handle_file(str(WATCH)), 4, "All", "All", "All", "All", "in white", api_name="/recommend_image"
    )
    assert_matches(out["results"], 4, baseColour="White", articleType="Watches")
    assert out["understood"] == "colour White" and out["classification"] == plain["classification"]
    out = client.predict(
        images.url("/images/10138.jpg"), 3, "All", "All", "All", "All", "for women", api_name="/recommend_url"
    )
    assert_matches(out["results"], 3, gender="Women")


def test_empty_filter_combination_returns_no_results_not_an_error(client):
    out = client.predict(handle_file(str(WATCH)), 5, "Boys", "Footwear", "Sarees", api_name="/recommend_image")
    assert out["results"] == []


def test_recommend_url_fetches_from_the_local_server(client, images):
    out = client.predict(images.url("/images/10138.jpg"), 3, api_name="/recommend_url")
    assert out["results"][0]["id"] == 10138


def test_similar_item_excludes_itself_and_filters(client):
    out = client.predict(10138, 5, "Men", api_name="/similar_item")
    assert_matches(out["results"], 5, gender="Men")
    assert 10138 not in [m["id"] for m in out["results"]]


def test_classify_returns_top3_per_head(client):
    out = client.predict(handle_file(str(WATCH)), api_name="/classify")
    assert out["masterCategory"][0] == {"label": "Accessories", "confidence": out["masterCategory"][0]["confidence"]}
    assert len(out["articleType"]) == 3


def test_browse_pages_through_the_filtered_catalog(client):
    first = client.predict("Men", "Apparel", "All", 1, api_name="/browse")
    second = client.predict("Men", "Apparel", "All", 2, api_name="/browse")
    assert first["total"] > 24
    assert_matches(first["results"], 12, gender="Men", masterCategory="Apparel")
    ids = [m["id"] for m in first["results"] + second["results"]]
    assert ids == sorted(ids) and len(set(ids)) == 24


def test_the_line_above_the_results_says_what_was_asked(client):
    """The page's summary line (its events are callable, undocumented): what words asked for; nothing for a
    page of the catalog, which answers no query (a photo's: the example and browser tests)."""
    words = client.predict("black tee for men", 12, "All", "All", "All", "All", api_name="/ui_search_words")
    assert words[0] == "**Your words asked for:** gender Men · colour Black · article type Tshirts"
    assert words[2] == ""  # not twice: the table beside the photo stays empty for words
    browse = client.predict(1, 12, "All", "All", "All", "All", api_name="/ui_browse")
    assert browse[0] == "" and browse[1].endswith("products match.")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda c: c.predict(handle_file(__file__), api_name="/recommend_image"), "not an image"),
        (lambda c: c.predict("http://169.254.169.254/latest/meta-data", api_name="/recommend_url"), "private or local"),
        (lambda c: c.predict("ftp://example.com/x.jpg", api_name="/recommend_url"), "Only http"),
        (lambda c: c.predict(1, api_name="/similar_item"), "No catalog item with id 1"),
        (lambda c: c.predict(10138, 0, api_name="/similar_item"), "k must be a whole number between"),
        (lambda c: c.predict(10138, "All", api_name="/similar_item"), "k must be a whole number between"),
        (lambda c: c.predict("All", "All", "All", 0, api_name="/browse"), "page must be"),
        (lambda c: c.predict("   ", api_name="/recommend_text"), "The description is empty"),
        (lambda c: c.predict("x" * 2500, api_name="/recommend_text"), "keep it under 2,000"),
        (lambda c: c.predict("👗👠", api_name="/recommend_text"), "no words in it"),
        (
            lambda c: c.predict(
                handle_file(str(WATCH)), 3, "All", "All", "All", "All", "🔥", api_name="/recommend_image"
            ),
            "no words",
        ),
    ],
)
def test_bad_requests_get_one_clear_sentence(client, call, message):
    with pytest.raises(Exception, match=message) as info:
        call(client)
    assert "Traceback" not in str(info.value)
    assert client.predict(10138, 2, api_name="/similar_item")["results"]  # and the server still answers


def test_the_plain_http_api_under_concurrent_load(client, index_dir, tmp_path):
    """scripts/loadtest.py, shortened, against this server: Gradio's HTTP API without gradio_client, a
    session per client, every answer checked (k results, ids in the catalog, filters kept, no self-match)."""
    loadtest = script("loadtest")
    out = tmp_path / "load.json"
    args = ["--index", str(index_dir), "--url", client.src, "--clients", "4", "--requests", "40", "--warmup", "5"]
    assert loadtest.main([*args, "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["requests"] == 40 and summary["errors"] == 0 and len(summary["latency_ms"]) == 5
    with loadtest.GradioHTTP.pool(client.src, 2) as pool:
        plain = loadtest.GradioHTTP(pool, session="test")
        with pytest.raises(loadtest.AppError, match="No catalog item with id 99999999; use an id from a search result"):
            plain.call("similar_item", 99999999, 2, "All", "All", "All", "All")


def test_app_answers_with_a_clear_message_while_the_index_is_building(index_dir):
    with serve(Service(), index_dir) as url:
        with pytest.raises(Exception, match="being prepared"):
            Client(url, verbose=False).predict(handle_file(str(WATCH)), api_name="/classify")


def test_app_refuses_to_start_on_a_damaged_index(index_dir, tmp_path, real_weights, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(index_dir, damaged)
    (damaged / "metadata.json").write_text("{}")
    assert app_module.main(["--index", str(damaged), "--weights", str(real_weights)]) == 2
    err = capsys.readouterr().err
    assert "metadata.json does not match its checksum" in err and err.count("\n") == 1


def test_a_failed_background_build_is_reported_not_left_as_preparing():
    def broken():
        raise RuntimeError("disk full")

    service = Service()
    service.load_in_background(broken).join(timeout=10)
    with pytest.raises(UserError, match="could not be built \\(RuntimeError\\)"):
        service.classify(str(WATCH))


def test_refine_refuses_ids_that_are_not_catalog_items_and_keeps_the_profile(text_encoder, index_dir, real_embedder):
    service = Service()
    service.set_recommender(Recommender.load(index_dir, embedder=real_embedder, text_encoder=text_encoder))
    profile = Profile(query=service.recommender.vector_of(10138))
    liked = int(service.recommender.metadata.ids[1])
    service.refine(profile, [liked], [], 5)
    for bad, message in [
        ([999999999], "No catalog item with id 999999999"),
        (["abc"], "whole number"),
        ([2.5], "whole number"),
        ([None], "whole number"),
        (str(liked), "must be a list"),
    ]:
        with pytest.raises(UserError, match=message):
            service.refine(profile, bad, [], 5)
        with pytest.raises(UserError, match=message):
            service.refine(profile, [], bad, 5)
    assert profile.liked == [liked] and profile.disliked == []  # bad input left the session as it was
    assert len(service.refine(profile, [], [], 5)["results"]) == 5


def test_a_starter_index_this_version_cannot_read_is_rebuilt_but_any_other_index_is_refused(
    text_encoder, text_model, real_index, real_embedder, real_weights, tmp_path, monkeypatch
):
    index = tmp_path / "index"
    shutil.copytree(real_index, index)
    manifest = json.loads((index / "manifest.json").read_text())
    manifest["model"]["preprocessing"].pop("mid_level")  # as an index built before the third stage joined
    (index / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactsError, match=r"other preprocessing than this version uses \(mid_level\); rebuild"):
        startup.open_index(
            Service(), index, SAMPLE, str(real_weights), str(text_model)
        )  # someone's own index: never replaced behind their back

    manifest["source"]["source"] = str(SAMPLE)  # the app's own starter index
    (index / "manifest.json").write_text(json.dumps(manifest))
    rebuilt = []  # the real build takes a minute; here the index built by this version is copied in

    def build_starter():
        shutil.rmtree(index)
        shutil.copytree(real_index, index)
        rebuilt.append(index)
        return real_embedder, text_encoder

    service = Service()
    assert (
        startup.open_index(service, index, SAMPLE, str(real_weights), str(text_model), build_starter=build_starter)
        == "building"
    )
    assert service.wait_ready(60) and rebuilt == [index]
    assert startup.open_index(Service(), real_index, SAMPLE, str(real_weights), str(text_model)) == "serving"


def test_the_app_serves_mcp_tools_unless_told_not_to(real_index, real_weights, text_model, monkeypatch):
    launched = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: launched.append(kwargs))
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", "")
    monkeypatch.delenv("GRADIO_EXAMPLES_CACHE")  # restored (unset) after the test
    common = ["--index", str(real_index), "--weights", str(real_weights), "--text-model", str(text_model)]
    assert app_module.main(common) == 0 and app_module.main([*common, "--no-mcp"]) == 0
    assert [k["mcp_server"] for k in launched] == [True, False]
    assert all(k["css"] == CSS for k in launched)
    # The examples' cached answers live as long as the process: a restart on another index starts afresh.
    cache = Path(os.environ["GRADIO_EXAMPLES_CACHE"])
    assert cache.is_dir() and cache.is_relative_to(tempfile.gettempdir()) and not any(cache.iterdir())


def test_captions_say_why_a_result_matched():
    from recommender.serve.ui.present import gallery, photo_reference

    result = {"name": "Puma Men Grey Sweatshirt With A Long Name", "score": 0.87, "image": "x.jpg"}
    result |= {"articleType": "Sweatshirts", "baseColour": "Grey", "gender": "Men"}
    classification = {
        c: [{"label": v, "confidence": 0.9}]
        for c, v in (("articleType", "Sweatshirts"), ("baseColour", "Grey"), ("gender", "Women"))
    }
    assert gallery([result], photo_reference(classification)) == [
        ("x.jpg", "Puma Men Grey Sweatshirt With A Long Name\n0.87 · same type and colour")
    ]
    asked = photo_reference(classification, {"baseColour": ["Red"]})  # "in red": the words replace the colour
    assert gallery([result], asked)[0][1].endswith("0.87 · same type")
    assert gallery([result], {"gender": "Women"})[0][1].endswith("0.87 · looks alike")
    assert gallery([dict(result, score=None)])[0][1] == "Puma Men Grey Sweatshirt With A Long Name\nSweatshirts, Grey"


def test_explore_counts_follow_the_filters_and_the_heads_report_each_class(index_dir, real_embedder, text_encoder):
    service = Service()
    service.set_recommender(Recommender.load(index_dir, embedder=real_embedder, text_encoder=text_encoder))
    everything = service.insights()
    assert set(everything) == {"gender", "masterCategory", "subCategory", "articleType", "baseColour", "usage"} | {
        "season",
        "year",
    }
    assert sum(n for _, n in everything["gender"]) == 300
    counts = [n for _, n in everything["articleType"]]
    assert counts == sorted(counts, reverse=True) and len(counts) <= 25
    women = service.insights(gender="Women", master_category="Apparel")
    assert [label for label, _ in women["gender"]] == ["Women"]
    assert sum(n for _, n in women["articleType"]) == sum(n for _, n in women["masterCategory"])
    accuracy = service.head_accuracy("articleType")
    head = service.recommender.heads["articleType"]
    assert sum(n for *_, n in accuracy) == head.heldout_rows
    assert [a for _, a, _ in accuracy] == sorted(a for _, a, _ in accuracy)  # worst first
    hits = sum(a * n for _, a, n in accuracy)
    assert hits / head.heldout_rows == pytest.approx(head.heldout_accuracy, abs=1e-3)


def test_the_map_places_the_catalog_the_last_search_and_its_results(index_dir, real_embedder, text_encoder):
    service = Service()
    rec = Recommender.load(index_dir, embedder=real_embedder, text_encoder=text_encoder)
    service.set_recommender(rec)
    assert rec.manifest["map"]["method"] == "tsne"  # 300 items: t-SNE
    payload, vector = service.recommend(str(WATCH), 5)
    shown = [r["id"] for r in payload["results"]]
    points = service.map_points("gender", vector, shown, limit=100)
    catalog = [p for p in points if p["group"] not in ("● results", "▶ your search")]
    assert len(catalog) == 100 and {p["group"] for p in catalog} <= {"Men", "Women", "Unisex", "Boys", "Girls"}
    assert [p["group"] for p in points[-6:]] == ["● results"] * 5 + ["▶ your search"]
    # the search lands among its results: nearer to them than the catalog's typical point is
    search, marked = points[-1], points[-6:-1]
    distance = [((p["x"] - search["x"]) ** 2 + (p["y"] - search["y"]) ** 2) ** 0.5 for p in marked]
    spread = [((p["x"] - search["x"]) ** 2 + (p["y"] - search["y"]) ** 2) ** 0.5 for p in catalog]
    assert np.median(distance) < np.median(spread)
    women = service.map_points("articleType", gender="Women")
    assert len(women) == int((rec.metadata.columns["gender"] == "Women").sum())  # fewer than the limit: all
    with pytest.raises(UserError, match="Colour the map by one of"):
        service.map_points("productDisplayName")
    # a drag across the map: the products in that stretch, nearest its middle first
    x = np.asarray(rec.positions[:, 0])
    low, high = np.percentile(x, [40, 60])
    band = service.map_band([high, low], 7, gender="Men")
    middle = (low + high) / 2
    offsets = [abs(x[rec.row_of(r["id"])] - middle) for r in band["results"]]
    assert len(offsets) == 7 and offsets == sorted(offsets) and all(r["gender"] == "Men" for r in band["results"])
    assert band["total"] == int(((x >= low) & (x <= high) & (rec.metadata.columns["gender"] == "Men")).sum())
    with pytest.raises(UserError, match="Drag across the map"):
        service.map_band("nowhere")


def test_identical_searches_arriving_together_share_one_answer():
    """The editor's upload and change events for one photo: one computation, every caller its answer;
    a failure is not kept, and an answer is not reused past its few seconds."""
    import threading
    import time

    from PIL import Image

    from recommender.serve.ui.present import SharedAnswers, pixels_key

    answers, calls, started = SharedAnswers(seconds=0.5), [], threading.Event()

    def slow_search():
        calls.append(1)
        started.set()
        time.sleep(0.2)
        return "results"

    photo = Image.new("RGB", (60, 80), (10, 20, 30))
    key = (pixels_key(photo), 12, "", ())
    assert pixels_key(photo.copy()) == pixels_key(photo) != pixels_key(Image.new("RGB", (60, 80)))
    got = []
    first = threading.Thread(target=lambda: got.append(answers.get(key, slow_search)))
    first.start()
    started.wait()
    got.append(answers.get(key, slow_search))  # while the first one runs
    first.join()
    assert got == ["results", "results"] and len(calls) == 1
    assert answers.get((pixels_key(photo), 24, "", ()), lambda: "other k") == "other k"

    def failing():
        raise ValueError("no")

    with pytest.raises(ValueError):
        answers.get("bad", failing)
    assert answers.get("bad", lambda: "fine now") == "fine now"
    time.sleep(0.6)
    assert answers.get(key, slow_search) == "results" and len(calls) == 2


def test_an_example_photo_is_answered_once_then_from_the_cache(
    monkeypatch, tmp_path, index_dir, real_embedder, text_encoder
):
    """The catalog examples are cached lazily: the first click by any visitor searches, every later one is
    answered from the cache (what it is and its look-alikes, with the page's defaults)."""
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path / "examples"))
    service = Service()
    service.set_recommender(Recommender.load(index_dir, embedder=real_embedder, text_encoder=text_encoder))
    searches = []
    recommend = service.recommend
    monkeypatch.setattr(service, "recommend", lambda *a, **kw: (searches.append(a), recommend(*a, **kw))[1])
    with serve(service, index_dir, [str(WATCH)]) as url:
        example = Client(url, verbose=False)
        first = example.predict(0, api_name="/ui_example_photo")
        again = Client(url, verbose=False).predict(0, api_name="/ui_example_photo")
    assert len(searches) == 1 and first == again
    summary, label, details, found = first
    assert summary.startswith("What it is: **Watches**") and summary.count(" · ") == 2
    assert label["label"] == "Watches" and "| Category | Accessories |" in details
    assert len(found) == 12 and all(open(item["image"], "rb").read(2) == b"\xff\xd8" for item in found)
