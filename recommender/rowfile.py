"""Row files: 2-D .npy arrays on disk read and written a bounded number of rows at a time, so a build's
memory does not grow with the catalog (each access maps the file and unmaps it again: pages a mapping
touched would otherwise stay in the process's resident memory)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

CHUNK_ROWS = 4096  # 4096 x 3136 float32 descriptors: 51 MB a chunk


class RowFile:
    """A (rows, columns) .npy read by row ranges or row indices; `shape` like an array's."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        mapped = np.load(self.path, mmap_mode="r")
        self.shape, self.dtype = mapped.shape, mapped.dtype
        del mapped

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        """A copy of `rows` (a slice or an index array) in memory."""
        mapped = np.load(self.path, mmap_mode="r")
        try:
            return np.array(mapped[rows])
        finally:
            del mapped


def row_chunks(rows: np.ndarray | RowFile, size: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, float32 rows) of consecutive chunks of at most `size` rows of an array or a RowFile."""
    for start in range(0, len(rows), size):
        yield start, np.asarray(rows[start : start + size], np.float32)


class RowWriter:
    """A (rows, columns) .npy of known shape filled a chunk at a time (rows in any order)."""

    def __init__(self, path: Path, shape: tuple[int, int], dtype=np.float32) -> None:
        self.path = Path(path)
        np.lib.format.open_memmap(self.path, mode="w+", dtype=dtype, shape=shape).flush()

    def write(self, rows, values: np.ndarray) -> None:
        """Put `values` at `rows` (a slice or an index array)."""
        mapped = np.load(self.path, mmap_mode="r+")
        try:
            mapped[rows] = values
            mapped.flush()
        finally:
            del mapped
