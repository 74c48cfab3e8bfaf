"""The export layer's errors: a graph that cannot be made, artifacts that cannot be used, a missing optional package.

Subclasses of ``reference.errors.TruForError``, so the CLIs and the scanner handle them with the rest
of the family; the layers above (engines, runtime) raise these too.
"""

from reference.errors import TruForError


class ExportError(TruForError):
    """Exporting or checking an ONNX graph failed."""

    status = "export_error"


class ArtifactError(TruForError):
    """Exported artifacts are missing, stale or do not match what was asked for."""

    status = "artifact_error"


class BackendUnavailableError(TruForError):
    """An optional package or device (TensorRT, CUDA, an ONNX Runtime provider, the Triton client) is not usable here."""

    status = "backend_unavailable"
