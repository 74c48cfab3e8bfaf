"""Image/mask datasets: users' folders in three layouts, and the synthetic forgery generator.

A ``--data`` spec names one sub-dataset:

- ``pairs:DIR``: ``DIR/images/*`` with masks in ``DIR/masks/`` of the same stem (any extension).
  An image without a mask is pristine (all-zero mask); a mask without an image is an error.
- ``casia:DIR``: a CASIA-like layout: ``DIR/Tp/`` forged images, ``DIR/Au/`` authentic ones and
  ``DIR/GT/`` masks named ``<stem>_gt.*`` or ``<stem>.*``; every Tp image needs a mask.
- ``coverage:DIR``: the COVERAGE layout: ``DIR/forged/`` with masks of the same stem in
  ``DIR/masks/``, and the originals in ``DIR/pristine/``. Nine of the published masks do not have
  their image's size (41t: 715x376 for a 588x376 image); those images count as forged with no mask
  (image-level metrics only) rather than guessing how the mask was cropped or scaled.
- ``authentic:DIR``: every image under ``DIR`` is pristine.
- ``synthetic``: forgeries generated on the fly (``forgery.py``), new ones every epoch, from the
  simulated cameras (or the ``--pristine`` photos); ``synthetic:DIR`` generates them from the
  photos under ``DIR`` (one subfolder per camera), so several pristine sources can be balanced.
- a bare ``DIR`` is read as ``pairs`` when it has ``images/`` and ``masks/``, as ``casia`` when it
  has ``Tp/`` and ``GT/``; anything else must say its kind.

Masks are binarized: 8-bit masks at > 127, masks whose values are all 0 or 1 at > 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from reference.errors import TruForError
from reference.image import load_rgb

from .forgery import ForgeryGenerator
from .sources import list_images

DATA_KINDS = ("pairs", "casia", "coverage", "authentic", "synthetic")


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # uint8 HxWx3
    mask: np.ndarray | None  # uint8 HxW, 1 = forged; None: forged, but no usable mask
    name: str


def load_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as image:
        values = np.array(image.convert("L"))
    if values.shape != shape:
        raise TruForError(
            f"mask {path} is {values.shape[1]}x{values.shape[0]} (WxH) but its image is {shape[1]}x{shape[0]}; "
            "masks must have the image's size"
        )
    return (values > (0 if values.max() <= 1 else 127)).astype(np.uint8)


def _by_stem(paths: list[Path], folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in paths:
        stem = path.relative_to(folder).with_suffix("").as_posix()
        if stem in found:
            raise TruForError(f"{found[stem]} and {path} have the same stem; keep one file per stem")
        found[stem] = path
    return found


class FileDataset:
    """Images with an optional mask each (None: pristine), read on demand; ``unmasked`` images are
    forged but have no usable mask."""

    def __init__(self, name: str, items: list[tuple[Path, Path | None]], unmasked: frozenset[Path] = frozenset()):
        if not items:
            raise TruForError(f"dataset {name} has no images")
        self.name = name
        self.items = items
        self.unmasked = unmasked

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_forged(self) -> int:
        return sum(mask is not None or image in self.unmasked for image, mask in self.items)

    def load(self, index: int, rng: np.random.Generator | None = None) -> Sample:
        image_path, mask_path = self.items[index]
        image = load_rgb(image_path)
        if image_path in self.unmasked:
            mask = None
        elif mask_path is None:
            mask = np.zeros(image.shape[:2], dtype=np.uint8)
        else:
            mask = load_mask(mask_path, image.shape[:2])
        return Sample(image, mask, image_path.name)

    def describe(self) -> str:
        unmasked = f", {len(self.unmasked)} of them without a usable mask" if self.unmasked else ""
        return f"{self.name}: {len(self)} images ({self.num_forged} forged{unmasked})"


def pairs_dataset(root: Path) -> FileDataset:
    images = _by_stem(list_images(root / "images"), root / "images")
    masks = _by_stem(list_images(root / "masks"), root / "masks") if (root / "masks").is_dir() else {}
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise TruForError(f"{root}/masks has {len(orphans)} masks without an image, e.g. {orphans[:3]}")
    return FileDataset(f"pairs:{root}", [(images[stem], masks.get(stem)) for stem in sorted(images)])


def casia_dataset(root: Path) -> FileDataset:
    gt = _by_stem(list_images(root / "GT"), root / "GT")
    items: list[tuple[Path, Path | None]] = []
    missing = []
    for path in list_images(root / "Tp"):
        stem = path.relative_to(root / "Tp").with_suffix("").as_posix()
        mask = gt.get(f"{stem}_gt") or gt.get(stem)
        if mask is None:
            missing.append(path.name)
        items.append((path, mask))
    if missing:
        raise TruForError(
            f"{len(missing)} forged images in {root}/Tp have no mask in {root}/GT (looked for <stem>_gt.* and "
            f"<stem>.*), e.g. {missing[:3]}"
        )
    if (root / "Au").is_dir():
        items += [(path, None) for path in list_images(root / "Au")]
    return FileDataset(f"casia:{root}", items)


def coverage_dataset(root: Path) -> FileDataset:
    masks = _by_stem(list_images(root / "masks"), root / "masks")
    forged = _by_stem(list_images(root / "forged"), root / "forged")
    missing = sorted(set(forged) - set(masks))
    if missing:
        raise TruForError(f"{len(missing)} forged images in {root}/forged have no mask in {root}/masks, e.g. {missing[:3]}")
    items: list[tuple[Path, Path | None]] = [(forged[stem], masks[stem]) for stem in sorted(forged)]
    unmasked = frozenset(image for image, mask in items if _size(image) != _size(mask))
    items += [(path, None) for path in list_images(root / "pristine")]
    return FileDataset(f"coverage:{root}", items, unmasked)


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:  # reads the header only
        return image.size


def authentic_dataset(root: Path) -> FileDataset:
    return FileDataset(f"authentic:{root}", [(path, None) for path in list_images(root)])


class SyntheticDataset:
    """``length`` generated samples of ``size`` x ``size``; the rng decides what each one is."""

    def __init__(self, generator: ForgeryGenerator, length: int, size: int, name: str = "synthetic"):
        if length < 1:
            raise ValueError(f"synthetic dataset length must be >= 1, got {length}")
        self.generator = generator
        self.length = length
        self.size = size
        self.name = name

    def __len__(self) -> int:
        return self.length

    def load(self, index: int, rng: np.random.Generator) -> Sample:
        sample = self.generator.sample(rng, self.size, self.size)
        return Sample(sample.image, sample.mask, f"{self.name}-{index:06d}-{sample.kind}")

    def describe(self) -> str:
        return f"{self.name}: {self.length} generated {self.size}x{self.size} samples per epoch ({self.generator.source})"


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """``KIND:PATH``, ``synthetic`` or a bare folder (auto-detected) -> (kind, path)."""
    if spec == "synthetic":
        return "synthetic", None
    kind, sep, rest = spec.partition(":")
    if sep and kind in DATA_KINDS:
        return kind, Path(rest)
    root = Path(spec)
    if (root / "images").is_dir():
        return "pairs", root
    if (root / "Tp").is_dir() and (root / "GT").is_dir():
        return "casia", root
    if (root / "forged").is_dir() and (root / "masks").is_dir():
        return "coverage", root
    raise TruForError(
        f"cannot tell the layout of {spec!r}: use pairs:DIR (DIR/images + DIR/masks), casia:DIR (Tp/, Au/, GT/), "
        "coverage:DIR (forged/, masks/, pristine/), authentic:DIR (pristine images only), synthetic or synthetic:DIR (forgeries made from the photos in DIR)"
    )


def open_file_dataset(spec: str) -> FileDataset:
    kind, root = parse_spec(spec)
    if kind == "synthetic":
        raise TruForError("'synthetic' is not a folder dataset")
    if not root.is_dir():
        raise TruForError(f"dataset folder {root} does not exist")
    return {
        "pairs": pairs_dataset, "casia": casia_dataset, "coverage": coverage_dataset, "authentic": authentic_dataset,
    }[kind](root)


def balanced_epoch(lengths: list[int], rng: np.random.Generator) -> list[tuple[int, int]]:
    """The official balanced sampling: ``min(lengths)`` random samples of every sub-dataset, shuffled."""
    count = min(lengths)
    items = [(d, int(i)) for d, length in enumerate(lengths) for i in rng.permutation(length)[:count]]
    order = rng.permutation(len(items))
    return [items[i] for i in order]

