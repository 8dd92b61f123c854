"""The build path, one stage a module: catalog source -> `decode` (processes) -> batched Embedder ->
`shards` (resumable) -> `fitting` (heads, search space, HNSW, manifest) -> publish; `runner` glues them,
and `ray_engine` runs the decoding and the Embedder on a Ray cluster instead."""

__all__ = ["precompute", "embed_catalog"]


def __getattr__(name: str):
    # Lazy, so a script can configure the runtime (recommender.runtime) before torch loads.
    if name in __all__:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'recommender.build' has no attribute {name!r}")
