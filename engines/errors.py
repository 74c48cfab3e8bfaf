"""The engines layer's errors: a TensorRT build that failed, an engine that cannot be used here, a CUDA call that failed."""

from export.errors import ArtifactError
from reference.errors import TruForError


class EngineBuildError(TruForError):
    """TensorRT could not parse a graph or build an engine from it."""

    status = "engine_error"


class EngineCacheError(ArtifactError):
    """An engine on disk cannot be used here: missing, corrupt, or built for something else."""

    status = "artifact_error"


class CudaError(TruForError):
    """A CUDA runtime call failed on a machine that has a GPU (out of memory, a kernel fault...)."""

    status = "cuda_error"
