"""The page, assembled from its rooms: a title, the catalog's status, the filter bar, the Search and Explore
tabs, and the JSON endpoints."""

from __future__ import annotations

import gradio as gr

from ..service import Service
from . import endpoints
from .explore import build_explore
from .filters import FilterBar
from .guards import GuardedBlocks
from .launch import DELETE_CACHE
from .present import EDITOR_SIDE
from .search import build_search
from .status import CatalogStatus


def build_app(service: Service, examples: list[str] | None = None, canvas_side: int | None = EDITOR_SIDE) -> gr.Blocks:
    """The page: a title, the catalog's status, the filter bar, the Search and Explore tabs, and the JSON
    endpoints. `canvas_side`: the photo editors' (search.photo_editor)."""
    with GuardedBlocks(title="Fashion look-alike finder", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(
            "# Fashion look-alike finder\nUpload a photo of a clothing item or accessory, paste an image URL or "
            "describe what you want in words: see what it is and the most similar products from the catalog."
        )
        status = CatalogStatus.build()
        bar = FilterBar.build()
        with gr.Tabs():
            with gr.Tab("Search", id="search") as search_tab:
                results = build_search(service, bar, examples, canvas_side)
            with gr.Tab("Explore", id="explore") as explore_tab:
                build_explore(service, bar, results, explore_tab, search_tab)
        bar.wire(service)
        status.wire(service, demo, bar)
        endpoints.register(service)
    return demo
