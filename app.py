"""Gradio app: upload a photo, paste a URL or describe it in words; see what it is and the most similar
catalog products.

python app.py [--index DIR] [--weights PATH] [--text-model DIR] [--precision auto|fp32|bf16|int8|ort-int8] [--share]
              [--host H] [--port P] [--no-mcp]

The JSON endpoints are also MCP tools (streamable HTTP at /gradio_api/mcp/) unless --no-mcp.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

import gradio as gr
import pandas as pd
from gradio.data_classes import FileData
from starlette.middleware import Middleware

from recommender.build.starter import build_starter_index
from recommender.cli import add_model_options, add_precision_option, run_cli
from recommender.runtime import configure_runtime
from recommender.serve.service import MAP_COLOURS, Profile, Service
from recommender.serve.startup import open_index
from recommender.serve.ui import (
    EDITOR_SIDE,
    SHARED,
    BodyLimit,
    GuardedBlocks,
    SharedAnswers,
    answer_busy_politely,
    article_label,
    bound_uploads,
    details_markdown,
    edited_photo,
    for_editor,
    gallery,
    guarded,
    image_argument,
    photo_reference,
    pixels_key,
    result_choices,
    served,
)
from recommender.serve.url_fetch import URLFetcher
from recommender.settings import Settings
from recommender.vocabulary import ALL, INSIGHT_COLUMNS, TITLES

ROOT = Path(__file__).resolve().parent
SAMPLE = ROOT / "data" / "sample"
EXAMPLE_IDS = (10009, 10138, 10156, 10205, 11241, 11496, 14908)
EXAMPLE_WORDS = ("navy polo for men", "red heels", "women's black purse", "white sneakers", "grey hoodie", "shades")
# Gallery captions whole, on as many lines as they need, instead of one line cut to "Puma Men …".
CSS = (
    ".caption-label { white-space: normal !important; max-width: 100% !important; font-size: 11px !important;"
    " line-height: 1.2; opacity: 0.92 !important; }"
)
GALLERY_LABEL = "Most similar (select one for more like it)"
WORDS_HINT = "Optional: change what you see, e.g. “in black”, “for women”, “without laces”"
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
CROP_HINT = (
    "More than one item in the photo? Crop it to one: the editor's image tool, then its crop tool, then *Confirm crop*."
)


def photo_editor(label: str, sources: list[str], canvas_side: int | None) -> gr.ImageEditor:
    """A photo the shopper can crop to one item before searching (with the hint under it). Gradio shows the
    editor's toolbar, and with it the crop tool, only with a brush: a white one paints out what is not wanted.
    `canvas_side`: the browser scales every photo to fit a canvas of that side, centred on a transparent
    margin (cut again by the image loader); None: the canvas takes each photo's own size, and a phone's
    12-megapixel photo is composited and uploaded whole."""
    canvas = {"canvas_size": (canvas_side, canvas_side), "fixed_canvas": True} if canvas_side else {}
    editor = gr.ImageEditor(
        type="filepath",
        sources=sources,
        label=label,
        height=360,
        transforms=("crop",),
        brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
        layers=False,
        format="png",
        interactive=True,
        **canvas,
    )
    gr.Markdown(CROP_HINT)
    return editor


def build_app(service: Service, examples: list[str] | None = None, canvas_side: int | None = EDITOR_SIDE) -> gr.Blocks:
    """The layout and its wiring; every function it calls lives in recommender/. `canvas_side`: the photo
    editors' (`photo_editor`)."""
    photo_answers = SharedAnswers()
    with GuardedBlocks(title="Fashion look-alike finder", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(
            "# Fashion look-alike finder\nUpload a photo of a clothing item or accessory, paste an image URL or "
            "describe what you want in words: see what it is and the most similar products from the catalog."
        )
        status = gr.Markdown()
        profile = gr.State(Profile())
        shown = gr.State([])  # the results on screen, for "more like this" and likes
        exploring = gr.State(False)  # the Explore tab is open: only then do filter changes redraw its charts
        with gr.Row():
            gender = gr.Dropdown([ALL], value=ALL, label=TITLES["gender"])
            master = gr.Dropdown([ALL], value=ALL, label=TITLES["masterCategory"])
            sub = gr.Dropdown([ALL], value=ALL, label=TITLES["subCategory"])
            article = gr.Dropdown([ALL], value=ALL, label=TITLES["articleType"])
            k = gr.Slider(1, 50, value=12, step=1, label="Results (k)")
        with gr.Tabs():
            with gr.Tab("Search", id="search") as search_tab:
                with gr.Row():
                    with gr.Column(scale=2):
                        with gr.Tabs():
                            with gr.Tab("Upload"):
                                image = photo_editor("Photo", ["upload", "clipboard", "webcam"], canvas_side)
                                image_words = gr.Textbox(label="Words", placeholder=WORDS_HINT, max_length=2000)
                                search_btn = gr.Button("Find similar", variant="primary")
                                if examples:
                                    gr.Examples(examples, inputs=image, label="Try a catalog photo")
                            with gr.Tab("Image URL"):
                                url = gr.Textbox(label="Image URL", placeholder="https://…/photo.jpg")
                                url_btn = gr.Button("Fetch and find similar", variant="primary")
                                url_image = photo_editor("The fetched photo", [], canvas_side)
                                url_words = gr.Textbox(label="Words", placeholder=WORDS_HINT, max_length=2000)
                            with gr.Tab("Describe"):
                                words = gr.Textbox(
                                    label="What are you looking for?",
                                    placeholder="e.g. navy polo for men",
                                    max_length=2000,
                                )
                                words_btn = gr.Button("Search", variant="primary")
                                gr.Examples([[w] for w in EXAMPLE_WORDS], inputs=words, label="Try")
                            with gr.Tab("Browse"):
                                page = gr.Number(1, precision=0, minimum=1, label="Page")
                                browse_btn = gr.Button("Show catalog", variant="primary")
                                total = gr.Markdown()
                        label = gr.Label(num_top_classes=3, label=TITLES["articleType"])
                        details = gr.Markdown()
                    with gr.Column(scale=3):
                        results = gr.Gallery(
                            label=GALLERY_LABEL,
                            columns=4,
                            height=620,
                            object_fit="contain",
                            allow_preview=False,
                        )
                        with gr.Accordion("Refine with likes", open=False):
                            likes = gr.CheckboxGroup(label="I like these", choices=[])
                            dislikes = gr.CheckboxGroup(label="Not these", choices=[])
                            with gr.Row():
                                refine_btn = gr.Button("Refine results")
                                reset_btn = gr.Button("Reset likes")

            with gr.Tab("Explore", id="explore") as explore_tab:
                gr.Markdown(
                    "The catalog as the filters above narrow it, and how well the app reads each article type "
                    "(the share of held-out products whose type its classifier names right)."
                )
                charts = {}
                for pair in (INSIGHT_COLUMNS[i : i + 2] for i in range(0, len(INSIGHT_COLUMNS), 2)):
                    with gr.Row():
                        for column in pair:
                            charts[column] = gr.BarPlot(
                                x="value",
                                y="products",
                                x_title=TITLES[column],
                                y_lim=[0, None],
                                title=f"Products by {TITLES[column].lower()}",
                                sort="-y",
                                x_label_angle=-45,
                                height=320,
                                show_label=False,
                            )
                accuracy_chart = gr.BarPlot(
                    x="article type",
                    y="held-out accuracy",
                    title="How well the app reads each article type (worst first; types with 5+ held-out products)",
                    sort="y",
                    x_label_angle=-45,
                    y_lim=[0, 1],
                    height=360,
                    show_label=False,
                )
                with gr.Row():
                    gr.Markdown(
                        "**The catalog's map**: every product placed by t-SNE so that look-alikes lie close "
                        "(a spread of up to 3,000 of the filtered ones); your last search ▶ and its results ● "
                        "are marked. Hover a point for the product; drag across the map to put that stretch's "
                        "products in the Search tab's gallery (select one there for more like it)."
                    )
                    colour_by = gr.Dropdown(
                        [(TITLES[c], c) for c in MAP_COLOURS], value="articleType", label="Colour by", scale=0
                    )
                catalog_map = gr.ScatterPlot(
                    x="x",
                    y="y",
                    color="group",
                    tooltip=["name", "group"],
                    x_axis_labels_visible="hidden",
                    height=600,
                    show_label=False,
                )

        filter_inputs = [k, gender, master, article, sub]
        shown_outputs = [results, shown, likes, dislikes]

        def show(payload: dict, reference: dict | None = None, of: str = "") -> tuple:
            """The results as the gallery (captions say what each shares with `reference`, the attributes
            of `of`: the photo, the words, the picked item), state and like boxes."""
            rs = payload["results"]
            if not rs:
                gr.Warning("No catalog item matches these filters; choose 'All' for some of them.")
            choices = result_choices(rs)
            label = f"Most similar to {of} (select one for more like it)" if of else GALLERY_LABEL
            items = gr.update(value=gallery(rs, reference), label=label)
            return items, rs, gr.update(choices=choices, value=[]), gr.update(choices=choices, value=[])

        def filter_values(gender_: str, master_: str, article_: str, sub_: str) -> dict:
            return {"gender": gender_, "master_category": master_, "article_type": article_, "sub_category": sub_}

        @guarded
        def on_image(photo_, words_, k_, *f):
            """Search the photo as the editor holds it: cropped (before the one image loader) if cropped.
            The events one upload fires share one search."""
            image, filters_ = service.load_image(edited_photo(photo_)), filter_values(*f)
            key = (pixels_key(image), k_, words_, tuple(filters_.items()))
            payload, vector = photo_answers.get(key, lambda: service.recommend(image, k_, words_, **filters_))
            c = payload["classification"]
            details_ = details_markdown(c, payload.get("understood"))
            reference = photo_reference(c, service.asked(words_))
            label_ = gr.update(value=article_label(c), visible=True)
            return (label_, details_, Profile(query=vector), *show(payload, reference, "your photo"))

        def on_photo_changed(photo_, words_, k_, *f):
            """A new, cropped or painted photo searches at once; a cleared editor changes nothing."""
            if edited_photo(photo_) is None:
                return tuple(gr.skip() for _ in classify_outputs)
            return on_image(photo_, words_, k_, *f)

        @guarded
        def on_url(url_):
            """Fetch the URL's photo into its editor, to be searched next (and again after each crop)."""
            return for_editor(service.load_image(service.fetch_url(url_)))

        @guarded
        def on_words(words_, k_, *f):
            payload, vector = service.recommend_text(words_, k_, **filter_values(*f))
            details_ = details_markdown({}, payload["understood"])
            no_label = gr.update(value=None, visible=False)  # words have no photo to classify
            return (no_label, details_, Profile(query=vector), *show(payload, service.asked(words_), "your words"))

        @guarded
        def on_browse(page_, k_, *f):
            payload = service.browse(page_ or 1, k_, **filter_values(*f))
            return (f"{payload['total']} products match.", *show(payload))

        @guarded
        def on_select(evt: gr.SelectData, shown_, k_, *f):
            item = shown_[evt.index]
            payload = service.similar_item(item["id"], k_, **filter_values(*f))
            reference = {column: item[column] for column, _ in SHARED}
            return Profile(query=service.item_vector(item["id"])), *show(payload, reference, "the one you picked")

        @guarded
        def on_refine(profile_: Profile, liked, disliked, k_, *f):
            return show(service.refine(profile_, liked or [], disliked or [], k_, **filter_values(*f)))

        def on_reset(profile_: Profile):
            return Profile(query=profile_.query), gr.update(value=[]), gr.update(value=[])

        @guarded
        def on_master(master_):
            choices = service.filter_choices(master_)
            return gr.update(choices=[ALL] + choices["subCategory"], value=ALL), gr.update(
                choices=[ALL] + choices["articleType"], value=ALL
            )

        @guarded
        def on_sub(master_, sub_):
            return gr.update(choices=[ALL] + service.filter_choices(master_, sub_)["articleType"], value=ALL)

        @guarded
        def on_explore(gender_, master_, article_, sub_, colour_by_, profile_: Profile, shown_):
            where = filter_values(gender_, master_, article_, sub_)
            points = service.map_points(colour_by_, profile_.query, [r["id"] for r in shown_ or []], **where)
            data = service.insights(**where)
            counts = [pd.DataFrame(data[c], columns=["value", "products"]) for c in INSIGHT_COLUMNS]
            accuracy = pd.DataFrame(
                [(c, a, n) for c, a, n in service.head_accuracy("articleType") if n >= 5],
                columns=["article type", "held-out accuracy", "held-out products"],
            )
            return *counts, accuracy, pd.DataFrame(points, columns=["x", "y", "group", "name"])

        def on_filters_explore(exploring_: bool, *explore_values):
            if not exploring_:  # the charts are redrawn when the tab opens; no work while searching
                return tuple(gr.skip() for _ in explore_outputs)
            return on_explore(*explore_values)

        @guarded
        def on_map_select(evt: gr.SelectData, k_, *f):
            payload = service.map_band(evt.index, k_, **filter_values(*f))
            gr.Info(
                f"{payload['total']} products in that stretch of the map; the nearest to its middle are under Search."
            )
            return show(payload, None, "")

        def on_load():
            if not service.wait_ready(0):
                return gr.update(value=f"⏳ {service.status}"), *(gr.update() for _ in range(4))
            choices = service.filter_choices()
            return (
                f"Catalog: **{service.catalog_size():,}** products.",
                *(
                    gr.update(choices=[ALL] + choices[c], value=ALL)
                    for c in ("gender", "masterCategory", "subCategory", "articleType")
                ),
            )

        def wire(event: Callable, fn: Callable, inputs: list, outputs: list, name: str):
            """A UI event: callable by the page, but neither in the API docs nor an MCP tool."""
            return event(fn, inputs, outputs, api_name=f"ui_{name}", api_visibility="undocumented")

        classify_outputs = [label, details, profile, *shown_outputs]
        image_inputs, url_inputs = [image, image_words, *filter_inputs], [url_image, url_words, *filter_inputs]
        wire(search_btn.click, on_image, image_inputs, classify_outputs, "search_image")
        # An upload searches through its own event too: headless Chromium showed the editor's change event
        # missing now and then right after a page load; a crop fires only the change event. With a fixed
        # canvas the upload event can come before the editor holds a photo: skipped, as an empty change is.
        wire(image.upload, on_photo_changed, image_inputs, classify_outputs, "search_upload")
        wire(image.change, on_photo_changed, image_inputs, classify_outputs, "search_photo")
        wire(image_words.submit, on_image, image_inputs, classify_outputs, "search_image_words")
        # A photo set by the server does not fire the editor's change event; the shopper's crops of it do.
        for name, event in (("fetch_url", url_btn.click), ("fetch_url_submit", url.submit)):
            fetched = wire(event, on_url, [url], [url_image], name)
            wire(fetched.success, on_image, url_inputs, classify_outputs, f"search_{name}")
        wire(url_image.change, on_photo_changed, url_inputs, classify_outputs, "search_url_photo")
        wire(url_words.submit, on_image, url_inputs, classify_outputs, "search_url_words")
        wire(words_btn.click, on_words, [words, *filter_inputs], classify_outputs, "search_words")
        wire(words.submit, on_words, [words, *filter_inputs], classify_outputs, "search_words_submit")
        wire(browse_btn.click, on_browse, [page, *filter_inputs], [total, *shown_outputs], "browse")
        wire(results.select, on_select, [shown, *filter_inputs], [profile, *shown_outputs], "more_like_this")
        wire(refine_btn.click, on_refine, [profile, likes, dislikes, *filter_inputs], shown_outputs, "refine")
        wire(reset_btn.click, on_reset, [profile], [profile, likes, dislikes], "reset")
        wire(master.change, on_master, [master], [sub, article], "filters_category")
        wire(sub.change, on_sub, [master, sub], [article], "filters_subcategory")
        explore_inputs = [gender, master, article, sub, colour_by, profile, shown]
        explore_outputs = [*(charts[c] for c in INSIGHT_COLUMNS), accuracy_chart, catalog_map]
        wire(colour_by.change, on_explore, explore_inputs, explore_outputs, "explore_map_colour")
        wire(catalog_map.select, on_map_select, filter_inputs, shown_outputs, "map_select")
        wire(explore_tab.select, on_explore, explore_inputs, explore_outputs, "explore")
        wire(explore_tab.select, lambda: True, [], [exploring], "explore_open")
        wire(search_tab.select, lambda: False, [], [exploring], "explore_closed")
        for name, dropdown in (("gender", gender), ("category", master), ("sub_category", sub), ("type", article)):
            wire(dropdown.change, on_filters_explore, [exploring, *explore_inputs], explore_outputs, f"explore_{name}")
        wire(demo.load, on_load, [], [status, gender, master, sub, article], "load")

        # --- JSON endpoints: the contract for gradio_client users and MCP clients (argument order is fixed; new
        # arguments only ever come last, with defaults, so existing clients keep working) ----------
        def recommend_image(
            image: FileData,
            k: int = 12,
            gender: str = ALL,
            master_category: str = ALL,
            article_type: str = ALL,
            sub_category: str = ALL,
            text: str = "",
        ) -> dict:
            """Classification and the k most similar catalog items for a photo, optionally changed by words.

            Args:
                image: the photo: an uploaded file (JPEG, PNG, WebP, GIF, AVIF or HEIC), an http(s) URL or a
                    catalog product id.
                k: how many results, 1 to 100.
                gender: only items of this gender ("All" for any).
                master_category: only items of this category, e.g. "Apparel" ("All" for any).
                article_type: only items of this article type, e.g. "Tshirts" ("All" for any).
                sub_category: only items of this sub-category, e.g. "Topwear" ("All" for any).
                text: optional words that change what is searched for, e.g. "in black" or "for women".
            """
            return served(
                service.recommend(
                    image_argument(image, service),
                    k,
                    text,
                    gender=gender,
                    master_category=master_category,
                    article_type=article_type,
                    sub_category=sub_category,
                )[0]
            )

        def recommend_url(
            url: str,
            k: int = 12,
            gender: str = ALL,
            master_category: str = ALL,
            article_type: str = ALL,
            sub_category: str = ALL,
            text: str = "",
        ) -> dict:
            """Like recommend_image, for a public http(s) image URL fetched by the server."""
            return served(
                service.recommend(
                    service.fetch_url(url),
                    k,
                    text,
                    gender=gender,
                    master_category=master_category,
                    article_type=article_type,
                    sub_category=sub_category,
                )[0]
            )

        def recommend_text(
            text: str,
            k: int = 12,
            gender: str = ALL,
            master_category: str = ALL,
            article_type: str = ALL,
            sub_category: str = ALL,
        ) -> dict:
            """The k catalog items that best fit a description in words, e.g. "navy polo for men".

            Args:
                text: what the shopper is looking for, in English.
                k: how many results, 1 to 100.
                gender: only items of this gender ("All" for any).
                master_category: only items of this category, e.g. "Apparel" ("All" for any).
                article_type: only items of this article type, e.g. "Tshirts" ("All" for any).
                sub_category: only items of this sub-category, e.g. "Topwear" ("All" for any).
            """
            return served(
                service.recommend_text(
                    text,
                    k,
                    gender=gender,
                    master_category=master_category,
                    article_type=article_type,
                    sub_category=sub_category,
                )[0]
            )

        def similar_item(
            item_id: int,
            k: int = 12,
            gender: str = ALL,
            master_category: str = ALL,
            article_type: str = ALL,
            sub_category: str = ALL,
        ) -> dict:
            """The k catalog items most similar to catalog item `item_id` (itself excluded)."""
            return served(
                service.similar_item(
                    item_id,
                    k,
                    gender=gender,
                    master_category=master_category,
                    article_type=article_type,
                    sub_category=sub_category,
                )
            )

        def classify(image: FileData) -> dict:
            """Per attribute, the top-3 labels with confidences.

            Args:
                image: the photo: an uploaded file (JPEG, PNG, WebP, GIF, AVIF or HEIC), an http(s) URL or a
                    catalog product id.
            """
            return service.classify(image_argument(image, service))

        def browse(
            gender: str = ALL,
            master_category: str = ALL,
            article_type: str = ALL,
            page: int = 1,
            page_size: int = 12,
            sub_category: str = ALL,
        ) -> dict:
            """The filtered catalog in id order, one page at a time, with the total count."""
            return served(
                service.browse(
                    page,
                    page_size,
                    gender=gender,
                    master_category=master_category,
                    article_type=article_type,
                    sub_category=sub_category,
                )
            )

        for endpoint in (recommend_image, recommend_url, recommend_text, similar_item, classify, browse):
            gr.api(guarded(endpoint), api_name=endpoint.__name__)
    return demo


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=settings.index or ROOT / "artifacts" / "index")
    add_model_options(parser)
    add_precision_option(parser, "the index's (int8 or ort-int8, or the fastest float one here)")
    parser.add_argument("--share", action="store_true", default=settings.share, help="public link")
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument(
        "--no-mcp", action="store_true", default=settings.no_mcp, help="do not serve the endpoints as MCP tools"
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

    service = Service(URLFetcher(allow_addresses=settings.test_allow_addresses))

    if (
        run_cli(
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
        is None
    ):
        return 2
    examples = [str(SAMPLE / "images" / f"{i}.jpg") for i in EXAMPLE_IDS if (SAMPLE / "images" / f"{i}.jpg").is_file()]
    launch(build_app(service, examples), args.index, args.host, args.port, args.share, not args.no_mcp)
    return 0


def launch(
    demo: gr.Blocks, index: Path, host: str, port: int | None, share: bool = False, mcp: bool = True, block: bool = True
) -> gr.Blocks:
    """Serve `demo` with the public link's bounds (the one launch the app and its tests share); `block`:
    False returns once it serves (tests)."""
    demo.queue(default_concurrency_limit=WORKERS, max_size=QUEUE_SIZE)
    answer_busy_politely(demo)
    bound_uploads(demo, UPLOADS_CAP)
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        allowed_paths=[str(index.resolve() / "thumbnails"), str(SAMPLE)],
        max_file_size=MAX_UPLOAD,
        app_kwargs={"middleware": [Middleware(BodyLimit, max_bytes=MAX_BODY, limits=BODY_LIMITS)]},
        mcp_server=mcp,
        css=CSS,
        prevent_thread_lock=not block,
        quiet=not block,
    )
    return demo


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
