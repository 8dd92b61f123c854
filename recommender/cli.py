"""Command-line plumbing shared by the scripts: user errors become one sentence and exit code 2; the
models' options."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, TypeVar

from .errors import UserError
from .settings import PRECISIONS, Settings

T = TypeVar("T")


def run_cli(job: Callable[[], T]) -> T | None:
    """Run `job`; print a user error as one line on stderr (no traceback) and return None."""
    try:
        return job()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    except KeyboardInterrupt:
        print("Interrupted; rerun the same command to resume from the last complete shard.", file=sys.stderr)
        sys.exit(130)


def run_main(main: Callable[[], int]) -> int:
    """A script's `main`, with a user error printed as one line and exit code 2."""
    result = run_cli(main)
    return 2 if result is None else result


def add_model_options(parser: argparse.ArgumentParser, text: bool = True) -> None:
    """--weights (and --text-model): the models' local files, defaulting to the environment, then the Hub."""
    settings = Settings.from_env()
    parser.add_argument(
        "--weights",
        default=settings.weights,
        help="ResNet50 weights file (.safetensors/.pth); default: $RECOMMENDER_WEIGHTS, then the Hub",
    )
    if text:
        parser.add_argument(
            "--text-model",
            default=settings.text_model,
            help="all-MiniLM-L6-v2 folder; default: $RECOMMENDER_TEXT_MODEL, then the Hub",
        )


def add_precision_option(parser: argparse.ArgumentParser, auto: str) -> None:
    """--precision, the model's path (`auto`: what auto means for this command)."""
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=Settings.from_env().precision, help=f"the model's path; auto: {auto}"
    )


def model_options(args: argparse.Namespace) -> list[str]:
    """The model options given to this command, to pass on to a child command."""
    out = ["--weights", args.weights] if args.weights else []
    return out + (["--text-model", args.text_model] if getattr(args, "text_model", None) else [])
