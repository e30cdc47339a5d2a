"""Errors a user can cause. The CLI prints their message as one sentence and exits with status 2.

Every message is one line. Messages about a photo name it and, where the photo has a role in the
try-on, say which one it is ("the target photo me.jpg", "the source photo bob.png").
"""


class HairTryOnError(Exception):
    """Base class of every error caused by the user's input or environment (not a bug)."""


class ImageLoadError(HairTryOnError):
    """A file could not be read as an image (missing, a folder, not an image, truncated, too large)."""


class ImageTooLarge(ImageLoadError):
    """An image has more pixels than the limit (checked from the file's header, before decoding)."""


class NoFaceFound(HairTryOnError):
    """No face was detected in an image (or the face asked for does not exist)."""


class OutputPathError(HairTryOnError):
    """An output path cannot be written: unknown format, a folder, not writable, or one of the inputs."""


class WeightsError(HairTryOnError):
    """Model weights are missing, corrupt, or cannot be downloaded."""


def describe(name: str = "", role: str = "") -> str:
    """How a message names a photo: ``describe("me.jpg", "target")`` -> "the target photo me.jpg";
    without a role "me.jpg"; without a name "the target photo" (or "the image")."""
    if role and name:
        return f"the {role} photo {name}"
    if role:
        return f"the {role} photo"
    return name or "the image"
