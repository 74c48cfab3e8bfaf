"""Which weights a model gets: the project's default model, the authors' release, a zip, a file, or random.

``resolve_weights`` is the one place every CLI (``--weights``, ``reference.weights_args``) and the
Python API turn a weights choice into a file and a preset:

- nothing: the project's own trained model, ``reference/default_model/trufor_lite.pth.tar``
  (``DEFAULT_MODEL``), announced on stderr once per process;
- ``official``: the authors' released weights, fetched and cached as below;
- a path ending in ``.zip``: the authors' ``TruFor_weights.zip``, checked and unpacked the same way;
- any other path: a checkpoint file (the official layout, a bare state_dict, a training checkpoint);
- ``random_weights``: an untrained model of the preset, for pipeline tests, and nothing else gives one.

The preset is the one the checkpoint records (its ``"preset"`` entry; the authors' release is
``trufor``), else the one asked for, else ``trufor``; asking for another than the recorded one is an error.

``official`` downloads ``TruFor_weights.zip`` from GRIP-UNINA (or ``TRUFOR_WEIGHTS_URL``, a
mirror: that link has been down for weeks at a time), checks its MD5 against the authors'
published one (or ``TRUFOR_WEIGHTS_MD5``) before anything is unpacked, and keeps only
``trufor.pth.tar`` under ``$TRUFOR_HOME/weights/<md5>/``. Loading then goes through the
project's safe loader (``weights_only=True``), like any other checkpoint.

Failure modes are those of real networks and shared caches: a transfer that breaks or a body
whose checksum differs leaves nothing in the cache (pooch downloads to a temporary file and
renames it only once the checksum matches); two processes fetching at once take a file lock,
so the second finds the first's result; a zip whose entries are absolute or climb out with
``..`` is refused whole.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .config import PRESETS
from .errors import CheckpointError
from .home import trufor_home
from .outputs import atomic_write

OFFICIAL_URL = "https://www.grip.unina.it/download/prog/TruFor/TruFor_weights.zip"
OFFICIAL_MD5 = "7bee48f3476c75616c3c5721ab256ff8"
CHECKPOINT_NAME = "trufor.pth.tar"
OFFICIAL = "official"
OFFICIAL_PRESET = "trufor"  # the architecture of the authors' release
DEFAULT_PRESET = "trufor"  # a checkpoint that records none, and --random-weights without --preset
DEFAULT_MODEL = Path(__file__).resolve().parent / "default_model" / "trufor_lite.pth.tar"
MODEL_CARD = "reference/default_model/MODEL_CARD.md"
LICENCE = (
    "The TruFor weights are (c) GRIP-UNINA, University Federico II of Naples, licensed for "
    "non-commercial use only (informational and nonprofit purposes; cite Guillaro et al., CVPR 2023)."
)


@dataclass(frozen=True)
class WeightsSource:
    url: str
    md5: str

    @classmethod
    def from_environment(cls, url: str | None = None, md5: str | None = None) -> WeightsSource:
        """Arguments first, then ``TRUFOR_WEIGHTS_URL`` / ``TRUFOR_WEIGHTS_MD5``, then the authors'."""
        return cls(
            url or os.environ.get("TRUFOR_WEIGHTS_URL") or OFFICIAL_URL,
            (md5 or os.environ.get("TRUFOR_WEIGHTS_MD5") or OFFICIAL_MD5).lower(),
        )


def file_md5(path: Path) -> str:
    return _file_digest(path, hashlib.md5(usedforsecurity=False))


def sha256_file(path: str | os.PathLike) -> str:
    """The file's sha256, as manifests and model identities record it."""
    return _file_digest(path, hashlib.sha256())


