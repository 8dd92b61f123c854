"""The Explore tab: the filtered catalog's make-up, how well the app reads each article type, and the
catalog's map, on which a drag puts a stretch of products in the Search tab's gallery."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from ...vocabulary import INSIGHT_COLUMNS, TITLES
from ..service import MAP_COLOURS, Profile, Service
from .filters import FilterBar
from .guards import guarded, wire
from .search import Results


def build_explore(service: Service, bar: FilterBar, results: Results, tab: gr.Tab, search_tab: gr.Tab) -> None:
    """The Explore tab's body and its events (inside `with gr.Tab(...)` as `tab`). Its charts follow the
    filters only while it is open: no work while the shopper searches."""
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
        colour_by = gr.Dropdown([(TITLES[c], c) for c in MAP_COLOURS], value="articleType", label="Colour by", scale=0)
    catalog_map = gr.ScatterPlot(
        x="x",
        y="y",
        color="group",
        tooltip=["name", "group"],
        x_axis_labels_visible="hidden",
        height=600,
        show_label=False,
    )
    exploring = gr.State(False)  # the tab is open: only then do filter changes redraw its charts

    @guarded
    def on_explore(colour_by_, profile_: Profile, shown_, *f):
        where = bar.values(f)
        points = service.map_points(colour_by_, profile_.query, [r["id"] for r in shown_ or []], **where)
        data = service.insights(**where)
        counts = [pd.DataFrame(data[c], columns=["value", "products"]) for c in INSIGHT_COLUMNS]
        accuracy = pd.DataFrame(
            [(c, a, n) for c, a, n in service.head_accuracy("articleType") if n >= 5],
            columns=["article type", "held-out accuracy", "held-out products"],
        )
        return *counts, accuracy, pd.DataFrame(points, columns=["x", "y", "group", "name"])

    def on_filters(exploring_: bool, *explore_values):
        if not exploring_:  # the charts are redrawn when the tab opens
            return tuple(gr.skip() for _ in outputs)
        return on_explore(*explore_values)

    @guarded
    def on_map_select(evt: gr.SelectData, k_, *f):
        payload = service.map_band(evt.index, k_, **bar.values(f))
        gr.Info(f"{payload['total']} products in that stretch of the map; the nearest to its middle are under Search.")
        return results.show(payload, None, "")

    inputs = [colour_by, results.profile, results.shown, *bar.dropdowns.values()]
    outputs = [*(charts[c] for c in INSIGHT_COLUMNS), accuracy_chart, catalog_map]
    wire(colour_by.change, on_explore, inputs, outputs, "explore_map_colour")
    wire(catalog_map.select, on_map_select, bar.inputs, results.outputs, "map_select")
    wire(tab.select, on_explore, inputs, outputs, "explore")
    wire(tab.select, lambda: True, [], [exploring], "explore_open")
    wire(search_tab.select, lambda: False, [], [exploring], "explore_closed")
    for name, dropdown in bar.dropdowns.items():
        wire(dropdown.change, on_filters, [exploring, *inputs], outputs, f"explore_{name}")
