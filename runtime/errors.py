"""The runtime layer's errors."""

from reference.errors import TruForError


class UsageError(TruForError):
    """Arguments that cannot be honoured together; the message names both sides, and the CLI exits 2."""

    status = "usage_error"
