"""How answers look in the page: gallery items and their captions, the classification's label and table,
the image editors' photos, and one search shared by the events a single upload fires."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Hashable
from concurrent.futures import Future
from typing import Callable, TypeVar

from gradio.data_classes import FileData
from PIL import Image

from ...vocabulary import TITLES
from .guards import file_path

T = TypeVar("T")
# The photo editors' canvas: the browser scales each photo to fit it before compositing and uploading,
# which costs seconds per megapixel. The model sees at most 80 px of a product's detail, which this side
# still holds for a product a twelfth of its photo's longer side (docs/benchmarks.md#upload).
EDITOR_SIDE = 512
DETAIL_HEADS = ("gender", "masterCategory", "subCategory", "baseColour", "usage")  # article type has its own label
SUMMARY_HEADS = ("articleType", "gender", "baseColour")  # what the item is, in one line above the gallery
# Below this calibrated confidence the top label is more likely wrong than right: the page says which two
# labels it looks like instead of naming one.
SURE = 0.5


class SharedAnswers:
    """Identical requests arriving together share one answer: the image editor fires an upload event and
    one or more change events for a single upload, all with the same photo (2 to 4 searches an upload,
    measured in the browser test). The first request computes, the others wait for it, and its answer
    serves the same request for `seconds` more."""

    def __init__(self, seconds: float = 5.0) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._answers: dict[Hashable, tuple[float, Future]] = {}

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        now = time.monotonic()
        with self._lock:
            self._answers = {k: v for k, v in self._answers.items() if now - v[0] < self.seconds}
            entry = self._answers.get(key)
            mine = entry is None
            if mine:
                entry = self._answers[key] = (now, Future())
        answer = entry[1]
        if mine:
            try:
                answer.set_result(compute())
            except BaseException as exc:  # not kept: the next request tries again
                with self._lock:
                    if self._answers.get(key) is entry:
                        del self._answers[key]
                answer.set_exception(exc)
        return answer.result()


def pixels_key(image: Image.Image | None) -> str | None:
    """A photo's identity by its pixels (the editor re-encodes the same photo under new file names)."""
    if image is None:
        return None
    return f"{image.size}{image.mode}" + hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest()


def edited_photo(value) -> str | None:
    """The photo as the shopper left it in the image editor: the composite, cropped if they cropped it (the
    background while the editor has not drawn its composite yet); None when the editor is empty."""
    if not value:
        return None
    if isinstance(value, dict):
        return file_path(value.get("composite") or value.get("background")) or None
    return file_path(value) or None


def for_editor(image: Image.Image) -> Image.Image:
    """A fetched photo as the image editor shows it: at most EDITOR_SIDE pixels a side (its canvas), so a
    50-megapixel photo does not travel to the browser whole."""
    if max(image.size) <= EDITOR_SIDE:
        return image
    small = image.copy()
    small.thumbnail((EDITOR_SIDE, EDITOR_SIDE), Image.Resampling.LANCZOS)
    return small


def served(payload: dict) -> dict:
    """Turn every result's thumbnail path into a FileData, which Gradio serves to clients as a file."""
    out = dict(payload)
    if "results" in out:
        out["results"] = [dict(r, image=FileData(path=r["image"])) for r in out["results"]]
    return out


# What a shopper reads for each attribute a result can share with the query.
SHARED = (("articleType", "type"), ("baseColour", "colour"), ("gender", "gender"))


def why(result: dict, reference: dict[str, object] | None) -> str:
    """Why a result matched, in a shopper's words: "same type and colour" (as the query's `reference`)."""
    if not reference:
        return f"{result['articleType']}, {result['baseColour']}"

    def shares(column: str) -> bool:
        wanted = reference[column]
        return result[column] in wanted if isinstance(wanted, (set, list, tuple)) else result[column] == wanted

    same = [word for column, word in SHARED if column in reference and shares(column)]
    if not same:
        return "looks alike"
    return "same " + (same[0] if len(same) == 1 else ", ".join(same[:-1]) + " and " + same[-1])


def gallery(results: list[dict], reference: dict[str, object] | None = None) -> list[tuple[str, str]]:
    """Gallery items: each result's thumbnail with its whole name, score and why it matched (`reference`:
    per column, the attribute the query has or the words asked for)."""

    def caption(r: dict) -> str:
        score = "" if r["score"] is None else f"{r['score']:.2f} · "  # browse results have no score
        return f"{r['name']}\n{score}{why(r, reference)}"

    return [(r["image"], caption(r)) for r in results]


def photo_reference(classification: dict, understood: dict[str, list[str]] | None = None) -> dict[str, object]:
    """What a photo query is, per column: the heads' top label, or what the shopper's words asked for."""
    reference: dict[str, object] = {c: classification[c][0]["label"] for c, _ in SHARED if classification.get(c)}
    return reference | {c: set(labels) for c, labels in (understood or {}).items() if c in dict(SHARED)}


def article_label(classification: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in classification.get("articleType", [])}


def unsure(top: list[dict]) -> bool:
    """The head's best label is below SURE and a runner-up exists: say both."""
    return top[0]["confidence"] < SURE and len(top) > 1


def said(top: list[dict]) -> str:
    """One head's answer in words: "**Tshirts** 82%", or when it is not sure, "looks like **Tops** 45% or
    **Tshirts** 38%"."""
    first = f"**{top[0]['label']}** {top[0]['confidence']:.0%}"
    return f"looks like {first} or **{top[1]['label']}** {top[1]['confidence']:.0%}" if unsure(top) else first


def summary_line(classification: dict) -> str:
    """What the photo is at a glance, above the results: type, gender and colour with their confidences
    ("**Tshirts** 82% · **Men** 88% · **White** 61%")."""
    parts = [said(top) for head in SUMMARY_HEADS if (top := classification.get(head))]
    return "What it is: " + " · ".join(parts) if parts else ""


def details_markdown(classification: dict, understood: str | None = None) -> str:
    """The heads' predictions as a table, and what the shopper's words were understood to ask for."""
    rows = [
        f"| {TITLES[h]} | {c[0]['label']} or {c[1]['label']} | {c[0]['confidence']:.0%} / {c[1]['confidence']:.0%} |"
        if unsure(c)
        else f"| {TITLES[h]} | {c[0]['label']} | {c[0]['confidence']:.0%} |"
        for h, c in classification.items()
        if h in DETAIL_HEADS and c
    ]
    table = "| | prediction | confidence |\n|---|---|---|\n" + "\n".join(rows) if rows else ""
    if understood is None:
        return table
    words = f"**Your words asked for:** {understood}" if understood else "**Your words:** matched by meaning only"
    return f"{words}\n\n{table}" if table else words


def result_choices(results: list[dict]) -> list[tuple[str, int]]:
    return [(f"{r['name']} ({r['id']})", r["id"]) for r in results]
