"""Search by words: every catalog product's text vector, scored by an exact scan (cheaper than a graph
walk at catalog sizes, and it lets the words' constraints weigh in on every row: docs/experiments.md#text-search)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..hnsw import top_k
from ..metadata import Metadata
from ..words import WORD_COLUMNS, Understood, Vocabulary

# A satisfied constraint outweighs any difference in text similarity (cosines of one model's sentences
# differ by well under 1), so products that are what the words name come first, the text model's
# order among them.
CONSTRAINT_WEIGHT = 1.0


class TextIndex:
    """The catalog's unit text vectors (row i = index label i) and its labels as integer codes."""

    def __init__(self, vectors: np.ndarray, metadata: Metadata) -> None:
        self.vectors = vectors
        self.codes: dict[str, np.ndarray] = {}
        self.labels: dict[str, list[str]] = {}
        for column in WORD_COLUMNS:
            labels, codes = np.unique(metadata.columns[column].astype(str), return_inverse=True)
            self.labels[column], self.codes[column] = [str(x) for x in labels], codes.astype(np.int32)
        self.vocabulary = Vocabulary(self.labels)

    @classmethod
    def load(cls, path: Path, metadata: Metadata) -> "TextIndex":
        return cls(np.load(path, mmap_mode="r"), metadata)

    def __len__(self) -> int:
        return len(self.vectors)

    def _by_row(self, column: str, value_of_label, rows: np.ndarray | None = None) -> np.ndarray:
        """`value_of_label(label)` for every row's label of `column` (one lookup per distinct label)."""
        table = np.array([value_of_label(label) for label in self.labels[column]])
        return table[self.codes[column] if rows is None else self.codes[column][rows]]

    def constraint_scores(self, understood: Understood, rows: np.ndarray | None = None) -> np.ndarray:
        """Per row, the credit of every wanted label it has, minus one for every unwanted one."""
        total = np.zeros(len(self) if rows is None else len(rows), np.float32)
        for column, credit in understood.wanted.items():
            total += self._by_row(column, lambda label: credit.get(label, 0.0), rows)
        for column, labels in understood.unwanted.items():
            total -= self._by_row(column, lambda label: float(label in labels), rows)
        return CONSTRAINT_WEIGHT * total

    def satisfying(self, understood: Understood) -> np.ndarray:
        """Rows with exactly what the words name in every column they name, and nothing they exclude."""
        mask = np.ones(len(self), bool)
        for column, credit in understood.wanted.items():
            mask &= self._by_row(column, lambda label: credit.get(label, 0.0) == 1.0)
        for column, labels in understood.unwanted.items():
            mask &= ~self._by_row(column, lambda label: label in labels)
        return mask

    def similarity(self, query: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        vectors = self.vectors if rows is None else self.vectors[rows]
        return np.asarray(vectors, np.float32) @ np.asarray(query, np.float32)

    def search(
        self, query: np.ndarray, understood: Understood, k: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows (within `mask`) by constraints met, then text similarity; scores are the similarity."""
        rows = None if mask is None else np.flatnonzero(mask)
        similarity = self.similarity(query, rows)
        order = top_k(similarity + self.constraint_scores(understood, rows), k)
        chosen = order if rows is None else rows[order]
        return chosen.astype(np.int64), similarity[order]
