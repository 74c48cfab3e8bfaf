"""Where the project keeps what it downloads or derives: ``$TRUFOR_HOME``, else the XDG cache."""

from __future__ import annotations

import os
from pathlib import Path


def trufor_home() -> Path:
    """``$TRUFOR_HOME``, else ``$XDG_CACHE_HOME/trufor``, else ``~/.cache/trufor`` (not created here)."""
    if os.environ.get("TRUFOR_HOME"):
        return Path(os.environ["TRUFOR_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "trufor"
