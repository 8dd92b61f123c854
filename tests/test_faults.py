"""Precompute killed with SIGKILL at three points, then rerun, gives the uninterrupted result; no
half-written index is ever visible under the final name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import precompute_command


def command(catalog: Path, out: Path, weights: Path, text_model: Path) -> list[str]:
    return precompute_command(catalog, out, weights, text_model, "--batch-size", "4", "--shard-size", "8")


def run_until(cmd: list[str], out: Path, condition, timeout: float = 120, whole_group: bool = True) -> int:
    """Start precompute and SIGKILL it (with its process group, unless `whole_group` is False) as soon as
    `condition(partial_dir)` holds. Returns its pid, which is also its process group's id."""
    partial = out.with_name(out.name + ".partial")
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if condition(partial):
                (os.killpg if whole_group else os.kill)(process.pid, signal.SIGKILL)
                process.wait()
                assert not (out / "manifest.json").exists() and not out.exists(), "final name visible before completion"
                return process.pid
            if process.poll() is not None:
                pytest.fail(f"precompute ended (rc {process.returncode}) before the kill point")
            time.sleep(0.02)
        pytest.fail("kill point never reached")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def shards(partial: Path) -> int:
    return len(list((partial / "shards").glob("shard-*.npz"))) if (partial / "shards").is_dir() else 0


def no_process_left_in(group: int) -> None:
    """SIGKILL (or the OOM killer) reaches only the main process; its decode processes must not linger."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)  # anyone left in its process group?
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(group, signal.SIGKILL)
    pytest.fail("a decode process outlived the killed precompute")


def test_sigkill_at_three_points_then_rerun_matches_an_uninterrupted_run(
    catalog_dir, tmp_path, random_weights, text_model, reference_build
):
    """Killed three times (the first time the main process alone, as the OOM killer does: its decode
    processes must not linger), then rerun: what one uninterrupted build of the same products gives (built
    in this process, with other batch and shard sizes: the same index)."""
    reference = reference_build[1]
    out = tmp_path / "index"
    cmd = command(catalog_dir, out, random_weights, text_model)
    group = run_until(
        cmd, out, lambda p: (p / "thumbnails").is_dir() and any((p / "thumbnails").iterdir()), whole_group=False
    )  # during the first shard
    no_process_left_in(group)
    run_until(cmd, out, lambda p: shards(p) >= 3)  # between shards
    run_until(cmd, out, lambda p: shards(p) >= 5)  # in the last shard
    subprocess.run(cmd, check=True)
    assert json.loads((out / "metadata.json").read_text()) == json.loads((reference / "metadata.json").read_text())
    np.testing.assert_allclose(np.load(out / "features.npy"), np.load(reference / "features.npy"), atol=1e-5)
    np.testing.assert_allclose(np.load(out / "embeddings.npy"), np.load(reference / "embeddings.npy"), atol=1e-4)
    assert sorted(os.listdir(out / "thumbnails")) == sorted(os.listdir(reference / "thumbnails"))
    assert not out.with_name("index.partial").exists()
