"""The catalog's attribute table, aligned row for row with the embeddings, and the one filter logic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence, Union

import numpy as np

from .errors import UserError
from .vocabulary import ANY, ATTRIBUTE_COLUMNS, FILTER_COLUMNS

FilterValue = Union[str, Sequence[str], None]
Filters = Mapping[str, FilterValue]


class Metadata:
    """Column-oriented attributes: `ids[i]` and `columns[c][i]` describe embedding row i."""

    def __init__(self, ids: Iterable[int], columns: Mapping[str, Sequence[str]], image_sha: Sequence[str]) -> None:
        self.ids = np.asarray(list(ids), dtype=np.int64)
        self.columns = {c: np.asarray(list(columns[c]), dtype=object) for c in ATTRIBUTE_COLUMNS}
        self.image_sha = np.asarray(list(image_sha), dtype=object)
        self._row_of = {int(item_id): row for row, item_id in enumerate(self.ids)}
        self._codes: dict[str, tuple[list[str], np.ndarray]] = {}
        if len(self._row_of) != len(self.ids):
            raise UserError("The catalog lists the same product id twice; remove the duplicate rows and rebuild.")

    def __len__(self) -> int:
        return len(self.ids)

    def row_of(self, item_id: int | str) -> int | None:
        try:
            return self._row_of.get(int(item_id))
        except (TypeError, ValueError):
            return None

    def attributes(self, row: int) -> dict[str, str]:
        return {c: str(self.columns[c][row]) for c in ATTRIBUTE_COLUMNS}

    def counts(self, column: str, where: Filters | None = None) -> list[tuple[str, int]]:
        """(value, products) of a column among the rows `where` selects, most frequent first; integer codes
        made once per column, so a dashboard update at 44k is a few bincounts."""
        if column not in self._codes:
            labels, codes = np.unique(self.columns[column].astype(str), return_inverse=True)
            self._codes[column] = ([str(x) for x in labels], codes)
        labels, codes = self._codes[column]
        mask = self.mask(where)
        counted = np.bincount(codes if mask is None else codes[mask], minlength=len(labels))
        order = np.lexsort((np.arange(len(labels)), -counted))
        return [(labels[i] or "(none)", int(counted[i])) for i in order if counted[i]]

    def values(self, column: str, where: Filters | None = None) -> list[str]:
        """Distinct non-empty values of a column, most frequent first (for dropdowns)."""
        mask = self.mask(where)
        data = self.columns[column] if mask is None else self.columns[column][mask]
        uniques, counts = np.unique(data.astype(str), return_counts=True)
        return [str(u) for u, _ in sorted(zip(uniques, counts), key=lambda t: (-t[1], t[0])) if u]

    def mask(self, filters: Filters | None) -> np.ndarray | None:
        """Rows that satisfy every filter (a value or a list of accepted values); None means all rows."""
        mask = None
        for column, accepted in (filters or {}).items():
            if accepted in ANY or (isinstance(accepted, (list, tuple, set)) and not accepted):
                continue
            if column not in FILTER_COLUMNS:
                raise UserError(f"Unknown filter '{column}'; filter on one of: {', '.join(FILTER_COLUMNS)}.")
            accepted = [accepted] if isinstance(accepted, str) else list(accepted)
            if any(a in ANY for a in accepted):
                continue
            column_mask = np.isin(self.columns[column], np.asarray(accepted, dtype=object))
            mask = column_mask if mask is None else mask & column_mask
        return mask

    def save(self, path: Path) -> None:
        payload = {
            "ids": self.ids.tolist(),
            "image_sha": self.image_sha.tolist(),
            "columns": {c: self.columns[c].tolist() for c in ATTRIBUTE_COLUMNS},
        }
        path.write_text(json.dumps(payload, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> "Metadata":
        payload = json.loads(path.read_text())
        return cls(payload["ids"], payload["columns"], payload["image_sha"])
