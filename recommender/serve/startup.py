"""Which index the app serves: a local one, one downloaded from the Hub, or a starter index built from
the bundled sample while the app starts."""

from __future__ import annotations

import json
from pathlib import Path

from .. import artifacts
from ..errors import ArtifactsError
from .recommender import Recommender
from .service import Service


def starter_index(
    index_dir: Path, sample: Path, weights: str | None, text_model: str | None, precision: str = "auto"
) -> Recommender:
    """Build the index from the bundled ~1,000-product sample (progress on the console)."""
    from ..build import precompute
    from ..catalog import CatalogSource
    from ..embedder import Embedder
    from ..text_model import TextEncoder

    embedder, text_encoder = Embedder(weights, precision=precision), TextEncoder(text_model)
    print(f"Building a starter index at {index_dir} from {sample} ({embedder.build_precision}) …", flush=True)
    precompute(CatalogSource(str(sample)), index_dir, embedder, text_encoder)
    return Recommender.load(index_dir, embedder=embedder, text_encoder=text_encoder)


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
) -> str:
    """Serve the index at `index_dir` (downloaded first from the Hub dataset `repo`, if given and absent):
    "serving". With no index there, or a starter index this version cannot read (built by an older one,
    or with other weights or text model), the starter index is built in the background while the app
    starts: "building". `precision`: the model's path (Embedder); auto follows the index."""
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
    service.load_in_background(lambda: starter_index(index_dir, sample, weights, text_model, precision))
    return "building"
