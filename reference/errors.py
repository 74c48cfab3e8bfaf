"""One error family for every failure a user can act on.

Each subclass carries a ``status`` string: the batch tools write it into their per-file records,
so a caller can branch on the kind of failure without parsing messages. Bugs in this project stay
ordinary exceptions (and ``assert`` for invariants): they are not in this family.
"""


class TruForError(Exception):
    """A failure caused by an input, a file or the environment, with a message saying what to do."""

    status = "error"


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


class ExportError(TruForError):
    """Exporting or checking an ONNX graph failed."""

    status = "export_error"


class ArtifactError(TruForError):
    """Exported artifacts are missing, stale or do not match what was asked for."""

    status = "artifact_error"


class EngineBuildError(TruForError):
    """TensorRT could not parse a graph or build an engine from it."""

    status = "engine_error"


class BackendUnavailableError(TruForError):
    """An optional backend (TensorRT, CUDA, ONNX Runtime provider) is not installed or usable here."""

    status = "backend_unavailable"
