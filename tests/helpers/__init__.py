"""Helpers the tests share: small real catalogs cut from the bundled sample, and the app on loopback."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
CACHE = Path(os.environ.get("RECOMMENDER_CACHE", Path.home() / ".cache" / "fashion-recommender"))


def script(name: str):
    """scripts/<name>.py imported as a module (the scripts folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def precompute_command(catalog: Path, out: Path, weights: Path, text_model: Path, *extra: str) -> list[str]:
    """scripts/precompute.py as a user runs it, on the random-init test weights and the real text model, on
    fp32 unless `extra` names a --precision (see conftest's `embedder`)."""
    import sys

    script = ROOT / "scripts" / "precompute.py"
    models = ["--weights", str(weights), "--text-model", str(text_model)]
    precision = [] if "--precision" in extra else ["--precision", "fp32"]
    command = [sys.executable, str(script), "--source", str(catalog), "--out", str(out), *models, "--quiet"]
    return [*command, *precision, *extra]


def sample_rows(n: int, start: int = 0) -> list[list[str]]:
    with open(SAMPLE / "styles.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    return [rows[0]] + rows[1 + start : 1 + start + n]


def make_catalog(folder: Path, rows: list[list[str]]) -> Path:
    """A Kaggle-style folder (styles.csv + images/) holding the given sample rows."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    with open(folder / "styles.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    for row in rows[1:]:
        image = SAMPLE / "images" / f"{row[0]}.jpg"
        if image.is_file():
            shutil.copy(image, folder / "images" / image.name)
    return folder


@contextlib.contextmanager
def serve(service, index_dir: Path, examples: list[str] | None = None, mcp: bool = False):
    """The app on a free loopback port, launched as app.py launches it (MCP tools if `mcp`); yields its URL."""
    import app as app_module

    demo = app_module.launch(
        app_module.build_app(service, examples), app_module.served(index_dir), "127.0.0.1", None, mcp=mcp, block=False
    )
    try:
        yield demo.local_url
    finally:
        demo.close()