def _file_digest(path: str | os.PathLike, digest) -> str:
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checkpoint_member(archive: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    """The ``trufor.pth.tar`` entry, after refusing the archive if any entry could escape its folder."""
    for info in archive.infolist():
        parts = Path(info.filename.replace("\\", "/")).parts
        if info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise CheckpointError(f"{name} has an entry with an unsafe path ({info.filename!r}); refusing the archive")
    members = [info for info in archive.infolist() if Path(info.filename).name == CHECKPOINT_NAME and not info.is_dir()]
    if len(members) != 1:
        raise CheckpointError(f"{name} should hold one {CHECKPOINT_NAME}, found {len(members)}")
    return members[0]


def extract_checkpoint(zip_path: Path, destination: Path) -> Path:
    """Unpack the archive's ``trufor.pth.tar`` into ``destination`` (atomically) and return its path."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            member = _checkpoint_member(archive, str(zip_path))
            target = destination / CHECKPOINT_NAME

            def copy(file) -> None:
                with archive.open(member) as source:
                    while block := source.read(1 << 20):
                        file.write(block)

            atomic_write(target, copy)
    except zipfile.BadZipFile as error:
        raise CheckpointError(f"{zip_path} is not a readable zip archive ({error})") from error
    return target


def official_weights(source: WeightsSource | None = None, home: Path | None = None) -> Path:
    """The cached ``trufor.pth.tar`` of ``source``, downloaded and verified first if need be."""
    import pooch
    import requests
    from filelock import FileLock

    source = source or WeightsSource.from_environment()
    folder = (home or trufor_home()) / "weights" / source.md5
    target = folder / CHECKPOINT_NAME
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / ".lock")):
        if target.is_file():  # another process fetched it while this one waited
            return target
        print(f"Downloading the TruFor weights from {source.url} (MD5 {source.md5}) into {folder}", file=sys.stderr)
        try:
            archive = Path(pooch.retrieve(source.url, known_hash=f"md5:{source.md5}", fname="TruFor_weights.zip",
                                          path=folder, progressbar=True))
        except ValueError as error:  # pooch's checksum mismatch names both checksums
            raise CheckpointError(f"{source.url}: {error}. Nothing was cached; if this is a trusted mirror with "
                                  "another archive, set TRUFOR_WEIGHTS_MD5 (or --weights-md5)") from error
        except requests.RequestException as error:
            raise CheckpointError(f"could not download {source.url}: {error}. Nothing was cached; retry, or point "
                                  "TRUFOR_WEIGHTS_URL (--weights-url) at a mirror, or pass --weights PATH to "
                                  "TruFor_weights.zip or trufor.pth.tar") from error
        extract_checkpoint(archive, folder)
        archive.unlink()
    print(f"{LICENCE}\nCached at {target}", file=sys.stderr)
    return target


def weights_from_zip(zip_path: Path, source: WeightsSource | None = None, home: Path | None = None) -> Path:
    """A local ``TruFor_weights.zip``: verified like a download, unpacked into the same cache."""
    source = source or WeightsSource.from_environment()
    actual = file_md5(zip_path)
    if actual != source.md5:
        raise CheckpointError(f"{zip_path} has MD5 {actual}, expected {source.md5} (the authors' release); "
                              "for another trusted archive set TRUFOR_WEIGHTS_MD5 (or --weights-md5)")
    folder = (home or trufor_home()) / "weights" / actual
    target = folder / CHECKPOINT_NAME
    if not target.is_file():
        extract_checkpoint(zip_path, folder)
        print(f"{LICENCE}\nCached at {target}", file=sys.stderr)
    return target


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights choice made concrete: the checkpoint file (None: random weights), the preset it loads
    into, how to name it (manifests, scan.json, reports) and the flags that choose it again."""

    path: Path | None
    preset: str
    description: str
    argv: tuple[str, ...] = ()  # () for the default model: no flag chooses it

    @property
    def random(self) -> bool:
        return self.path is None

    @functools.cached_property
    def sha256(self) -> str | None:
        return None if self.path is None else sha256_file(self.path)

    def build(self, **overrides):
        """The model with these weights, in eval mode; ``overrides`` replace preset fields."""
        from .build import build_trufor  # torch loads here, not when the CLIs parse their flags

        return build_trufor(self.preset, self.path, **overrides)


_announced: set[Path] = set()


def default_model_problem() -> str | None:
    """Why the project's default model cannot be used here (its file is missing), or None."""
    if DEFAULT_MODEL.is_file():
        return None
    return (f"no --weights given, and the project's default model is not in this installation ({DEFAULT_MODEL} is "
            "missing: a source tree without it?); pass --weights official for the authors' weights (non-commercial "
            "licence), --weights PATH for a checkpoint or TruFor_weights.zip, or --random-weights --preset NAME "
            "to test the pipeline")


def recorded_preset(path: Path) -> str | None:
    """The preset a checkpoint records in its ``"preset"`` entry (the project's files do; the authors' do not)."""
    from .checkpoint import read_checkpoint  # torch

    checkpoint = read_checkpoint(path, mmap=True)
    preset = checkpoint.get("preset") if isinstance(checkpoint, Mapping) else None
    if preset is not None and preset not in PRESETS:
        raise CheckpointError(f"{path} records preset {preset!r}, which this version does not know "
                              f"(it knows {', '.join(sorted(PRESETS))})")
    return preset


def _check_preset(preset: str | None) -> None:
    if preset is not None and preset not in PRESETS:
        raise CheckpointError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}")


