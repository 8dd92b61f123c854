"""The app follows its index: a version newly published at the index folder (by a build or an update,
which turn the folder's link to it in one rename) is loaded beside the one serving, checked, and swapped
in between queries. Queries under way finish on the old one, which goes with its last reference; a
version that fails its checks is refused in one sentence in the log, and the old one keeps serving."""

from __future__ import annotations

import gc
import logging
import threading
import time
from pathlib import Path
from typing import Callable

from .. import artifacts
from ..errors import UserError
from ..runtime import release_freed_memory
from .recommender import Recommender
from .service import Service

log = logging.getLogger(__name__)
POLL_S = 5.0  # how often the index folder's link is read: one readlink, nothing else


class IndexFollower:
    """Watches `index_dir` for a newly published version and swaps `service` to it. `load` opens a version
    whose model differs from the one serving (a full rebuild: another int8 calibration); a version with the
    same model (an update) shares the serving one's models. `on_swap` runs after each swap (e.g. to forget
    cached answers)."""

    def __init__(
        self,
        service: Service,
        index_dir: Path,
        load: Callable[[Path], Recommender],
        on_swap: Callable[[], None] | None = None,
        every_s: float = POLL_S,
    ) -> None:
        self.service, self.index_dir, self.load, self.on_swap, self.every_s = service, index_dir, load, on_swap, every_s
        self.serving = self._version()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _version(self) -> Path | None:
        try:
            return self.index_dir.resolve(strict=True)
        except OSError:  # none yet, or a publish half-way on a file system without an atomic exchange
            return None

    def check(self) -> bool:
        """Swap to a newly published version, if there is one: True when it did."""
        version, current = self._version(), self.service.serving
        if version is None or version == self.serving or current is None:  # the first index is open_index's
            return False
        self.serving = version  # a version that fails its checks is not tried again
        if current.version == version:  # the one serving (a starter index built meanwhile)
            return False
        started = time.perf_counter()
        try:
            manifest = artifacts.read_manifest(version, verify=False)
            if manifest["model"] == current.manifest["model"]:
                fresh = Recommender.load(version, embedder=current.embedder, text_encoder=current.text_encoder)
            else:
                fresh = self.load(version)
        except UserError as error:
            log.warning("The index published at %s is not served, the one before goes on: %s", version, error)
            return False
        self.service.set_recommender(fresh)
        del current
        gc.collect()  # the old index's arrays go now, not at some later collection
        release_freed_memory()
        if self.on_swap is not None:
            self.on_swap()
        log.warning(
            "Now serving the index version %s (%d products), loaded in %.1f s.",
            version.name,
            len(fresh.metadata),
            time.perf_counter() - started,
        )
        return True

    def start(self) -> IndexFollower:
        def run() -> None:
            while not self._stop.wait(self.every_s):
                try:
                    self.check()
                except Exception:  # the app keeps serving the version it has
                    log.exception("checking the index folder for a new version failed")

        self._thread = threading.Thread(target=run, name="index-follower", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
