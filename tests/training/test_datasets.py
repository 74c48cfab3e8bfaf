"""Dataset loaders, balanced sampling, augmentation and crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from training_helpers import tiny_config, write_pairs

from reference.errors import TruForError
from training.data.augment import (
    IGNORE_LABEL,
    PAD_VALUE,
    AugmentConfig,
    augment,
    crop_or_pad,
    validation_crop,
)
from training.data.datasets import balanced_epoch, open_file_dataset, parse_spec
from training.data.loader import SegmentationData


def test_pairs_layout_images_without_mask_are_pristine(tmp_path):
    dataset = open_file_dataset(str(write_pairs(tmp_path / "set", count=2, pristine=1)))
    assert len(dataset) == 3 and dataset.num_forged == 2
    forged, pristine = dataset.load(0), dataset.load(2)
    assert forged.mask.dtype == np.uint8 and forged.mask.sum() == 16 * 20 and forged.mask.max() == 1
    assert pristine.mask.shape == pristine.image.shape[:2] and not pristine.mask.any()


def test_pairs_layout_refuses_orphan_masks_and_wrong_sizes(tmp_path):
    root = write_pairs(tmp_path / "set", count=1, pristine=0)
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(root / "masks" / "ghost.png")
    with pytest.raises(TruForError, match="without an image"):
        open_file_dataset(str(root))
    (root / "masks" / "ghost.png").unlink()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / "masks" / "img0.png")
    with pytest.raises(TruForError, match="must have the image's size"):
        open_file_dataset(str(root)).load(0)


def test_zero_one_masks_are_read_as_labels(tmp_path):
    root = write_pairs(tmp_path / "set", count=1, pristine=0)
    mask = np.zeros((48, 48), np.uint8)
    mask[:5, :5] = 1
    Image.fromarray(mask).save(root / "masks" / "img0.png")
    assert open_file_dataset(str(root)).load(0).mask.sum() == 25


def test_casia_layout(tmp_path):
    root = tmp_path / "casia"
    for folder in ("Tp", "Au", "GT"):
        (root / folder).mkdir(parents=True)
    image = Image.fromarray(np.full((40, 40, 3), 90, np.uint8))
    image.save(root / "Tp" / "Tp_D_1.jpg")
    image.save(root / "Tp" / "Tp_S_2.tif")
    image.save(root / "Au" / "Au_1.jpg")
    mask = np.zeros((40, 40), np.uint8)
    mask[:10] = 255
    Image.fromarray(mask).save(root / "GT" / "Tp_D_1_gt.png")
    Image.fromarray(mask).save(root / "GT" / "Tp_S_2.png")
    assert parse_spec(str(root))[0] == "casia"
    dataset = open_file_dataset(str(root))
    assert len(dataset) == 3 and dataset.num_forged == 2
    assert [int(dataset.load(i).mask.sum()) for i in range(3)] == [400, 400, 0]
    (root / "GT" / "Tp_S_2.png").unlink()
    with pytest.raises(TruForError, match="have no mask"):
        open_file_dataset(f"casia:{root}")


def test_coverage_layout(tmp_path):
    root = tmp_path / "coverage"
    for folder in ("forged", "masks", "pristine"):
        (root / folder).mkdir(parents=True)
    image = Image.fromarray(np.full((40, 40, 3), 90, np.uint8))
    image.save(root / "forged" / "1t.png")
    image.save(root / "pristine" / "1.png")
    mask = np.zeros((40, 40), np.uint8)
    mask[:10] = 255
    Image.fromarray(mask).save(root / "masks" / "1t.png")
    assert parse_spec(str(root))[0] == "coverage"
    dataset = open_file_dataset(str(root))
    assert len(dataset) == 2 and dataset.num_forged == 1
    assert [int(dataset.load(i).mask.sum()) for i in range(2)] == [400, 0]
    # a published mask of another size than its image: forged, image-level metrics only
    Image.fromarray(np.zeros((40, 52), np.uint8)).save(root / "masks" / "1t.png")
    dataset = open_file_dataset(f"coverage:{root}")
    assert dataset.num_forged == 1 and dataset.load(0).mask is None and "without a usable mask" in dataset.describe()
    with pytest.raises(TruForError, match="evaluation set"):
        SegmentationData(tiny_config(tmp_path / "run", 2, data=(f"coverage:{root}",)).segmentation_data())
    (root / "masks" / "1t.png").unlink()
    with pytest.raises(TruForError, match="have no mask"):
        open_file_dataset(f"coverage:{root}")


def test_authentic_layout_and_unknown_layout(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(folder / "a.png")
    assert not open_file_dataset(f"authentic:{folder}").load(0).mask.any()
    with pytest.raises(TruForError, match="cannot tell the layout"):
        parse_spec(str(folder))


def test_balanced_epoch_takes_min_len_from_each():
    items = balanced_epoch([10, 3, 5], np.random.default_rng(0))
    assert len(items) == 9
    for dataset in range(3):
        indices = [i for d, i in items if d == dataset]
        assert len(indices) == 3 and len(set(indices)) == 3


def test_crop_pads_small_images_with_127_5_and_ignore_label():
    image = np.full((20, 30, 3), 10, np.uint8)
    mask = np.ones((20, 30), np.uint8)
    out, label = crop_or_pad(image, mask, np.random.default_rng(0), 32)
    assert out.shape == (32, 32, 3) and label.shape == (32, 32) and out.dtype == np.float32
    assert (out[label == IGNORE_LABEL] == PAD_VALUE).all()
    assert (label == IGNORE_LABEL).sum() == 32 * 32 - 20 * 30
    assert (out[label == 1] == 10).all()


def test_augment_keeps_image_and_mask_aligned():
    image = np.zeros((100, 100, 3), np.uint8)
    mask = np.zeros((100, 100), np.uint8)
    image[30:70, 30:70] = 255
    mask[30:70, 30:70] = 1
    config = AugmentConfig(crop=64, scale_p=1.0, jpeg_p=1.0)
    for seed in range(5):
        out, label = augment(image, mask, np.random.default_rng(seed), config)
        inside = out[label == 1].mean() if (label == 1).any() else 255
        outside = out[label == 0].mean() if (label == 0).any() else 0
        assert inside > 200 and outside < 60, (seed, inside, outside)


def test_validation_crop_is_centred_and_8_aligned():
    image = np.zeros((3000, 101, 3), np.uint8)
    out, mask = validation_crop(image, np.zeros((3000, 101), np.uint8))
    assert out.shape == (2048, 96, 3) and mask.shape == (2048, 96)


def test_epoch_batches_are_reproducible_and_skippable(tmp_path):
    config = tiny_config(tmp_path, 2, data=("synthetic", str(write_pairs(tmp_path / "set", count=4, pristine=4))),
                         synthetic_count=8, batch_size=4)
    data = SegmentationData(config.segmentation_data())
    assert data.samples_per_epoch == 16 and data.iterations_per_epoch == 4
    first = list(data.batches(epoch=1))
    again = list(data.batches(epoch=1))
    skipped = list(data.batches(epoch=1, skip=2))
    assert len(first) == 4 and len(skipped) == 2
    for (a_image, a_label), (b_image, b_label) in zip(first, again):
        assert torch.equal(a_image, b_image) and torch.equal(a_label, b_label)
    for (a_image, _), (b_image, _) in zip(first[2:], skipped):
        assert torch.equal(a_image, b_image)
    image, label = first[0]
    assert image.shape == (4, 3, 64, 64) and label.shape == (4, 64, 64) and label.dtype == torch.int64
    assert float(image.max()) < 1.0  # RGB / 256, as the model expects
