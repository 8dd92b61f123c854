"""The Search tab: a photo (uploaded or by URL, croppable), words or the catalog's pages on the left; what
the item is and the most similar products on the right, refined by likes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from ...vocabulary import ALL, TITLES
from ..service import Profile, Service
from .filters import FilterBar
from .guards import guarded, wire
from .present import (
    SHARED,
    SharedAnswers,
    article_label,
    details_markdown,
    edited_photo,
    for_editor,
    gallery,
    photo_reference,
    pixels_key,
    result_choices,
    summary_line,
)

EXAMPLE_WORDS = ("navy polo for men", "red heels", "women's black purse", "white sneakers", "grey hoodie", "shades")
GALLERY_LABEL = "Most similar (select one for more like it)"
WORDS_HINT = "Optional: change what you see, e.g. “in black”, “for women”, “without laces”"
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


@dataclass
class Results:
    """The gallery and the session state it feeds: the results on screen (for "more like this" and likes),
    the like boxes and the shopper's profile (the query that refining starts from)."""

    gallery: gr.Gallery
    shown: gr.State
    likes: gr.CheckboxGroup
    dislikes: gr.CheckboxGroup
    profile: gr.State

    @property
    def outputs(self) -> list:
        return [self.gallery, self.shown, self.likes, self.dislikes]

    @staticmethod
    def show(payload: dict, reference: dict | None = None, of: str = "") -> tuple:
        """The results as the gallery (captions say what each shares with `reference`, the attributes of
        `of`: the photo, the words, the picked item), state and like boxes."""
        rs = payload["results"]
        if not rs:
            gr.Warning("No catalog item matches these filters; choose 'All' for some of them.")
        choices = result_choices(rs)
        label = f"Most similar to {of} (select one for more like it)" if of else GALLERY_LABEL
        items = gr.update(value=gallery(rs, reference), label=label)
        return items, rs, gr.update(choices=choices, value=[]), gr.update(choices=choices, value=[])


