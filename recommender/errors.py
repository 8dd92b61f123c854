"""Errors a user can cause: each carries one sentence that says what is wrong and what to do."""

from __future__ import annotations

import numbers


class UserError(ValueError):
    """A problem with the user's input or files, explained in one sentence."""


class ImageError(UserError):
    """The bytes given as an image cannot be used."""


class WeightsError(UserError):
    """Model weights cannot be found, read or trusted."""


class ArtifactsError(UserError):
    """An artifacts directory is missing, incomplete or does not match the model."""


def whole_number(value: object, name: str, low: int, high: float = float("inf")) -> int:
    """`value` as a whole number in low..high, or a UserError naming `name`: API clients send anything
    ("5" and 5.0 are fine; "All", 2.5, True or None are not)."""
    number = None
    if isinstance(value, (numbers.Real, str)) and not isinstance(value, bool):  # numbers.Real: numpy's too
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None or not number.is_integer() or not low <= number <= high:
        bounds = f"between {low} and {high:g}" if high != float("inf") else f"of {low} or more"
        raise UserError(f"{name} must be a whole number {bounds}; got {value!r}.")
    return int(number)
