"""Errors a user can cause. The CLI prints their message as one sentence and exits with status 2."""


class HairTryOnError(Exception):
    """Base class of every error caused by the user's input or environment (not a bug)."""


class ImageLoadError(HairTryOnError):
    """A file could not be read as an image."""


class NoFaceFound(HairTryOnError):
    """No face was detected in an image."""


class WeightsError(HairTryOnError):
    """Model weights are missing, corrupt, or cannot be downloaded."""
