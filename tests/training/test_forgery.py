"""The synthetic data: masks mark exactly the manipulated pixels; cameras and histories are fixed by their index."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from reference.errors import TruForError
from training.data.camera import (
    CFA_PATTERNS,
    DEMOSAIC_METHODS,
    apply_history,
    camera_model,
    demosaic,
    develop,
    edit_history,
    mosaic,
)
from training.data.contrastive import (
    CameraFolderPatches,
    ContrastiveConfig,
    SimulatedCameraPatches,
)
from training.data.photos import DecodedPhotos
from training.data.forgery import (
    FORGERY_KINDS,
    PRISTINE,
    ForgeryConfig,
    ForgeryGenerator,
)
from training.data.imageops import jpeg
from training.data.procedural import procedural_scene
from training.data.sources import PhotoFolderSource, SimulatedCameraSource

SIZE = 64
# Inside the mask nearly every pixel changes; a few may keep their value by chance (flat areas,
# JPEG rounding), so the check is on the share of changed pixels.
MIN_CHANGED_INSIDE = 0.6


class RecordingSource(SimulatedCameraSource):
    """Remembers which cameras it was asked for and gave."""

    def __init__(self):
        super().__init__(num_cameras=4)
        self.calls = []

    def draw(self, rng, height, width, exclude_camera=None):
        image, camera = super().draw(rng, height, width, exclude_camera)
        self.calls.append((exclude_camera, camera))
        return image, camera


@pytest.fixture(scope="module")
def generator():
    return ForgeryGenerator(SimulatedCameraSource(num_cameras=6))


@pytest.mark.parametrize("kind", FORGERY_KINDS)
@pytest.mark.parametrize("seed", range(4))
def test_mask_marks_exactly_what_changed(generator, kind, seed):
    sample = generator.sample(np.random.default_rng([seed, 17]), SIZE, SIZE, kind)
    changed = (sample.composite != sample.base).any(axis=-1)
    inside = sample.mask.astype(bool)
    assert sample.mask.dtype == np.uint8 and set(np.unique(sample.mask)) <= {0, 1}
    assert inside.sum() >= 16, "the region is not empty"
    assert not (changed & ~inside).any(), "a pixel outside the mask changed"
    assert changed[inside].mean() >= MIN_CHANGED_INSIDE, f"only {changed[inside].mean():.2f} of the mask changed"
    assert sample.kind == kind


@pytest.mark.parametrize("kind", [*FORGERY_KINDS, PRISTINE])
def test_global_post_processing_is_the_final_jpeg_only(generator, kind):
    for seed in range(6):
        sample = generator.sample(np.random.default_rng([seed, 5]), SIZE, SIZE, kind)
        if sample.final_jpeg is None:
            assert np.array_equal(sample.image, sample.composite)
        else:
            assert np.array_equal(sample.image, jpeg(sample.composite, sample.final_jpeg))
    if kind == "double_jpeg":
        assert sample.final_jpeg is not None, "double JPEG always ends with the global compression"


def test_pristine_samples_are_untouched(generator):
    sample = generator.sample(np.random.default_rng(3), SIZE, SIZE, PRISTINE)
    assert not sample.mask.any() and np.array_equal(sample.composite, sample.base)


def test_samples_are_reproducible_from_the_seed(generator):
    a = generator.sample(np.random.default_rng([9, 9]), SIZE, SIZE)
    b = generator.sample(np.random.default_rng([9, 9]), SIZE, SIZE)
    assert a.kind == b.kind and np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)


def test_pristine_fraction_is_respected():
    generator = ForgeryGenerator(SimulatedCameraSource(num_cameras=2), ForgeryConfig(pristine_fraction=1.0))
    assert generator.sample(np.random.default_rng(0), 32, 32).kind == PRISTINE
    with pytest.raises(ValueError, match="unknown forgery kinds"):
        ForgeryConfig(kinds=("glitter",))


def test_splice_donor_comes_from_another_camera():
    source = RecordingSource()
    generator = ForgeryGenerator(source)
    for seed in range(4):
        source.calls.clear()
        generator.sample(np.random.default_rng(seed), 48, 48, "splice")
        (_, host), (excluded, donor) = source.calls
        assert excluded == host and donor != host


def test_cameras_are_fixed_by_their_index():
    assert camera_model(5) == camera_model(5)
    assert camera_model(5) != camera_model(6)
    scene = procedural_scene(np.random.default_rng(0), 32, 32)
    a = develop(scene, camera_model(2), np.random.default_rng(1))
    b = develop(scene, camera_model(2), np.random.default_rng(1))
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3) and np.array_equal(a, b)


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
@pytest.mark.parametrize("method", DEMOSAIC_METHODS)
def test_demosaicing_keeps_the_sensor_samples(cfa, method):
    raw = np.random.default_rng(0).random((12, 14, 3)).astype(np.float32)
    cfa_image = mosaic(raw, cfa)
    rgb = demosaic(cfa_image, cfa, method)
    assert rgb.shape == raw.shape
    np.testing.assert_allclose(mosaic(rgb, cfa), cfa_image, atol=1e-6)


def test_history_zero_is_no_edit_and_histories_are_fixed():
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert np.array_equal(apply_history(image, edit_history(0)), image)
    assert edit_history(7) == edit_history(7)
    resized = next(i for i in range(1, 200) if edit_history(i).scale() != 1.0)
    out = apply_history(image, edit_history(resized))
    assert out.shape[0] == round(40 * edit_history(resized).scale())


def test_contrastive_batches_group_patches_by_class():
    config = ContrastiveConfig(patch=24, groups=4, per_group=3, num_cameras=3, num_histories=3)
    images, labels = SimulatedCameraPatches(config).batch(np.random.default_rng(0))
    assert images.shape == (12, 3, 24, 24) and images.dtype == np.float32
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert 0 <= images.min() and images.max() < 1  # RGB / 256
    again, _ = SimulatedCameraPatches(config).batch(np.random.default_rng(0))
    assert np.array_equal(images, again)


def write_camera_folders(root, cameras=2, photos=3, size=80):
    rng = np.random.default_rng(0)
    for camera in range(cameras):
        folder = root / f"camera{camera}"
        folder.mkdir(parents=True)
        for photo in range(photos):
            Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(folder / f"p{photo}.png")
    return root


def test_real_photos_grouped_by_camera_make_phase1_batches(tmp_path):
    config = ContrastiveConfig(patch=24, groups=3, per_group=2, num_histories=2)
    source = CameraFolderPatches(write_camera_folders(tmp_path / "cams"), config)
    images, labels = source.batch(np.random.default_rng(1))
    assert images.shape == (6, 3, 24, 24) and labels.tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(TruForError, match="at least 2 camera subfolders"):
        CameraFolderPatches(write_camera_folders(tmp_path / "one", cameras=1), config)


def test_photo_folder_as_pristine_source(tmp_path):
    source = PhotoFolderSource(write_camera_folders(tmp_path / "photos", size=40))
    generator = ForgeryGenerator(source)
    sample = generator.sample(np.random.default_rng(0), 48, 48, "splice")  # photos smaller: enlarged
    assert sample.image.shape == (48, 48, 3)
    assert sorted(set(source.camera_of)) == [0, 1]


def test_camera_with_fewer_photos_than_per_group_repeats_them_at_other_windows(tmp_path):
    """The shared camera folders hold 2 or 3 photos per model; a class of 4 patches must still form."""
    config = ContrastiveConfig(patch=24, groups=2, per_group=4, num_histories=1)
    source = CameraFolderPatches(write_camera_folders(tmp_path / "cams", photos=1, size=160), config)
    images, labels = source.batch(np.random.default_rng(3))
    assert images.shape == (8, 3, 24, 24) and labels.tolist() == [0] * 4 + [1] * 4
    # one photo per camera, yet the class's patches are not four copies of one crop
    assert len({images[i].tobytes() for i in range(4)}) > 1


def test_decoded_photos_are_cached_once_and_refreshed_when_the_file_changes(tmp_path):
    photo = tmp_path / "p.png"
    first = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(first).save(photo)
    cache = DecodedPhotos(tmp_path / "cache")
    assert np.array_equal(cache.load(photo), first)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert np.array_equal(cache.load(photo), first)  # read back from the entry
    second = 255 - first
    Image.fromarray(second).save(photo)
    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 1_000_000))
    assert np.array_equal(cache.load(photo), second)
