"""Command-line plumbing shared by the scripts: user errors become one sentence and exit code 2."""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

from .errors import UserError

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
