"""Turning command-line inputs (files, folders, globs, @lists) into image files with output names.

Each file gets a ``relpath``: its path relative to the root of the input that named it, which the
CLIs use to name outputs (``DIR/<relpath>.npz``), as the official script does. Folders are walked
recursively for files with an image extension; globs and lists take whatever they name, so a
non-image named explicitly gets a per-file error rather than being skipped silently.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .errors import TruForError

IMAGE_EXTENSIONS = frozenset(ext.lower() for ext in Image.registered_extensions())
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    path: Path
    relpath: str  # POSIX-style, relative to the input's root; never absolute


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _from_folder(folder: Path) -> list[InputFile]:
    return [
        InputFile(path, path.relative_to(folder).as_posix())
        for path in sorted(folder.rglob("*"))
        if path.is_file() and _is_image_name(path)
    ]


def _from_glob(pattern: str) -> list[InputFile]:
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if _GLOB_CHARS & set(part))
    root = Path(*parts[:fixed]) if fixed else Path(".")
    matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    return [InputFile(path, path.relative_to(root).as_posix()) for path in matches if path.is_file()]


def _from_list(list_file: Path) -> list[InputFile]:
    """One path per line (blank lines and # comments skipped); relative paths are taken from the CWD."""
    files = []
    for line in list_file.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            path = Path(line)
            kept = [part for part in path.parts if part not in (path.anchor, "..", ".")]
            files.append(InputFile(path, Path(*kept).as_posix()))
    return files


def collect_inputs(specs: list[str]) -> list[InputFile]:
    """Files for every spec: a file, a folder (recursive), a glob, or ``@list.txt`` of paths.

    Raises TruForError for a spec that names nothing, and when two different files would get the
    same output name (pass their common parent folder instead).
    """
    files: list[InputFile] = []
    for spec in specs:
        if spec.startswith("@"):
            list_file = Path(spec[1:])
            if not list_file.is_file():
                raise TruForError(f"input list {list_file} does not exist")
            files += _from_list(list_file)
        elif os.path.isdir(spec):
            files += _from_folder(Path(spec))
        elif os.path.exists(spec):
            files.append(InputFile(Path(spec), Path(spec).name))
        elif _GLOB_CHARS & set(spec):
            found = _from_glob(spec)
            if not found:
                raise TruForError(f"glob {spec!r} matches no file")
            files += found
        else:
            raise TruForError(f"input {spec!r} is not a file, folder, glob or @list")
    unique: dict[str, InputFile] = {}
    for item in files:
        previous = unique.setdefault(item.relpath, item)
        if previous.path.resolve() != item.path.resolve():
            raise TruForError(
                f"{previous.path} and {item.path} would both be written as {item.relpath!r}; "
                "pass their common parent folder instead"
            )
    return list(unique.values())
