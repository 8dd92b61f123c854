"""The environment, read in this one place: the defaults of app.py's and the scripts' options (a flag
beats the environment, which beats the default). The rest of the package reads no variable itself."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PRECISIONS = ("auto", "fp32", "bf16", "int8", "ort-int8")
DEFAULT_QUERY_BATCH = 16  # the build's CPU batch: the model's best measured images/s


@dataclass(frozen=True)
class Settings:
    index: Path | None  # RECOMMENDER_INDEX: the index folder the app serves
    weights: str | None  # RECOMMENDER_WEIGHTS: ResNet50 weights file (None: the Hub)
    text_model: str | None  # RECOMMENDER_TEXT_MODEL: all-MiniLM-L6-v2 folder (None: the Hub)
    precision: str  # RECOMMENDER_PRECISION: the model's path (auto, fp32, bf16, int8, ort-int8)
    index_repo: str | None  # RECOMMENDER_INDEX_REPO: a Hub dataset repo holding a built index
    grow_source: str | None  # RECOMMENDER_GROW_SOURCE: the catalog built in the background ("none": none)
    share: bool  # RECOMMENDER_SHARE=1: a public link
    no_mcp: bool  # RECOMMENDER_NO_MCP=1: no MCP tools
    host: str  # GRADIO_SERVER_NAME
    port: int  # GRADIO_SERVER_PORT
    query_batch: int  # RECOMMENDER_QUERY_BATCH: the most queries one forward pass takes (1: each alone)
    # RECOMMENDER_TEST_ALLOW_ADDRESSES: exact non-public addresses (e.g. 127.0.0.1) the URL fetcher may
    # reach, for tests and load runs only
    test_allow_addresses: frozenset[str]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        batch = env.get("RECOMMENDER_QUERY_BATCH", "").strip()
        port = env.get("GRADIO_SERVER_PORT", "").strip()
        return cls(
            index=Path(env["RECOMMENDER_INDEX"]) if env.get("RECOMMENDER_INDEX") else None,
            weights=env.get("RECOMMENDER_WEIGHTS") or None,
            text_model=env.get("RECOMMENDER_TEXT_MODEL") or None,
            precision=env.get("RECOMMENDER_PRECISION") or "auto",
            index_repo=env.get("RECOMMENDER_INDEX_REPO") or None,
            grow_source=env.get("RECOMMENDER_GROW_SOURCE") or None,
            share=env.get("RECOMMENDER_SHARE", "") == "1",
            no_mcp=env.get("RECOMMENDER_NO_MCP", "") == "1",
            host=env.get("GRADIO_SERVER_NAME") or "127.0.0.1",
            port=int(port) if port.isdigit() else 7860,
            query_batch=max(1, int(batch)) if batch.isdigit() else DEFAULT_QUERY_BATCH,
            test_allow_addresses=frozenset(a for a in env.get("RECOMMENDER_TEST_ALLOW_ADDRESSES", "").split(",") if a),
        )
