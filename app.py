"""Gradio app: upload a photo or paste a URL, see what it is and the most similar catalog products.

    python app.py [--index DIR] [--weights PATH] [--share] [--host H] [--port P]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import gradio as gr
from gradio.data_classes import FileData

from recommender import Recommender, artifacts
from recommender.artifacts import download_from_hub
from recommender.cli import run_cli
from recommender.errors import ArtifactsError
from recommender.service import Profile, Service
from recommender.ui import (article_label, details_markdown, file_path, gallery, guarded, result_choices,
                            served)
from recommender.url_fetch import URLFetcher

ROOT = Path(__file__).resolve().parent
SAMPLE = ROOT / "data" / "sample"
EXAMPLE_IDS = (10009, 10138, 10156, 10205, 11241, 11496, 14908)
ALL = "All"


def build_app(service: Service, examples: list[str] | None = None) -> gr.Blocks:
    """The layout and its wiring; every function it calls lives in recommender/."""
    with gr.Blocks(title="Fashion look-alike finder") as demo:
        gr.Markdown("# Fashion look-alike finder\nUpload a photo of a clothing item or accessory, or paste an image URL: "
                    "see what it is and the most visually similar products from the catalog.")
        status = gr.Markdown()
        profile = gr.State(Profile())
        shown = gr.State([])  # the results on screen, for "more like this" and likes
        with gr.Row():
            gender = gr.Dropdown([ALL], value=ALL, label="Gender")
            master = gr.Dropdown([ALL], value=ALL, label="Category")
            sub = gr.Dropdown([ALL], value=ALL, label="Sub-category")
            article = gr.Dropdown([ALL], value=ALL, label="Article type")
            k = gr.Slider(1, 50, value=12, step=1, label="Results (k)")
        with gr.Row():
            with gr.Column(scale=2):
                with gr.Tabs():
                    with gr.Tab("Upload"):
                        image = gr.Image(type="filepath", sources=["upload", "clipboard", "webcam"], label="Photo", height=300)
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
                label = gr.Label(num_top_classes=3, label="Article type")
                details = gr.Markdown()
            with gr.Column(scale=3):
                results = gr.Gallery(label="Most similar (select one for more like it)", columns=6, height=440,
                                     object_fit="contain", allow_preview=False)
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
            return Profile(query=service.recommender.vector_of(item["id"])), *show(payload)

        @guarded
        def on_refine(profile_: Profile, liked, disliked, k_, *f):
            return show(service.refine(profile_, liked or [], disliked or [], k_, **filter_values(*f)))

        def on_reset(profile_: Profile):
            return Profile(query=profile_.query), gr.update(value=[]), gr.update(value=[])

        @guarded
        def on_master(master_):
            choices = service.filter_choices(master_)
            return gr.update(choices=[ALL] + choices["subCategory"], value=ALL), gr.update(choices=[ALL] + choices["articleType"], value=ALL)

        @guarded
        def on_sub(master_, sub_):
            return gr.update(choices=[ALL] + service.filter_choices(master_, sub_)["articleType"], value=ALL)

        def on_load():
            if not service.wait_ready(0):
                return gr.update(value=f"⏳ {service.status}"), *(gr.update() for _ in range(4))
            md = service.recommender.metadata
            choices = service.filter_choices()
            return (f"Catalog: **{len(md):,}** products.",
                    *(gr.update(choices=[ALL] + choices[c], value=ALL) for c in ("gender", "masterCategory", "subCategory", "articleType")))

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

        # --- JSON endpoints: the contract for gradio_client users (argument order is fixed) ---------
        def recommend_image(image: FileData, k: int = 12, gender: str = ALL, master_category: str = ALL,
                            article_type: str = ALL) -> dict:
            """Classification and the k most similar catalog items for a photo."""
            return served(service.recommend(file_path(image), k, gender=gender, master_category=master_category, article_type=article_type)[0])

        def recommend_url(url: str, k: int = 12, gender: str = ALL, master_category: str = ALL,
                          article_type: str = ALL) -> dict:
            """Like recommend_image, for a public http(s) image URL fetched by the server."""
            return served(service.recommend(service.fetch_url(url), k, gender=gender, master_category=master_category, article_type=article_type)[0])

        def similar_item(item_id: int, k: int = 12, gender: str = ALL, master_category: str = ALL,
                         article_type: str = ALL) -> dict:
            """The k catalog items most similar to catalog item `item_id` (itself excluded)."""
            return served(service.similar_item(item_id, k, gender=gender, master_category=master_category, article_type=article_type))

        def classify(image: FileData) -> dict:
            """Per attribute, the top-3 labels with confidences."""
            return service.classify(file_path(image))

        def browse(gender: str = ALL, master_category: str = ALL, article_type: str = ALL, page: int = 1,
                   page_size: int = 12) -> dict:
            """The filtered catalog in id order, one page at a time, with the total count."""
            return served(service.browse(page, page_size, gender=gender, master_category=master_category, article_type=article_type))

        for endpoint in (recommend_image, recommend_url, similar_item, classify, browse):
            gr.api(guarded(endpoint), api_name=endpoint.__name__)
    return demo


def starter_index(index_dir: Path, weights: str | None) -> Recommender:
    """Build the index from the bundled ~1,000-product sample (progress on the console)."""
    from recommender.catalog import CatalogSource
    from recommender.embedder import Embedder
    from recommender.pipeline import precompute

    embedder = Embedder(weights)
    print(f"Building a starter index at {index_dir} from {SAMPLE} ({embedder.precision}) …", flush=True)
    precompute(CatalogSource(str(SAMPLE)), index_dir, embedder)
    return Recommender.load(index_dir, embedder=embedder)


def built_from_sample(index_dir: Path) -> bool:
    """Whether the index at `index_dir` is a starter index: built from the bundled sample, so rebuilding it loses nothing."""
    try:  # not artifacts.read_manifest: it refuses other schema versions, one more case where rebuilding is right
        source = json.loads((index_dir / artifacts.MANIFEST).read_text())["source"]["source"]
        return Path(source).resolve() == SAMPLE.resolve()
    except (OSError, ValueError, KeyError, TypeError):
        return False


def open_index(service: Service, index_dir: Path, weights: str | None, repo: str | None = None) -> str:
    """Serve the index at `index_dir` (downloaded first from the Hub dataset `repo`, if given and absent):
    "serving". With no index there, or a starter index this version cannot read (built by an older one,
    or with other weights), the starter index is built in the background while the app starts: "building"."""
    if repo and not index_dir.exists():
        download_from_hub(repo, index_dir)
    if index_dir.exists():
        try:
            service.set_recommender(Recommender.load(index_dir, weights=weights))
            return "serving"
        except ArtifactsError as error:
            if not built_from_sample(index_dir):
                raise  # someone's own index must be sound: refuse to start rather than serve wrong results
            reason = str(error).split(";")[0]  # the sentence's advice (rebuild, pass --weights) is what happens here
            print(f"{reason}: it is the app's starter index, so the app rebuilds it.", flush=True)
    service.load_in_background(lambda: starter_index(index_dir, weights))
    return "building"


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path(env("RECOMMENDER_INDEX", ROOT / "artifacts" / "index")))
    parser.add_argument("--weights", default=env("RECOMMENDER_WEIGHTS"), help="ResNet50 weights file; default: the Hub")
    parser.add_argument("--share", action="store_true", default=env("RECOMMENDER_SHARE", "") == "1", help="public link")
    parser.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")))
    args = parser.parse_args(argv)

    # Test/load runs only: exact non-public addresses (e.g. 127.0.0.1) the URL fetcher may reach.
    allowed = frozenset(a for a in env("RECOMMENDER_TEST_ALLOW_ADDRESSES", "").split(",") if a)
    service = Service(URLFetcher(allow_addresses=allowed))
    repo = env("RECOMMENDER_INDEX_REPO")  # a Hub dataset repo holding a built artifacts directory

    if run_cli(lambda: open_index(service, args.index, args.weights, repo)) is None:
        return 2
    examples = [str(SAMPLE / "images" / f"{i}.jpg") for i in EXAMPLE_IDS if (SAMPLE / "images" / f"{i}.jpg").is_file()]
    demo = build_app(service, examples)
    demo.queue(default_concurrency_limit=8).launch(
        server_name=args.host, server_port=args.port, share=args.share,
        allowed_paths=[str(args.index.resolve() / "thumbnails"), str(SAMPLE)])
    return 0


# glibc malloc settings, read only at process start (hence the re-exec below). MALLOC_ARENA_MAX=2: each
# of Gradio's worker threads otherwise gets its own arena (RSS +413 MB over 2,000 requests with the
# default, +193 MB with 2 arenas, session 1). A fixed mmap threshold of 128 KiB: glibc otherwise raises it
# after every large free, so image buffers and activations land in the arenas and fragment them; with it
# RSS rose 48 MB after the 400-request warm-up instead of 194 (32 clients x 3,000 requests, peak 1,379
# MB instead of 1,646, same throughput; scripts/loadtest.py).
MALLOC_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}

if __name__ == "__main__":
    if any(name not in os.environ for name in MALLOC_ENV):
        os.environ.update({name: value for name, value in MALLOC_ENV.items() if name not in os.environ})
        os.execv(sys.executable, [sys.executable, *sys.argv])
    sys.exit(main())
