"""Catalog sources behind one interface: a Hub dataset (streamed), a Kaggle-style folder, or a dataset
saved with `save_to_disk`. Each yields CatalogItems with the raw image bytes, decoded later by the one
image loader."""

from __future__ import annotations

import csv
import io
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from .errors import UserError
from .vocabulary import ATTRIBUTE_COLUMNS

DEFAULT_SOURCE = "ashraq/fashion-product-images-small"
FULL_CATALOG = 44_072  # products in DEFAULT_SOURCE: what the full-size benchmarks and test catalogs aim at


@dataclass
class CatalogItem:
    position: int  # index in the (limited) stream: what resume and sharding count
    id: int
    attributes: dict[str, str]
    data: bytes | None  # encoded image bytes; None when the row has no image


@dataclass
class SkipLog:
    """Items left out of the catalog, by reason; counted, never fatal."""

    reasons: dict[str, list] = field(default_factory=dict)

    def add(self, reason: str, item_id) -> None:
        self.reasons.setdefault(reason, []).append(item_id)

    def counts(self) -> dict[str, int]:
        return {reason: len(ids) for reason, ids in self.reasons.items()}


def _clean(value) -> str:
    return "" if value is None else str(value).strip()


def _attributes(row: dict) -> dict[str, str]:
    attrs = {col: _clean(row.get(col)) for col in ATTRIBUTE_COLUMNS}
    if attrs["year"].endswith(".0"):  # pandas-written CSVs turn the year into a float
        attrs["year"] = attrs["year"][:-2]
    return attrs


def read_styles(path: Path) -> Iterator[dict]:
    """Rows of a Kaggle `styles.csv`. Some real rows have unquoted commas inside the product name,
    so everything past the ninth field is joined back into `productDisplayName`."""
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        name_at = header.index("productDisplayName") if "productDisplayName" in header else len(header) - 1
        for fields in reader:
            if not fields:
                continue
            if len(fields) > len(header):
                fields = fields[:name_at] + [",".join(fields[name_at:])]
            yield dict(zip(header, fields))


def _image_bytes(image) -> bytes | None:
    """The encoded bytes of an undecoded `datasets.Image` value (embedded bytes, or a local file path)."""
    if not isinstance(image, dict):
        return None
    if image.get("bytes"):
        return image["bytes"]
    path = image.get("path")
    return Path(path).read_bytes() if path and Path(path).is_file() else None


class CatalogSource:
    """A stream of catalog items from SRC: a Hub dataset id, a Kaggle-style folder or a saved dataset."""

    def __init__(self, source: str, limit: int | None = None) -> None:
        self.source = source
        self.limit = limit
        self.skipped = SkipLog()
        path = Path(source)
        if path.is_dir():
            if (path / "styles.csv").is_file():
                self.kind = "folder"
            elif (
                (path / "dataset_info.json").is_file()
                or (path / "dataset_dict.json").is_file()
                or (path / "state.json").is_file()
            ):
                self.kind = "saved"
            else:
                raise UserError(
                    f"{source} is a folder but neither a Kaggle-style catalog (styles.csv + images/) "
                    "nor a dataset saved with save_to_disk; point --source at one of those or at a Hub dataset id."
                )
        elif path.exists() or source.startswith((".", "/")) or source.count("/") != 1:
            raise UserError(
                f"Catalog source {source} not found; give a folder with styles.csv + images/, a saved dataset, "
                f"or a Hub id like {DEFAULT_SOURCE}."
            )
        else:
            self.kind = "hub"

    def describe(self) -> dict:
        return {"source": self.source, "kind": self.kind, "limit": self.limit}

    def typical_side(self, sample: int = 256) -> int | None:
        """The median longer side, in pixels, of the first `sample` images (from their headers): the
        resolution the catalog's photos carry detail at. None when none of them can be read."""
        sides = []
        for item in CatalogSource(self.source, min(sample, self.limit or sample)):
            if item.data is None:
                continue
            try:
                with Image.open(io.BytesIO(item.data)) as image:
                    sides.append(max(image.size))
            except (OSError, ValueError, Image.DecompressionBombError):
                continue
        return int(np.median(sides)) if sides else None

    def _rows(self) -> Iterator[tuple[dict, bytes | None]]:
        if self.kind == "folder":
            yield from self._folder_rows()
        else:
            yield from self._dataset_rows()

    def _folder_rows(self) -> Iterator[tuple[dict, bytes | None]]:
        root = Path(self.source)
        seen: set[str] = set()
        for row in read_styles(root / "styles.csv"):
            image = root / "images" / f"{_clean(row.get('id'))}.jpg"
            seen.add(image.name)
            yield row, (image.read_bytes() if image.is_file() else None)
        if self.limit is None:  # only a full pass can tell which images have no row
            for image in sorted((root / "images").glob("*.jpg")):
                if image.name not in seen:
                    self.skipped.add("image without a styles.csv row", image.stem)

    def _dataset_rows(self) -> Iterator[tuple[dict, bytes | None]]:
        import datasets

        if self.kind == "hub":
            try:
                data = datasets.load_dataset(self.source, split="train", streaming=True)
            except Exception as exc:  # offline, unknown id, private repo: all end here
                raise UserError(
                    f"Could not open the Hub dataset {self.source} ({type(exc).__name__}); check the id and the "
                    "network, or pass a local folder (styles.csv + images/) or a saved dataset as --source."
                ) from None
        else:
            data = datasets.load_from_disk(self.source)
            if isinstance(data, datasets.DatasetDict):
                data = data["train"] if "train" in data else next(iter(data.values()))
            data = data.to_iterable_dataset()
        if data.features and "image" in data.features:
            # Keep the encoded bytes: decoding happens in the one image loader, in parallel with the model.
            data = data.cast_column("image", datasets.Image(decode=False))
        for row in data:
            yield row, _image_bytes(row.get("image"))

    def __iter__(self) -> Iterator[CatalogItem]:
        rows = self._rows()
        if self.limit is not None:
            rows = itertools.islice(rows, self.limit)
        for position, (row, data) in enumerate(rows):
            raw_id = _clean(row.get("id"))
            if not raw_id.isdigit():
                self.skipped.add("row without a numeric id", raw_id or f"#{position}")
                continue
            yield CatalogItem(position, int(raw_id), _attributes(row), data)
