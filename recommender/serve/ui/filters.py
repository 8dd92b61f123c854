"""The filter bar above the tabs: a dropdown per vocabulary.API_FILTERS filter and the number of results.
Every search in the page reads it; its dropdowns cascade (a category narrows the sub-categories)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import gradio as gr

from ... import vocabulary
from ...vocabulary import ALL, FILTER_COLUMNS, TITLES
from ..service import Service
from .guards import guarded, wire


@dataclass
class FilterBar:
    k: gr.Slider
    dropdowns: dict[str, gr.Dropdown]  # by API name, in vocabulary.API_FILTERS order

    @classmethod
    def build(cls) -> FilterBar:
        with gr.Row():
            shown = sorted(vocabulary.API_FILTERS, key=lambda f: FILTER_COLUMNS.index(f.column))
            made = {f.name: gr.Dropdown([ALL], value=ALL, label=TITLES[f.column]) for f in shown}
            k = gr.Slider(1, 50, value=12, step=1, label="Results (k)")
        return cls(k, {f.name: made[f.name] for f in vocabulary.API_FILTERS})

    @property
    def inputs(self) -> list:
        """A search's inputs: k, then every filter (a handler takes them last, as `k, *filter_values`)."""
        return [self.k, *self.dropdowns.values()]

    def values(self, filter_values: Sequence[str]) -> dict[str, str]:
        """The dropdowns' values (as a handler receives them) by API name: the Service's keyword arguments."""
        return dict(zip(self.dropdowns, filter_values, strict=True))

    def choices(self, service: Service) -> tuple:
        """Every dropdown's update to the serving catalog's values (back to all)."""
        choices = service.filter_choices()
        return tuple(gr.update(choices=[ALL] + choices[f.column], value=ALL) for f in vocabulary.API_FILTERS)

    def wire(self, service: Service) -> None:
        """The cascade: a filter's change resets the ones it narrows and offers their choices within it."""
        dropdowns = list(self.dropdowns.values())
        for changed in vocabulary.API_FILTERS:
            narrowed = [f for f in vocabulary.API_FILTERS if changed.column in f.narrowed_by]
            if not narrowed:
                continue

            @guarded
            def on_change(*filter_values, narrowed=narrowed):
                chosen = self.values(filter_values) | {f.name: ALL for f in narrowed}
                choices = service.filter_choices(**chosen)
                return tuple(gr.update(choices=[ALL] + choices[f.column], value=ALL) for f in narrowed)

            outputs = [self.dropdowns[f.name] for f in narrowed]
            wire(self.dropdowns[changed.name].change, on_change, dropdowns, outputs, f"filters_{changed.name}")