def build_search(service: Service, bar: FilterBar, examples: list[str] | None, canvas_side: int | None) -> Results:
    """The Search tab's body and its events (inside `with gr.Tab(...)`); returns its results, which the
    Explore tab's map also fills."""
    photo_answers = SharedAnswers()
    profile = gr.State(Profile())
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Tabs():
                with gr.Tab("Upload") as upload_tab:
                    image = photo_editor("Photo", ["upload", "clipboard", "webcam"], canvas_side)
                    image_words = gr.Textbox(label="Words", placeholder=WORDS_HINT, max_length=2000)
                    search_btn = gr.Button("Find similar", variant="primary")
                with gr.Tab("Image URL"):
                    url = gr.Textbox(label="Image URL", placeholder="https://…/photo.jpg")
                    url_btn = gr.Button("Fetch and find similar", variant="primary")
                    url_image = photo_editor("The fetched photo", [], canvas_side)
                    url_words = gr.Textbox(label="Words", placeholder=WORDS_HINT, max_length=2000)
                with gr.Tab("Describe"):
                    words = gr.Textbox(
                        label="What are you looking for?", placeholder="e.g. navy polo for men", max_length=2000
                    )
                    words_btn = gr.Button("Search", variant="primary")
                    gr.Examples([[w] for w in EXAMPLE_WORDS], inputs=words, label="Try", api_name="ui_example_words")
                with gr.Tab("Browse"):
                    page = gr.Number(1, precision=0, minimum=1, label="Page")
                    browse_btn = gr.Button("Show catalog", variant="primary")
                    total = gr.Markdown()
            label = gr.Label(num_top_classes=3, label=TITLES["articleType"])
            details = gr.Markdown()
        with gr.Column(scale=3):
            # What it is, where the eye lands first (the full table stays on the left): on a laptop
            # screen the left column's end is below the fold.
            summary = gr.Markdown(elem_id="summary")
            found = gr.Gallery(label=GALLERY_LABEL, columns=4, height=620, object_fit="contain", allow_preview=False)
            with gr.Accordion("Refine with likes", open=False):
                likes = gr.CheckboxGroup(label="I like these", choices=[])
                dislikes = gr.CheckboxGroup(label="Not these", choices=[])
                with gr.Row():
                    refine_btn = gr.Button("Refine results")
                    reset_btn = gr.Button("Reset likes")
    results = Results(found, gr.State([]), likes, dislikes, profile)
    show = results.show

    def answer_photo(photo_, words_, k_, filters_: dict[str, str]) -> tuple[dict, np.ndarray]:
        """The photo as the editor holds it, searched: cropped (before the one image loader) if cropped. The
        events one upload fires share one search."""
        image_ = service.load_image(edited_photo(photo_))
        key = (pixels_key(image_), k_, words_, tuple(filters_.items()))
        return photo_answers.get(key, lambda: service.recommend(image_, k_, words_, **filters_))

    @guarded
    def on_image(photo_, words_, k_, *f):
        payload, vector = answer_photo(photo_, words_, k_, bar.values(f))
        c = payload["classification"]
        details_ = details_markdown(c, payload.get("understood"))
        reference = photo_reference(c, service.asked(words_))
        label_ = gr.update(value=article_label(c), visible=True)
        return (summary_line(c), label_, details_, Profile(query=vector), *show(payload, reference, "your photo"))

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
        payload, vector = service.recommend_text(words_, k_, **bar.values(f))
        asked = details_markdown({}, payload["understood"])  # above the results, as a photo's summary is
        no_label = gr.update(value=None, visible=False)  # words have no photo to classify
        return (asked, no_label, "", Profile(query=vector), *show(payload, service.asked(words_), "your words"))

    @guarded
    def on_browse(page_, k_, *f):
        payload = service.browse(page_ or 1, k_, **bar.values(f))
        return "", f"{payload['total']} products match.", *show(payload)  # no query: no summary above

    @guarded
    def on_select(evt: gr.SelectData, shown_, k_, *f):
        item = shown_[evt.index]
        payload = service.similar_item(item["id"], k_, **bar.values(f))
        reference = {column: item[column] for column, _ in SHARED}
        return Profile(query=service.item_vector(item["id"])), *show(payload, reference, "the one you picked")

    @guarded
    def on_refine(profile_: Profile, liked, disliked, k_, *f):
        return show(service.refine(profile_, liked or [], disliked or [], k_, **bar.values(f)))

    def on_reset(profile_: Profile):
        return Profile(query=profile_.query), gr.update(value=[]), gr.update(value=[])

    shown_outputs = results.outputs
    classify_outputs = [summary, label, details, profile, *shown_outputs]
    image_inputs, url_inputs = [image, image_words, *bar.inputs], [url_image, url_words, *bar.inputs]
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
    wire(words_btn.click, on_words, [words, *bar.inputs], classify_outputs, "search_words")
    wire(words.submit, on_words, [words, *bar.inputs], classify_outputs, "search_words_submit")
    wire(browse_btn.click, on_browse, [page, *bar.inputs], [summary, total, *shown_outputs], "browse")
    wire(results.gallery.select, on_select, [results.shown, *bar.inputs], [profile, *shown_outputs], "more_like_this")
    wire(refine_btn.click, on_refine, [profile, likes, dislikes, *bar.inputs], shown_outputs, "refine")
    wire(reset_btn.click, on_reset, [profile], [profile, likes, dislikes], "reset")

    @guarded
    def on_example(photo_):
        """A catalog example's answer with the page's defaults, computed at its first click by any visitor
        and kept for every later one (its change event then searches again with the visitor's filters)."""
        payload, _ = answer_photo(photo_, "", bar.k.value, {name: ALL for name in bar.dropdowns})
        c = payload["classification"]
        found_ = gallery(payload["results"], photo_reference(c))
        return summary_line(c), article_label(c), details_markdown(c), found_

    if examples:
        with upload_tab:
            gr.Examples(
                examples,
                inputs=image,
                outputs=[summary, label, details, found],
                fn=on_example,
                cache_examples=True,
                cache_mode="lazy",
                label="Try a catalog photo",
                api_name="ui_example_photo",
            )
    return results


def forget_cached_examples() -> None:
    """Make every example photo search again at its next click (after the app swapped its index): Gradio's
    lazy cache answers from its indices file, written as each example is first answered."""
    from gradio.utils import get_cache_folder

    for indices in Path(get_cache_folder()).rglob("indices.csv"):
        indices.unlink(missing_ok=True)
