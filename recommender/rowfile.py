"""Row files: 2-D .npy arrays on disk read and written a bounded number of rows at a time, so a build's
memory does not grow with the catalog. Rows move by plain file reads and writes, not memory maps: a map
faults in the pages around every row it touches (readahead), so gathering a sample of rows spread over
a large file would bring most of the file into the process's resident memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

CHUNK_ROWS = 4096  # 4096 x 7232 float32 descriptors: 118 MB a chunk


def _runs(rows: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, positions in `rows`) of each stretch of consecutive row numbers, in row order."""
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    for run in np.split(np.arange(len(rows)), np.flatnonzero(np.diff(ordered) != 1) + 1):
        if len(run):
            yield int(ordered[run[0]]), order[run]


def _as_rows(rows, count: int) -> np.ndarray:
    """A slice, boolean mask or index array over `count` rows -> row numbers."""
    if isinstance(rows, slice):
        return np.arange(*rows.indices(count))
    rows = np.asarray(rows)
    return np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)


class RowFile:
    """A (rows, columns) .npy read by row slices, masks or index arrays; `shape` like an array's."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            major, _ = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, self.dtype = read_header(handle)
            self.offset = handle.tell()
        if len(shape) != 2 or fortran:
            raise ValueError(f"{self.path} is not a 2-D C-ordered array")
        self.shape = shape
        self.row_bytes = shape[1] * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        """A copy of `rows` in memory, in the order asked."""
        rows = _as_rows(rows, len(self))
        out = np.empty((len(rows), self.shape[1]), self.dtype)
        with open(self.path, "rb") as handle:
            for first, positions in _runs(rows):
                handle.seek(self.offset + first * self.row_bytes)
                data = handle.read(len(positions) * self.row_bytes)
                out[positions] = np.frombuffer(data, self.dtype).reshape(len(positions), self.shape[1])
        return out


def row_chunks(rows: np.ndarray | RowFile, size: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, float32 rows) of consecutive chunks of at most `size` rows of an array or a RowFile."""
    for start in range(0, len(rows), size):
        yield start, np.asarray(rows[start : start + size], np.float32)


class RowWriter:
    """A (rows, columns) .npy of known shape filled a chunk at a time (rows in any order)."""

    def __init__(self, path: Path, shape: tuple[int, int], dtype=np.float32) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.shape = shape
        with open(self.path, "wb") as handle:
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(handle, header)
            self.offset = handle.tell()
            handle.truncate(self.offset + shape[0] * shape[1] * self.dtype.itemsize)  # sparse until written

    def write(self, rows, values: np.ndarray) -> None:
        """Put `values` at `rows` (a slice or an index array)."""
        rows = _as_rows(rows, self.shape[0])
        values = np.ascontiguousarray(values, self.dtype).reshape(len(rows), self.shape[1])
        row_bytes = self.shape[1] * self.dtype.itemsize
        with open(self.path, "r+b") as handle:
            for first, positions in _runs(rows):
                handle.seek(self.offset + first * row_bytes)
                handle.write(values[positions].tobytes())
