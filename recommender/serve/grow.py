"""The whole catalog, grown in the background. An app serving its starter index builds the full catalog
beside it: scripts/precompute.py in a child process, publishing at the index folder, where the
IndexFollower swaps to it. The build's shards survive a restart (the next start resumes after the last
complete one), and it yields the CPU to queries: lowest priority, one thread, and stopped (SIGSTOP) while a
query runs (docs/benchmarks.md#background-build)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import artifacts
from .activity import QUERIES, Activity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Yielding:
    """How the background build steps aside for queries."""

    nice: int = 19  # the scheduler's lowest priority
    idle: bool = True  # and its idle class (SCHED_IDLE): it runs only on a core nothing else wants
    threads: int = 1  # the model's threads (the decode process is one more)
    pause: bool = True  # stopped while a query runs
    grace_s: float = 0.05  # resumed once no query has run for this long
    # Under steady traffic it would never run: after this long stopped, it runs `run_s` whatever comes.
    max_pause_s: float = 30.0
    run_s: float = 2.0


def build_command(
    script: Path, source: str, index_dir: Path, weights: str | None, text_model: str | None, precision: str
) -> list[str]:
    """scripts/precompute.py (`script`) building `source` at `index_dir`, as a user would run it, with one
    decode process; a rerun resumes from its shards."""
    models = [f"--weights={weights}"] if weights else []
    models += [f"--text-model={text_model}"] if text_model else []
    command = [sys.executable, str(script), "--source", source, "--out", str(index_dir), "--workers", "1"]
    return [*command, "--quiet", f"--precision={precision}", *models]


class Growth:
    """Runs `command` (a precompute building `index_dir`) in its own process group and reports on it."""

    def __init__(
        self, command: list[str], index_dir: Path, yielding: Yielding = Yielding(), activity: Activity = QUERIES
    ) -> None:
        self.command, self.index_dir, self.yielding, self.activity = command, index_dir, yielding, activity
        self.state = "starting"  # then "running", and "done", "failed" or "stopped"
        self.failure: str | None = None  # the build's own sentence, when it failed
        self.pauses = 0
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._paused = False
        self._paused_at = 0.0
        self._run_until = 0.0
        self._thread: threading.Thread | None = None

    # --- life cycle -------------------------------------------------------------------------------

    def start(self) -> Growth:
        self._thread = threading.Thread(target=self._run, name="catalog-growth", daemon=True)
        self._thread.start()
        return self

    def _spawn(self) -> subprocess.Popen:
        threads = str(self.yielding.threads)
        env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        # The build dies with the app (a restart resumes it; an orphan would hold the index's build lock).
        # The signal is tied to the thread that starts the child: this one, which lives as long as it does.
        prefix = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
        process = subprocess.Popen(
            [*prefix, *self.command],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            # Its own process group (the decode process is stopped with it) in the app's session: with
            # autogroup scheduling a new session would get a share of the CPU equal to the app's whatever
            # its priority.
            process_group=0,
        )
        # The decode process, started later, inherits both.
        os.setpriority(os.PRIO_PROCESS, process.pid, self.yielding.nice)
        if self.yielding.idle:
            os.sched_setscheduler(process.pid, os.SCHED_IDLE, os.sched_param(0))
        return process

    def _run(self) -> None:
        try:
            process = self._spawn()
        except OSError as error:
            self.state, self.failure = "failed", f"The background build could not start ({error})."
            log.warning("%s The app goes on serving the index it has.", self.failure)
            return
        with self._lock:
            self._process = process
            if self.state == "stopped":  # stopped while it started
                os.killpg(process.pid, signal.SIGKILL)
            else:
                self.state = "running"
        if self.yielding.pause:
            self.activity.on_start(self._pause)
            threading.Thread(target=self._resume_when_idle, name="catalog-growth-resume", daemon=True).start()
        last_error = None
        assert process.stdout is not None
        for line in process.stdout:  # the build's own lines, in the app's log
            line = line.rstrip()
            if line:
                print(f"[whole catalog] {line}", flush=True)
            if line.startswith("error: "):
                last_error = line.removeprefix("error: ")
        code = process.wait()
        self.activity.remove(self._pause)
        with self._lock:
            if self.state == "stopped":
                return
            if code == 0:
                self.state = "done"
                log.warning("The whole catalog is built at %s; the app switches to it.", self.index_dir)
            else:
                self.state = "failed"
                self.failure = last_error or f"the build ended with exit status {code}"
                log.warning(
                    "The whole catalog could not be built (%s); the app goes on serving the index it has.", self.failure
                )

    def stop(self) -> None:
        """End the build now (a rerun resumes it)."""
        with self._lock:
            process, self.state = self._process, "stopped"
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    # --- yielding to queries ----------------------------------------------------------------------

    def _signal(self, number: int) -> None:
        """To the build's process group (called only while it runs)."""
        try:
            os.killpg(self._process.pid, number)
        except ProcessLookupError:
            pass  # it has just ended

    def _pause(self) -> None:
        """A query starts: stop the build (the first query of a burst; one system call)."""
        with self._lock:
            if self._paused or self.state != "running" or time.monotonic() < self._run_until:
                return
            self._signal(signal.SIGSTOP)
            self._paused, self._paused_at = True, time.monotonic()
            self.pauses += 1

    def _resume_when_idle(self) -> None:
        process = self._process
        while process is not None and process.poll() is None:
            time.sleep(0.05)
            with self._lock:
                if not self._paused:
                    continue
                now = time.monotonic()
                starved = now - self._paused_at >= self.yielding.max_pause_s
                if self.activity.idle_for() >= self.yielding.grace_s or starved:
                    self._signal(signal.SIGCONT)
                    self._paused = False
                    if starved:
                        self._run_until = now + self.yielding.run_s

    # --- reporting --------------------------------------------------------------------------------

    def progress(self) -> artifacts.BuildProgress | None:
        return artifacts.read_progress(self.index_dir)

    def sentence(self) -> str | None:
        """What the page says of it while it runs (a failure is the log's, not the visitors'; once it is
        published, the catalog's size says the rest)."""
        if self.state not in ("starting", "running"):
            return None
        ready = "the app switches to it when it is done"
        progress = self.progress()
        if progress is not None and progress.stage == "fitting":
            return f"Indexing the whole catalog in the background: every product embedded, fitting its index; {ready}."
        if progress is None:
            return f"Indexing the whole catalog in the background; {ready}."
        of = f" of {progress.total:,}" if progress.total else ""
        return f"Indexing the whole catalog in the background: **{progress.indexed:,}{of}** products indexed; {ready}."
