"""Row files: what a build keeps on disk reads back exactly, by slices, masks and index arrays in any
order, and fills in any order."""

from __future__ import annotations

import numpy as np

from recommender.rowfile import RowFile, RowWriter, row_chunks


def test_row_file_reads_any_rows_in_the_order_asked(tmp_path):
    array = np.random.default_rng(0).normal(size=(1000, 7)).astype(np.float32)
    np.save(tmp_path / "a.npy", array)
    rows = RowFile(tmp_path / "a.npy")
    assert rows.shape == (1000, 7) and len(rows) == 1000
    index = np.array([5, 3, 4, 999, 0, 1, 2, 2, 500])
    np.testing.assert_array_equal(rows[index], array[index])
    np.testing.assert_array_equal(rows[10:20], array[10:20])
    np.testing.assert_array_equal(rows[array[:, 0] > 0], array[array[:, 0] > 0])
    assert rows[np.zeros(0, np.int64)].shape == (0, 7)


def test_row_writer_fills_in_any_order_into_a_plain_npy(tmp_path):
    array = np.random.default_rng(1).normal(size=(1000, 5)).astype(np.float32)
    writer = RowWriter(tmp_path / "b.npy", array.shape)
    order = np.random.default_rng(2).permutation(len(array))
    for start in range(0, len(order), 128):
        writer.write(order[start : start + 128], array[order[start : start + 128]])
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), array)
    copy = RowWriter(tmp_path / "c.npy", array.shape)
    for start, chunk in row_chunks(RowFile(tmp_path / "b.npy"), 300):
        copy.write(slice(start, start + len(chunk)), chunk)
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), array)
