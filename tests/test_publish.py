"""Publishing an index is one atomic step: a kill at any point leaves the old index or the new one, an
app that finds a half-published one says so, a damaged shard is embedded again, two builds on one
folder are refused, and a full disk ends in one sentence with a rerun that resumes."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recommender import artifacts
from recommender.build import precompute
from recommender.catalog import CatalogSource
from recommender.errors import ArtifactsError
from recommender.serve.service import Service
from recommender.serve.startup import open_index
from tests.helpers import SAMPLE, precompute_command


class Killed(BaseException):
    """The process stopping at that point: nothing after it runs (no except, no cleanup)."""


def folder(path: Path, name: str) -> Path:
    path.mkdir(parents=True)
    (path / artifacts.MANIFEST).write_text(json.dumps({"name": name}))
    return path


def served(final: Path) -> str:
    return json.loads((final / artifacts.MANIFEST).read_text())["name"]


FILESYSTEM_STEPS = ("replace", "symlink", "unlink", "rename")


def kill_at(monkeypatch, step: int) -> list[str]:
    """Make the `step`-th file-system change publish makes raise Killed; returns the steps' names."""
    names: list[str] = []

    def counting(name, real):
        def call(*args, **kwargs):
            names.append(name)
            if len(names) == step:
                raise Killed(name)
            return real(*args, **kwargs)

        return call

    for name in FILESYSTEM_STEPS:
        monkeypatch.setattr(artifacts.os, name, counting(name, getattr(os, name)))
    monkeypatch.setattr(artifacts, "_exchange", counting("exchange", artifacts._exchange))
    return names


@pytest.mark.parametrize("old_layout", ["a plain directory", "a published version"])
def test_a_kill_at_any_publish_step_leaves_the_old_index_or_the_new_one(tmp_path, monkeypatch, old_layout):
    step, outcomes = 1, []
    while True:
        root = tmp_path / f"kill-{step}"
        final = root / "index"
        if old_layout == "a plain directory":
            folder(final, "old")
        else:
            artifacts.publish(folder(root / "first", "old"), final)
        staging = folder(root / "index.partial", "new")
        names = kill_at(monkeypatch, step)
        try:
            artifacts.publish(staging, final)
            finished = True
        except Killed:
            finished = False
        monkeypatch.undo()
        assert served(final) in ("old", "new"), f"no index after a kill at {names[-1]} (step {step})"
        outcomes.append(served(final))
        if finished:
            break
        step += 1
    assert outcomes[0] == "old" and outcomes[-1] == "new" and step >= 3
    kept = {p.name for p in artifacts.versions_of(final).iterdir()}
    replaced = 1 if old_layout == "a published version" else 0  # a plain directory is swapped out whole
    assert os.readlink(final).split("/")[-1] in kept and len(kept) == 1 + replaced


def test_a_publish_keeps_the_version_it_replaces_until_the_next(tmp_path):
    """An app serving a version swaps to the next within seconds: until then its answers' thumbnails
    must still be there."""
    final = tmp_path / "index"
    first = artifacts.publish(folder(tmp_path / "a", "one"), final)
    second = artifacts.publish(folder(tmp_path / "b", "two"), final)
    assert served(final) == "two" and served(first) == "one"
    third = artifacts.publish(folder(tmp_path / "c", "three"), final)
    assert served(final) == "three" and sorted(artifacts.versions_of(final).iterdir()) == [second, third]


def test_without_an_atomic_exchange_a_half_published_index_is_named_and_finished(tmp_path, monkeypatch):
    """Where the file system cannot swap a directory for a link, a kill between the two renames leaves
    no index: the app says so in one sentence (it does not build the starter index over it), and the
    next precompute finishes the publish."""
    final = folder(tmp_path / "index", "old")
    monkeypatch.setattr(artifacts, "_exchange", lambda a, b: False)
    names = kill_at(monkeypatch, 4)  # replace(staging), symlink, replace(old dir away), killed: replace(link)
    monkeypatch.setattr(artifacts, "_exchange", lambda a, b: False)
    with pytest.raises(Killed):
        artifacts.publish(folder(tmp_path / "index.partial", "new"), final)
    monkeypatch.undo()
    assert names == ["replace", "symlink", "replace", "replace"] and not final.exists()
    service = Service()
    with pytest.raises(ArtifactsError, match="left half-published by a build that stopped; rerun the same precompute"):
        open_index(service, final, SAMPLE, None)
    assert not service.wait_ready(0) and not final.exists()  # no starter index built over it
    with pytest.raises(ArtifactsError, match="half-published"):
        artifacts.read_manifest(final)
    assert artifacts.recover(final) and served(final) == "new"


def test_a_second_build_on_the_same_folder_is_refused(tmp_path, catalog_dir, random_weights, text_model):
    """Another process building into the same --out: the second build says so in one sentence and
    touches nothing."""
    out = tmp_path / "index"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from recommender import artifacts\n"
            "with artifacts.build_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.run(
            precompute_command(catalog_dir, out, random_weights, text_model),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert re.search(rf"error: Another build is writing .*index \(process {holder.pid}\); wait for it", second.stderr)
    assert not out.exists() and not out.with_name("index.partial").exists()


def test_a_damaged_shard_is_embedded_again(
    tmp_path, catalog_dir, embedder, text_encoder, monkeypatch, capsys, reference_build
):
    reference, ref = reference_build
    out = tmp_path / "index"
    real, calls = embedder.forward, {"n": 0}

    def stop_after_four_batches(batch):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt
        return real(batch)

    monkeypatch.setattr(embedder, "forward", stop_after_four_batches)
    with pytest.raises(KeyboardInterrupt):
        precompute(
            CatalogSource(str(catalog_dir)), out, embedder, text_encoder, progress=False, batch_size=8, shard_size=16
        )
    monkeypatch.undo()
    shard = tmp_path / "index.partial" / "shards" / "shard-00000.npz"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the descriptors
    shard.write_bytes(bytes(data))
    rebuilt = precompute(
        CatalogSource(str(catalog_dir)), out, embedder, text_encoder, progress=False, batch_size=8, shard_size=16
    )
    assert "shard-00000.npz is damaged" in capsys.readouterr().out
    assert rebuilt["count"] == reference["count"]
    np.testing.assert_allclose(np.load(out / "features.npy"), np.load(ref / "features.npy"), atol=1e-5)


def test_a_full_disk_ends_in_one_sentence_and_the_rerun_resumes(catalog_dir, tmp_path, random_weights, text_model):
    """A file-size limit (RLIMIT_FSIZE) stands in for a full disk: the shards fit under it, the fitted
    descriptors do not."""
    out = tmp_path / "index"
    cmd = precompute_command(catalog_dir, out, random_weights, text_model, "--batch-size", "4", "--shard-size", "8")
    limit = 400_000  # a shard of 8 is ~140-200 kB; the 48 products' descriptors are ~600 kB

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=small_files, timeout=300)
    assert full.returncode == 2, full.stderr[-2000:]
    assert "error: The disk is full" in full.stderr and "rerun the same command" in full.stderr
    assert "Traceback" not in full.stderr and not out.exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert re.search(r"Resuming after [1-9]\d* complete shard", rerun.stdout)
    assert artifacts.read_manifest(out)["count"] == 48
