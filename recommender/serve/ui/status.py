"""The catalog's status line above the filters: its size, and while the index is being prepared or the
whole catalog is being built in the background, how far that has come, refreshed every few seconds. When
the app swaps to another index version, the filters' choices follow it."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..service import Service
from .filters import FilterBar
from .guards import wire

REFRESH_S = 5.0


@dataclass
class CatalogStatus:
    line: gr.Markdown
    timer: gr.Timer  # ticks while something is under way
    shown: gr.State  # the index version the page's filters were filled from

    @classmethod
    def build(cls) -> CatalogStatus:
        return cls(gr.Markdown(), gr.Timer(REFRESH_S, active=False), gr.State(None))

    def wire(self, service: Service, demo: gr.Blocks, bar: FilterBar) -> None:
        keep = tuple(gr.update() for _ in bar.dropdowns)

        def refresh(shown: str | None):
            rec = service.serving
            if rec is None:
                return f"⏳ {service.status}", *keep, shown, gr.Timer(active=not service.failed)
            line = f"Catalog: **{len(rec.metadata):,}** products."
            growing = service.growth.sentence() if service.growth is not None else None
            if growing:
                line += f" {growing}"
            version = str(rec.version)
            filters = bar.choices(service) if version != shown else keep
            return line, *filters, version, gr.Timer(active=growing is not None)

        outputs = [self.line, *bar.dropdowns.values(), self.shown, self.timer]
        wire(demo.load, refresh, [self.shown], outputs, "load")
        self.timer.tick(
            refresh,
            [self.shown],
            outputs,
            api_name="ui_status",
            api_visibility="undocumented",
            show_progress="hidden",
        )
