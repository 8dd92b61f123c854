"""Errors a user can cause: each carries one sentence that says what is wrong and what to do."""


class UserError(ValueError):
    """A problem with the user's input or files, explained in one sentence."""


class ImageError(UserError):
    """The bytes given as an image cannot be used."""


class WeightsError(UserError):
    """Model weights cannot be found, read or trusted."""


class ArtifactsError(UserError):
    """An artifacts directory is missing, incomplete or does not match the model."""
