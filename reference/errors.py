"""The root of the one error family for every failure a user can act on, and the model's own errors.

Each subclass carries a ``status`` string: the batch tools write it into their per-file records,
so a caller can branch on the kind of failure without parsing messages. Each layer defines the
errors it raises beside its code (``export.errors``, ``engines.errors``, ``runtime.errors``), all
subclasses of ``TruForError``. Bugs in this project stay ordinary exceptions (and ``assert`` for
invariants): they are not in this family.
"""


class TruForError(Exception):
    """A failure caused by an input, a file or the environment, with a message saying what to do."""

    status = "error"


class UsageError(TruForError):
    """Arguments that cannot be honoured together; the message names both sides, and a CLI exits 2."""

    status = "usage_error"


class CheckpointError(TruForError):
    """A checkpoint cannot be read safely or does not match the model."""

    status = "checkpoint_error"


class ImageError(TruForError):
    """An input image cannot be turned into the model's RGB input."""

    status = "decode_error"


class ImageDecodeError(ImageError):
    """The file is not an image, or is corrupt or truncated."""

    status = "decode_error"


class ImageTooLargeError(ImageError):
    """The image has more pixels than the configured limit (including decompression bombs)."""

    status = "too_large"


class ImageTooSmallError(ImageError):
    """The image is below the model's minimum size (29 x 29)."""

    status = "too_small"


class UnsupportedImageModeError(ImageError):
    """The pixel format has no faithful conversion to 8-bit RGB."""

    status = "unsupported_mode"
