"""The runtime layer's errors: its usage errors are the project's one ``UsageError`` (``reference.errors``),
which the weights flags every CLI shares (``reference.weights_args``) raise too."""

from reference.errors import TruForError, UsageError

__all__ = ["TruForError", "UsageError"]
