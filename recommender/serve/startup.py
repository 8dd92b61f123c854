"""Which index the app serves: a local one, one downloaded from the Hub, or a starter index built from
the bundled sample while the app starts (by the build side's `build.starter`, handed in by the app)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .. import artifacts
from ..errors import ArtifactsError
from .recommender import Recommender
from .service import Service

if TYPE_CHECKING:
    from ..embedder import Embedder
    from ..text_model import TextEncoder
    from .grow import Growth

StarterBuild = Callable[[], "tuple[Embedder, TextEncoder]"]


def built_from_sample(index_dir: Path, sample: Path) -> bool:
    """Whether the index at `index_dir` is a starter index: built from the bundled sample, so rebuilding it
    loses nothing."""
    try:  # not artifacts.read_manifest: it refuses other schema versions, one more case where rebuilding is right
        source = json.loads((index_dir / artifacts.MANIFEST).read_text())["source"]["source"]
        return Path(source).resolve() == sample.resolve()
    except (OSError, ValueError, KeyError, TypeError):
        return False


def open_index(
    service: Service,
    index_dir: Path,
    sample: Path,
    weights: str | None,
    text_model: str | None = None,
    repo: str | None = None,
    precision: str = "auto",
    build_starter: StarterBuild | None = None,
) -> str:
    """Serve the index at `index_dir` (downloaded first from the Hub dataset `repo`, if given and absent):
    "serving". With no index there, or a starter index this version cannot read (built by an older one,
    or with other weights or text model), the starter index is built in the background while the app
    starts: "building" (`build_starter` builds it at `index_dir` and returns the models it used). An index
    left half-published by a stopped build is refused in one sentence. `precision`: the model's path
    (Embedder); auto follows the index."""
    artifacts.check_published(index_dir)  # a build stopped while publishing: say so, never serve the starter
    if repo and not index_dir.exists():
        artifacts.download_from_hub(repo, index_dir)
    if index_dir.exists():
        try:
            rec = Recommender.load(index_dir, weights=weights, text_model=text_model, precision=precision)
            service.set_recommender(rec)
            return "serving"
        except ArtifactsError as error:
            if not built_from_sample(index_dir, sample):
                raise  # someone's own index must be sound: refuse to start rather than serve wrong results
            reason = str(error).split(";")[0]  # the sentence's advice (rebuild, pass --weights) is what happens here
            print(f"{reason}: it is the app's starter index, so the app rebuilds it.", flush=True)
    if build_starter is None:
        raise ArtifactsError(
            f"No index at {index_dir}; build one with `python scripts/precompute.py --source SRC --out {index_dir}`."
        )

    def starter() -> Recommender:
        embedder, text_encoder = build_starter()
        return Recommender.load(index_dir, embedder=embedder, text_encoder=text_encoder)

    service.load_in_background(starter)
    return "building"


def grow_when_ready(service: Service, growth: Growth) -> None:
    """Build the whole catalog in the background (`growth`) once the first index serves: the two builds
    would share the CPU and the index folder's build lock."""
    service.growth = growth

    def run() -> None:
        service.wait_ready()
        growth.start()

    threading.Thread(target=run, name="catalog-growth-wait", daemon=True).start()
