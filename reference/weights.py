"""The authors' released weights on demand: ``--weights official``, a zip, or a checkpoint file.

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

import hashlib
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError
from .home import trufor_home
from .outputs import atomic_write

OFFICIAL_URL = "https://www.grip.unina.it/download/prog/TruFor/TruFor_weights.zip"
OFFICIAL_MD5 = "7bee48f3476c75616c3c5721ab256ff8"
CHECKPOINT_NAME = "trufor.pth.tar"
OFFICIAL = "official"
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
    digest = hashlib.md5(usedforsecurity=False)
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


def resolve_weights(spec: str | os.PathLike, source: WeightsSource | None = None) -> Path:
    """``official``, a ``.zip`` of the release, or a checkpoint path -> a checkpoint file to load."""
    if str(spec) == OFFICIAL:
        return official_weights(source)
    path = Path(spec)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} not found (or pass --weights {OFFICIAL} to download the authors')")
    # By suffix: a torch checkpoint is itself a zip archive.
    return weights_from_zip(path, source) if path.suffix.lower() == ".zip" else path