def _agreeing_preset(asked: str | None, recorded: str | None, what: str) -> str:
    """``recorded``, else ``asked``, else the default; ``asked`` must not contradict ``recorded``."""
    if asked is not None and recorded is not None and asked != recorded:
        raise CheckpointError(f"--preset {asked} was asked for, but {what} is a {recorded} model (its recorded "
                              f"preset); drop --preset or pass --preset {recorded}")
    return recorded or asked or DEFAULT_PRESET


def _default_model(preset: str | None) -> ResolvedWeights:
    problem = default_model_problem()
    if problem:
        raise CheckpointError(problem)
    name = _agreeing_preset(preset, recorded_preset(DEFAULT_MODEL), "the project's default model")
    if DEFAULT_MODEL not in _announced:  # once per process, however many times it is resolved
        _announced.add(DEFAULT_MODEL)
        print(f"trufor: no --weights given, using the project's default model {name} (see {MODEL_CARD}); "
              f"for casework use --weights {OFFICIAL}", file=sys.stderr)
    return ResolvedWeights(DEFAULT_MODEL, name, f"the project's default model {name} ({DEFAULT_MODEL})")


def resolve_weights(
    spec: str | os.PathLike | ResolvedWeights | None = None,
    preset: str | None = None,
    random_weights: bool = False,
    source: WeightsSource | None = None,
) -> ResolvedWeights:
    """``spec`` (None, ``official``, a ``.zip`` of the release, a checkpoint path, or weights already
    resolved), the ``preset`` asked for (None: the recorded one) and ``random_weights`` -> the weights to
    load. ``source`` is where ``official`` comes from and the MD5 a zip must have (default: the
    environment's, else the authors'). Raises ``CheckpointError`` saying what to pass instead."""
    _check_preset(preset)
    if isinstance(spec, ResolvedWeights):
        if random_weights and not spec.random:
            raise CheckpointError(f"random weights were asked for, but the weights are {spec.description}")
        _agreeing_preset(preset, spec.preset, spec.description)
        return spec
    if random_weights:
        if spec is not None:
            raise CheckpointError(f"--random-weights and --weights {spec} both choose the weights; pick one")
        name = preset or DEFAULT_PRESET
        return ResolvedWeights(None, name, f"random weights of preset {name}", ("--random-weights", "--preset", name))
    if spec is None:
        return _default_model(preset)
    if str(spec) == OFFICIAL:
        path = official_weights(source)
        name = _agreeing_preset(preset, OFFICIAL_PRESET, "the authors' release")
        return ResolvedWeights(path, name, f"the authors' TruFor weights ({path})", ("--weights", OFFICIAL))
    given = Path(spec).expanduser()
    if not given.is_file():
        raise CheckpointError(f"weights file {given} not found (or pass --weights {OFFICIAL} to download the "
                              "authors', or leave --weights out for the project's default model)")
    given = given.resolve()
    # By suffix: a torch checkpoint is itself a zip archive.
    if given.suffix.lower() == ".zip":
        path = weights_from_zip(given, source)
        name = _agreeing_preset(preset, OFFICIAL_PRESET, f"the authors' release {given}")
        return ResolvedWeights(path, name, f"the authors' TruFor weights from {given} ({path})", ("--weights", str(given)))
    recorded = recorded_preset(given)
    name = _agreeing_preset(preset, recorded, f"checkpoint {given}")
    argv = ("--weights", str(given)) + (() if recorded else ("--preset", name))
    return ResolvedWeights(given, name, f"checkpoint {given}", argv)
