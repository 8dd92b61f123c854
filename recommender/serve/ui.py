"""Adapters between the Service and Gradio: errors as one sentence, results as gallery items,
labels and served files. No business logic lives here."""

from __future__ import annotations

import functools
import logging
from typing import Callable

import gradio as gr
from gradio.data_classes import FileData

from ..errors import UserError
from ..vocabulary import TITLES

log = logging.getLogger("recommender.ui")
DETAIL_HEADS = ("gender", "masterCategory", "subCategory", "baseColour", "usage")  # article type has its own label


def guarded(fn: Callable) -> Callable:
    """User errors become a one-sentence gr.Error; anything else is logged and explained politely."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except UserError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error("Something went wrong on our side; please try again.", print_exception=False) from None

    return wrapper


def file_path(image) -> str | None:
    """The local path of an uploaded file however a client sent it (FileData dict, FileData, path)."""
    if image is None:
        return None
    if isinstance(image, dict):
        return image.get("path")
    if isinstance(image, FileData):
        return image.path
    return str(image)


def served(payload: dict) -> dict:
    """Turn every result's thumbnail path into a FileData, which Gradio serves to clients as a file."""
    out = dict(payload)
    if "results" in out:
        out["results"] = [dict(r, image=FileData(path=r["image"])) for r in out["results"]]
    return out


def gallery(results: list[dict]) -> list[tuple[str, str]]:
    def caption(r: dict) -> str:
        score = "" if r["score"] is None else f" · {r['score']:.2f}"  # browse results have no score
        return f"{r['name']} — {r['articleType']}, {r['baseColour']}{score}"

    return [(r["image"], caption(r)) for r in results]


def article_label(classification: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in classification.get("articleType", [])}


def details_markdown(classification: dict) -> str:
    rows = [
        f"| {TITLES[h]} | {c[0]['label']} | {c[0]['confidence']:.0%} |"
        for h, c in classification.items()
        if h in DETAIL_HEADS and c
    ]
    return "| | prediction | confidence |\n|---|---|---|\n" + "\n".join(rows) if rows else ""


def result_choices(results: list[dict]) -> list[tuple[str, int]]:
    return [(f"{r['name']} ({r['id']})", r["id"]) for r in results]
