"""Lazy imports for optional GPU packages: importing this project never needs TensorRT or CUDA.

``lazy_import`` returns a proxy that imports the module on first attribute access and, when that
fails, raises ``BackendUnavailableError`` saying which module is required, the import error and
what to install. Callers that only want to know use ``is_importable``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from export.errors import BackendUnavailableError


class LazyModule:
    """A module that is imported on first use; the first candidate name that imports wins."""

    def __init__(self, *names: str, install: str = ""):
        assert names, "lazy_import needs at least one module name"
        self._names = names
        self._install = install
        self._module: ModuleType | None = None
        self._error: str | None = None

    def _load(self) -> ModuleType:
        if self._module is None:
            errors = []
            for name in self._names:
                try:
                    self._module = importlib.import_module(name)
                    break
                # A broken wheel can raise anything while loading its shared library.
                except Exception as error:  # noqa: BLE001
                    errors.append(f"{name}: {type(error).__name__}: {error}")
            else:
                self._error = "; ".join(errors)
                hint = f" Install it with: {self._install}" if self._install else ""
                raise BackendUnavailableError(
                    f"{self._names[0]} is required but could not be imported; error was: {self._error}.{hint}"
                )
        return self._module

    def __getattr__(self, attribute: str):
        if attribute.startswith("__") and attribute.endswith("__"):
            raise AttributeError(attribute)  # keep copy/pickle/introspection from importing
        return getattr(self._load(), attribute)

    @property
    def module(self) -> ModuleType:
        """The real module (imports it now)."""
        return self._load()

    @property
    def is_importable(self) -> bool:
        try:
            self._load()
        except BackendUnavailableError:
            return False
        return True

    @property
    def import_error(self) -> str | None:
        """Why the last import failed, None when it worked or was not tried."""
        return self._error

    def __repr__(self) -> str:
        state = "loaded" if self._module is not None else "not loaded"
        return f"<lazy module {'|'.join(self._names)} ({state})>"


def lazy_import(*names: str, install: str = "") -> LazyModule:
    """A proxy for the first importable module of ``names``; see ``LazyModule``."""
    return LazyModule(*names, install=install)
