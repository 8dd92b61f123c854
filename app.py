"""Gradio app: upload a photo or paste a URL, see what it is and the most similar catalog products.

python app.py [--index DIR] [--weights PATH] [--share] [--host H] [--port P]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import gradio as gr
from gradio.data_classes import FileData

from recommender.cli import run_cli
from recommender.runtime import configure_runtime
from recommender.serve.service import Profile, Service
from recommender.serve.startup import open_index
from recommender.serve.ui import article_label, details_markdown, file_path, gallery, guarded, result_choices, served
from recommender.serve.url_fetch import URLFetcher
from recommender.vocabulary import ALL, TITLES

ROOT = Path(__file__).resolve().parent
SAMPLE = ROOT / "data" / "sample"
EXAMPLE_IDS = (10009, 10138, 10156, 10205, 11241, 11496, 14908)


def build_app(service: Service, examples: list[str] | None = None) -> gr.Blocks:
    """The layout and its wiring; every function it calls lives in recommender/."""
    with gr.Blocks(title="Fashion look-alike finder") as demo:
        gr.Markdown(
            "# Fashion look-alike finder\nUpload a photo of a clothing item or accessory, or paste an image URL: "
            "see what it is and the most visually similar products from the catalog."
        )
        status = gr.Markdown()
        profile = gr.State(Profile())
        shown = gr.State([])  # the results on screen, for "more like this" and likes
        with gr.Row():
            gender = gr.Dropdown([ALL], value=ALL, label=TITLES["gender"])
            master = gr.Dropdown([ALL], value=ALL, label=TITLES["masterCategory"])
            sub = gr.Dropdown([ALL], value=ALL, label=TITLES["subCategory"])
            article = gr.Dropdown([ALL], value=ALL, label=TITLES["articleType"])
            k = gr.Slider(1, 50, value=12, step=1, label="Results (k)")
        with gr.Row():
            with gr.Column(scale=2):
                with gr.Tabs():
                    with gr.Tab("Upload"):
                        image = gr.Image(
                            type="filepath", sources=["upload", "clipboard", "webcam"], label="Photo", height=300
                        )
                        search_btn = gr.Button("Find similar", variant="primary")
                        if examples:
                            gr.Examples(examples, inputs=image, label="Try a catalog photo")
                    with gr.Tab("Image URL"):
                        url = gr.Textbox(label="Image URL", placeholder="https://…/photo.jpg")
                        url_btn = gr.Button("Fetch and find similar", variant="primary")
                    with gr.Tab("Browse"):
                        page = gr.Number(1, precision=0, minimum=1, label="Page")
                        browse_btn = gr.Button("Show catalog", variant="primary")
                        total = gr.Markdown()
                label = gr.Label(num_top_classes=3, label=TITLES["articleType"])
                details = gr.Markdown()
            with gr.Column(scale=3):
                results = gr.Gallery(
                    label="Most similar (select one for more like it)",
                    columns=6,
                    height=440,
                    object_fit="contain",
                    allow_preview=False,
                )
                with gr.Accordion("Refine with likes", open=False):
                    likes = gr.CheckboxGroup(label="I like these", choices=[])
                    dislikes = gr.CheckboxGroup(label="Not these", choices=[])
                    with gr.Row():
                        refine_btn = gr.Button("Refine results")
                        reset_btn = gr.Button("Reset likes")

        filter_inputs = [k, gender, master, article, sub]
        shown_outputs = [results, shown, likes, dislikes]

        def show(payload: dict) -> tuple:
            rs = payload["results"]
            if not rs:
                gr.Warning("No catalog item matches these filters; choose 'All' for some of them.")
            choices = result_choices(rs)
            return gallery(rs), rs, gr.update(choices=choices, value=[]), gr.update(choices=choices, value=[])

        def filter_values(gender_: str, master_: str, article_: str, sub_: str) -> dict:
            return {"gender": gender_, "master_category": master_, "article_type": article_, "sub_category": sub_}

        @guarded
        def on_image(image_, k_, *f):
            payload, vector = service.recommend(image_, k_, **filter_values(*f))
            c = payload["classification"]
            return (article_label(c), details_markdown(c), Profile(query=vector), *show(payload))

        @guarded
        def on_url(url_, k_, *f):
            return on_image(service.fetch_url(url_), k_, *f)

        @guarded
        def on_browse(page_, k_, *f):
            payload = service.browse(page_ or 1, k_, **filter_values(*f))
            return (f"{payload['total']} products match.", *show(payload))

        @guarded
        def on_select(evt: gr.SelectData, shown_, k_, *f):
            item = shown_[evt.index]
            payload = service.similar_item(item["id"], k_, **filter_values(*f))
            return Profile(query=service.item_vector(item["id"])), *show(payload)

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

        classify_outputs = [label, details, profile, *shown_outputs]
        search_btn.click(on_image, [image, *filter_inputs], classify_outputs, api_name="ui_search_image")
        image.upload(on_image, [image, *filter_inputs], classify_outputs, api_name="ui_search_upload")
        url_btn.click(on_url, [url, *filter_inputs], classify_outputs, api_name="ui_search_url")
        url.submit(on_url, [url, *filter_inputs], classify_outputs, api_name="ui_search_url_submit")
        browse_btn.click(on_browse, [page, *filter_inputs], [total, *shown_outputs], api_name="ui_browse")
        results.select(on_select, [shown, *filter_inputs], [profile, *shown_outputs], api_name="ui_more_like_this")
        refine_btn.click(on_refine, [profile, likes, dislikes, *filter_inputs], shown_outputs, api_name="ui_refine")
        reset_btn.click(on_reset, [profile], [profile, likes, dislikes], api_name="ui_reset")
        master.change(on_master, [master], [sub, article], api_name="ui_filters_category")
        sub.change(on_sub, [master, sub], [article], api_name="ui_filters_subcategory")
        demo.load(on_load, None, [status, gender, master, sub, article], api_name="ui_load")

        # --- JSON endpoints: the contract for gradio_client users (argument order is fixed; new
        # arguments only ever come last, with defaults, so existing clients keep working) ----------
        def recommend_image(
            image: FileData,
            k: int = 12,
            gender: str = ALL,
            master_category: str = ALL,
            article_type: str = ALL,
            sub_category: str = ALL,
        ) -> dict:
            """Classification and the k most similar catalog items for a photo.

            Args:
                image: the photo (JPEG, PNG, WebP or GIF).
                k: how many results, 1 to 100.
                gender: only items of this gender ("All" for any).
                master_category: only items of this category, e.g. "Apparel" ("All" for any).
                article_type: only items of this article type, e.g. "Tshirts" ("All" for any).
                sub_category: only items of this sub-category, e.g. "Topwear" ("All" for any).
            """
            return served(
                service.recommend(
                    file_path(image),
                    k,
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
        ) -> dict:
            """Like recommend_image, for a public http(s) image URL fetched by the server."""
            return served(
                service.recommend(
                    service.fetch_url(url),
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
            """Per attribute, the top-3 labels with confidences."""
            return service.classify(file_path(image))

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

        for endpoint in (recommend_image, recommend_url, similar_item, classify, browse):
            gr.api(guarded(endpoint), api_name=endpoint.__name__)
    return demo


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path(env("RECOMMENDER_INDEX", ROOT / "artifacts" / "index")))
    parser.add_argument("--weights", default=env("RECOMMENDER_WEIGHTS"), help="ResNet50 weights file; default: the Hub")
    parser.add_argument("--share", action="store_true", default=env("RECOMMENDER_SHARE", "") == "1", help="public link")
    parser.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")))
    args = parser.parse_args(argv)
    configure_runtime()

    # Test/load runs only: exact non-public addresses (e.g. 127.0.0.1) the URL fetcher may reach.
    allowed = frozenset(a for a in env("RECOMMENDER_TEST_ALLOW_ADDRESSES", "").split(",") if a)
    service = Service(URLFetcher(allow_addresses=allowed))
    repo = env("RECOMMENDER_INDEX_REPO")  # a Hub dataset repo holding a built artifacts directory

    if run_cli(lambda: open_index(service, args.index, SAMPLE, args.weights, repo)) is None:
        return 2
    examples = [str(SAMPLE / "images" / f"{i}.jpg") for i in EXAMPLE_IDS if (SAMPLE / "images" / f"{i}.jpg").is_file()]
    demo = build_app(service, examples)
    demo.queue(default_concurrency_limit=8).launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        allowed_paths=[str(args.index.resolve() / "thumbnails"), str(SAMPLE)],
    )
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
