"""The whole catalog grown in the background: the app serving its starter index builds the full catalog in
a child process that yields to queries, survives the app's restart by resuming from its shards, dies with
the app, shows its progress, and is swapped in when published."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from recommender import Recommender, artifacts
from recommender.serve.activity import Activity
from recommender.serve.follow import IndexFollower
from recommender.serve.grow import Growth, Yielding, build_command
from recommender.serve.service import Service
from tests.helpers import ROOT, make_catalog, sample_rows

PRECOMPUTE = ROOT / "scripts" / "precompute.py"


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.05)


def process_state(pid: int) -> str:
    """R, S, T (stopped), Z …, from /proc; X when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


def lock_is_free(index: Path) -> bool:
    with open(index.with_name(index.name + ".lock"), "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def complete_shards(index: Path) -> int:
    return len(list((artifacts.partial_of(index) / "shards").glob("shard-*.npz")))


def test_the_whole_catalog_grows_survives_a_restart_and_is_swapped_in(
    reference_build, embedder, text_encoder, random_weights, text_model, tmp_path, capsys
):
    index = tmp_path / "index"  # the starter index: 48 products
    shutil.copytree(reference_build[1], index)
    full = make_catalog(tmp_path / "full", sample_rows(72))
    command = build_command(PRECOMPUTE, str(full), index, str(random_weights), str(text_model), "fp32")
    command += ["--batch-size", "4", "--shard-size", "8"]
    service = Service()
    service.set_recommender(Recommender.load(index, embedder=embedder, text_encoder=text_encoder))
    follower = IndexFollower(service, index, load=lambda v: pytest.fail("the model did not change"))

    # The app, started: it grows the catalog, and is killed (SIGKILL, as a restart does) two shards in.
    app = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import time
                from pathlib import Path
                from recommender.serve.grow import Growth
                Growth({command!r}, Path({str(index)!r})).start()
                time.sleep(300)
            """),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: complete_shards(index) >= 2, 120, "two complete shards")
        progress = artifacts.read_progress(index)
        assert progress is not None and progress.total == 72 and 8 <= progress.indexed < 72
    finally:
        os.killpg(app.pid, signal.SIGKILL)
        app.wait()
    # The build died with the app: nothing holds the index's build lock, and nothing was published.
    wait_for(lambda: lock_is_free(index), 10, "the build's end with the app")
    assert index.resolve() == service.serving.version

    # The app restarted: the build resumes from its shards, is published, and the app swaps to it.
    growth = Growth(command, index).start()
    wait_for(lambda: growth.state in ("done", "failed"), 180, "the resumed build's end")
    assert growth.state == "done", growth.failure
    assert "Resuming after" in capsys.readouterr().out
    assert growth.sentence() is None and artifacts.read_progress(index) is None
    assert follower.check() and service.catalog_size() == 72


def test_the_build_runs_at_lowest_priority_on_one_thread_and_stops_while_a_query_runs(tmp_path):
    activity = Activity()
    sleeper = [sys.executable, "-c", "import time\nwhile True: time.sleep(0.01)"]
    growth = Growth(sleeper, tmp_path / "index", Yielding(max_pause_s=1.0, run_s=0.5), activity).start()
    try:
        wait_for(lambda: growth.pid is not None and process_state(growth.pid) in "RS", 10, "the start")
        pid = growth.pid
        assert os.getpriority(os.PRIO_PROCESS, pid) == 19 and os.sched_getscheduler(pid) == os.SCHED_IDLE
        assert os.getsid(pid) == os.getsid(0)  # the app's session: autogroup scheduling would undo the priority
        assert b"OMP_NUM_THREADS=1\0" in Path(f"/proc/{pid}/environ").read_bytes()
        with activity.query():
            wait_for(lambda: process_state(pid) == "T", 2, "the stop while a query runs")
        wait_for(lambda: process_state(pid) in "RS", 2, "the resume after the query")
        # Under steady traffic it still runs now and then.
        with activity.query():
            wait_for(lambda: process_state(pid) == "T", 2, "the stop")
            wait_for(lambda: process_state(pid) in "RS", 3, "a run while a query goes on too long")
    finally:
        growth.stop()
    assert growth.state == "stopped" and process_state(pid) in "XZ"


def test_a_build_that_fails_says_why_in_the_log_and_not_on_the_page(tmp_path, caplog):
    command = build_command(PRECOMPUTE, str(tmp_path / "no-such-catalog"), tmp_path / "index", None, None, "fp32")
    growth = Growth(command, tmp_path / "index").start()
    wait_for(lambda: growth.state in ("done", "failed"), 120, "the build's end")
    assert growth.state == "failed" and "not found" in growth.failure
    assert "could not be built" in caplog.text and growth.sentence() is None


def test_the_page_says_how_far_the_build_has_come(tmp_path):
    index = tmp_path / "index"
    growth = Growth(["true"], index)
    growth.state = "running"
    assert "Indexing the whole catalog in the background; the app switches" in growth.sentence()
    artifacts.partial_of(index).mkdir(parents=True)
    artifacts.write_progress(artifacts.partial_of(index), artifacts.BuildProgress(12400, 44072, "embedding"))
    assert "**12,400 of 44,072** products indexed" in growth.sentence()
    artifacts.write_progress(artifacts.partial_of(index), artifacts.BuildProgress(44072, 44072, "fitting"))
    assert "every product embedded, fitting its index" in growth.sentence()


def test_the_app_grows_only_from_its_starter_index(reference_build, random_weights, text_model, tmp_path, monkeypatch):
    import json

    import gradio as gr

    import app as app_module

    grown = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: None)
    monkeypatch.setattr(app_module, "grow_when_ready", lambda service, growth: grown.append(growth.command))
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path / "examples"))
    starter = tmp_path / "starter"
    shutil.copytree(reference_build[1], starter)
    manifest = json.loads((starter / "manifest.json").read_text())
    manifest["source"]["source"] = str(app_module.SAMPLE)
    (starter / "manifest.json").write_text(json.dumps(manifest))
    common = ["--weights", str(random_weights), "--text-model", str(text_model), "--precision", "fp32"]

    assert app_module.main(["--index", str(starter), *common, "--grow-source", "FULL"]) == 0
    assert len(grown) == 1 and grown[0][grown[0].index("--source") + 1] == "FULL"
    assert grown[0][grown[0].index("--out") + 1] == str(starter)
    assert app_module.main(["--index", str(starter), *common, "--grow-source", "none"]) == 0
    assert app_module.main(["--index", str(reference_build[1]), *common]) == 0  # someone's own index
    assert len(grown) == 1
