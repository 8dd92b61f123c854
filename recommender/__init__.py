"""Visual fashion recommender: ResNet50 embeddings, an HNSW index with exact filters, attribute heads.

`recommender.build` holds the build path (precompute), `recommender.serve` the query path (Recommender,
Service, the Gradio adapters); the modules beside them are what both share."""

from .errors import ArtifactsError, ImageError, UserError, WeightsError

__all__ = ["Recommender", "Match", "UserError", "ImageError", "ArtifactsError", "WeightsError"]


def __getattr__(name: str):
    # Lazy, so `recommender.runtime` can be configured before torch loads.
    if name in ("Recommender", "Match"):
        from .serve import recommender

        return getattr(recommender, name)
    raise AttributeError(f"module 'recommender' has no attribute {name!r}")
