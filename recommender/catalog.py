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
class SkippedRow:
    """A row the catalog cannot hold, at its place in the stream: built into the manifest's skip list."""

    position: int
    id: str  # the row's id as written (there may be no numeric one)
    reason: str


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

    def count(self) -> int:
        """Rows in the (limited) stream, without reading any image: how a distributed build splits it."""
        if self.kind == "folder":
            total = sum(1 for _ in read_styles(Path(self.source) / "styles.csv"))
        elif self.kind == "saved":
            total = len(self._saved())
        else:
            total = self._hub_size()
        return total if self.limit is None else min(total, self.limit)

    def unlisted_images(self) -> list[str]:
        """A folder's images without a styles.csv row (only the whole folder can tell; none otherwise)."""
        if self.kind != "folder" or self.limit is not None:
            return []
        root = Path(self.source)
        listed = {f"{_clean(row.get('id'))}.jpg" for row in read_styles(root / "styles.csv")}
        return [image.stem for image in sorted((root / "images").glob("*.jpg")) if image.name not in listed]

    def rows(self, start: int = 0, stop: int | None = None) -> Iterator[CatalogItem | SkippedRow]:
        """The stream's rows at positions start..stop-1 (within the limit), images read only for those;
        rows the catalog cannot hold come as SkippedRows."""
        stop = self.limit if stop is None else stop if self.limit is None else min(stop, self.limit)
        if stop is not None and stop <= start:
            return
        raw = self._folder_rows(start, stop) if self.kind == "folder" else self._dataset_rows(start, stop)
        for position, (row, data) in enumerate(raw, start):
            raw_id = _clean(row.get("id"))
            if not raw_id.isdigit():
                yield SkippedRow(position, raw_id or f"#{position}", "row without a numeric id")
            else:
                yield CatalogItem(position, int(raw_id), _attributes(row), data)

    def __iter__(self) -> Iterator[CatalogItem]:
        """The catalog's items from the first row (skipped rows are counted in `skipped`)."""
        for row in self.rows():
            if isinstance(row, SkippedRow):
                self.skipped.add(row.reason, row.id)
            else:
                yield row

    def _folder_rows(self, start: int, stop: int | None) -> Iterator[tuple[dict, bytes | None]]:
        root = Path(self.source)
        for row in itertools.islice(read_styles(root / "styles.csv"), start, stop):
            image = root / "images" / f"{_clean(row.get('id'))}.jpg"
            yield row, (image.read_bytes() if image.is_file() else None)

    def _saved(self):
        import datasets

        data = datasets.load_from_disk(self.source)
        if isinstance(data, datasets.DatasetDict):
            data = data["train"] if "train" in data else next(iter(data.values()))
        return data

    def _hub_size(self) -> int:
        import datasets

        try:
            return datasets.load_dataset_builder(self.source).info.splits["train"].num_examples
        except Exception as exc:  # offline, unknown id, no split sizes recorded: all end here
            raise UserError(
                f"Could not tell how many rows the Hub dataset {self.source} has ({type(exc).__name__}); "
                "pass --limit N, or a local folder or saved dataset as --source."
            ) from None

    def _dataset_rows(self, start: int, stop: int | None) -> Iterator[tuple[dict, bytes | None]]:
        import datasets

        if self.kind == "hub":
            try:
                data = datasets.load_dataset(self.source, split="train", streaming=True)
            except Exception as exc:  # offline, unknown id, private repo: all end here
                raise UserError(
                    f"Could not open the Hub dataset {self.source} ({type(exc).__name__}); check the id and the "
                    "network, or pass a local folder (styles.csv + images/) or a saved dataset as --source."
                ) from None
            data = data.skip(start) if start else data
            data = data.take(stop - start) if stop is not None else data
        else:
            data = self._saved()
            data = data.select(range(start, min(stop, len(data)) if stop is not None else len(data)))
            data = data.to_iterable_dataset()
        if data.features and "image" in data.features:
            # Keep the encoded bytes: decoding happens in the one image loader, in parallel with the model.
            data = data.cast_column("image", datasets.Image(decode=False))
        for row in data:
            yield row, _image_bytes(row.get("image"))
