"""runtime.tiling: grid coverage, window weights, exact stitching, and tiled == whole where they must agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rt_helpers import TILE, noise_image

from runtime.device_tiling import DeviceBlender
from runtime.predictor import Predictor
from runtime.runners.base import Capabilities
from runtime.runners.torch_runner import TorchBackend
from runtime.tiling import (
    BATCHES_IN_FLIGHT,
    WINDOWS,
    HostBlender,
    TileGrid,
    TilingConfig,
    stitch_tiles,
    tile_starts,
    window_1d,
)


@pytest.mark.parametrize("length", [29, 63, 64, 65, 100, 128, 129, 500, 1000, 6000])
@pytest.mark.parametrize("tile,overlap", [(64, 16), (64, 0), (64, 32), (512, 128)])
def test_tiles_cover_every_pixel_with_the_requested_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    padded = max(length, tile)
    covered = np.zeros(padded, int)
    for start in starts:
        assert 0 <= start and start + tile <= padded
        covered[start : start + tile] += 1
    assert covered.min() >= 1, "a pixel is covered by no tile"
    assert starts[0] == 0 and starts[-1] + tile == padded
    for a, b in zip(starts, starts[1:]):
        assert a + tile - b >= overlap, f"tiles at {a} and {b} overlap by less than {overlap}"
    assert starts == sorted(set(starts))


@pytest.mark.parametrize("kind", WINDOWS)
@pytest.mark.parametrize("tile,overlap", [(64, 16), (64, 0), (512, 128), (32, 16)])
def test_window_is_positive_symmetric_and_at_most_one(kind, tile, overlap):
    weights = window_1d(tile, overlap, kind)
    assert weights.shape == (tile,) and weights.dtype == np.float32
    assert weights.min() > 0 and weights.max() <= 1
    np.testing.assert_array_equal(weights, weights[::-1])


def identity_tiles(tiles: np.ndarray):
    """A stand-in tile graph whose 'logits' are the pixels: channels 0-1 as loc, channel 2 as conf."""
    values = tiles.astype(np.float32).transpose(0, 3, 1, 2)
    return lambda: (values[:, :2], values[:, 2:])


@pytest.mark.parametrize("shape", [(200, 300), (64, 64), (40, 150), (29, 29), (130, 65)])
@pytest.mark.parametrize("kind", WINDOWS)
def test_stitching_an_identity_model_reproduces_the_image(shape, kind):
    rgb = noise_image(*shape)
    loc, conf = stitch_tiles(HostBlender(rgb, TILE, 16, kind), identity_tiles, batch_size=3)
    assert loc.shape == (1, 2, *shape) and conf.shape == (1, 1, *shape)
    expected = rgb.astype(np.float32).transpose(2, 0, 1)
    if kind == "box":  # sums of small integers divided by their count: exact in float32
        np.testing.assert_array_equal(loc[0], expected[:2])
        np.testing.assert_array_equal(conf[0], expected[2:])
    else:
        np.testing.assert_allclose(loc[0], expected[:2], rtol=1e-6, atol=0)
        np.testing.assert_allclose(conf[0], expected[2:], rtol=1e-6, atol=0)


def torch_identity_tiles(tiles):
    """``identity_tiles`` on torch tensors, where DeviceBlender cuts them."""
    values = tiles.float().permute(0, 3, 1, 2)
    return lambda: (values[:, :2], values[:, 2:])


@pytest.mark.parametrize("shape", [(200, 300), (40, 150), (130, 65)])
@pytest.mark.parametrize("kind", WINDOWS)
def test_the_torch_blend_on_cpu_tensors_equals_the_numpy_blend(shape, kind):
    """The device path's blending (runtime.device_tiling), run on the CPU, gives the host's float32 numbers."""
    rgb = noise_image(*shape, seed=3)
    weights = np.random.default_rng(0).uniform(0.5, 2, (1, 3, 1, 1)).astype(np.float32)  # not only the pixels

    def host(tiles):
        values = tiles.astype(np.float32).transpose(0, 3, 1, 2) * weights
        return lambda: (values[:, :2], values[:, 2:])

    def device(tiles):
        values = tiles.float().permute(0, 3, 1, 2) * torch.from_numpy(weights)
        return lambda: (values[:, :2], values[:, 2:])

    want = stitch_tiles(HostBlender(rgb, TILE, 16, kind), host, batch_size=3)
    got = stitch_tiles(DeviceBlender(rgb, TILE, 16, kind, "cpu"), device, batch_size=3)
    for name, a, b in zip(("loc", "conf"), got, want):
        assert a.shape == b.shape, name
        np.testing.assert_array_equal(a.numpy(), b, err_msg=name)


def test_every_tile_batch_has_the_batch_size_and_padding_changes_nothing():
    """On a GPU the last batch is padded with copies of its last tile: the tile graph sees one shape
    only (what TensorRT's CUDA graphs need), and the copies' logits are never blended."""
    rgb = noise_image(100, 150)
    sizes = []

    def submit(tiles):
        sizes.append(tiles.shape[0])
        return identity_tiles(tiles)

    loc, conf = stitch_tiles(HostBlender(rgb, TILE, 16, "tukey"), submit, batch_size=4, pad_last=True)
    assert len(TileGrid.for_image(100, 150, TILE, 16)) % 4 and set(sizes) == {4}
    expected = rgb.astype(np.float32).transpose(2, 0, 1)
    np.testing.assert_allclose(loc[0], expected[:2], rtol=1e-6, atol=0)
    np.testing.assert_allclose(conf[0], expected[2:], rtol=1e-6, atol=0)


def test_total_weight_is_positive_everywhere_including_borders():
    grid = TileGrid.for_image(300, 200, TILE, 16)
    profile = window_1d(TILE, 16, "tukey")
    assert grid.total_weight(profile, grid.ys, grid.height).min() > 0
    assert grid.total_weight(profile, grid.xs, grid.width).min() > 0


def _compare(a, b, atol=2e-6):
    np.testing.assert_allclose(a.map, b.map, rtol=0, atol=atol, err_msg="map")
    np.testing.assert_allclose(a.conf, b.conf, rtol=0, atol=atol, err_msg="conf")
    assert abs(a.score - b.score) <= atol, (a.score, b.score)


def test_tiled_run_of_one_tile_equals_the_whole_image_run(torch_backend):
    rgb = noise_image(TILE, TILE, seed=1)
    whole = Predictor(torch_backend, TilingConfig(threshold_pixels=TILE * TILE))
    tiled = Predictor(torch_backend, TilingConfig(threshold_pixels=0))
    assert whole.mode(TILE, TILE) == "whole" and tiled.mode(TILE, TILE) == "tiled"
    reference = whole.predict(rgb)
    assert reference.map.std() > 1e-3, "the tiny model's map should vary over the image"
    _compare(tiled.predict(rgb), reference)


@pytest.mark.parametrize("shape", [(40, 150), (29, 29), (64, 33)])
def test_small_side_is_padded_to_the_tile_and_cropped_back(torch_backend, shape):
    """Below the tile size on a side, the tile graph sees the image reflect-padded to T."""
    rgb = noise_image(*shape, seed=2)
    result = Predictor(torch_backend, TilingConfig(threshold_pixels=0)).predict(rgb)
    assert result.map.shape == shape and result.conf.shape == shape
    if shape[1] <= TILE:  # one tile: equals the whole-image run of the padded image, cropped
        padded = np.pad(rgb, ((0, TILE - shape[0]), (0, TILE - shape[1]), (0, 0)), mode="reflect")
        whole = Predictor(torch_backend, TilingConfig(threshold_pixels=10**9))
        loc, conf = whole.backend.tile.infer({"image": padded[None]}).values()
        cropped = whole.backend.score.infer(
            {"loc_logits": np.ascontiguousarray(loc[:, :, : shape[0], : shape[1]]),
             "conf_logits": np.ascontiguousarray(conf[:, :, : shape[0], : shape[1]])}
        )
        np.testing.assert_allclose(result.map, cropped["map"][0], rtol=0, atol=2e-6)
        assert abs(result.score - float(cropped["score"][0])) <= 2e-6


def test_large_image_runs_tiled_in_batches_and_keeps_its_size(torch_backend):
    rgb = noise_image(150, 230, seed=4)
    calls = []
    predictor = Predictor(torch_backend, TilingConfig(threshold_pixels=100 * 100, batch_size=4))
    infer = torch_backend.tile.infer
    torch_backend.tile.infer = lambda feed: calls.append(feed["image"].shape[0]) or infer(feed)
    result = predictor.predict(rgb)
    grid = TileGrid.for_image(150, 230, TILE, TILE // 4)
    assert sum(calls) == len(grid) and max(calls) == 4  # a CPU backend: no padded copies
    assert result.map.shape == (150, 230) and 0 <= result.score <= 1
    assert np.isfinite(result.map).all() and np.isfinite(result.conf).all()


def test_overlap_above_half_the_tile_is_refused(torch_backend):
    with pytest.raises(ValueError, match="more than half the tile size"):
        Predictor(torch_backend, TilingConfig(overlap=TILE // 2 + 1))


MEMORY_SCRIPT = """
import re
import numpy as np
from reference import build_trufor
from runtime.predictor import Predictor
from runtime.runners.torch_runner import TorchBackend
from runtime.tiling import TilingConfig
rgb = np.random.default_rng(0).integers(0, 256, (4000, 6000, 3), dtype=np.uint8)
result = Predictor(TorchBackend(build_trufor("tiny"))).predict(rgb)
assert result.map.shape == (4000, 6000) and 0 <= result.score <= 1
# VmHWM, not ru_maxrss: that one starts at the parent's RSS when forked (pytest after a full-size export)
print(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read()).group(1))
"""


@pytest.mark.slow
def test_24_megapixels_scan_in_bounded_memory():
    """6000x4000 through the default tiling (512 tiles): image, accumulators, one tile batch, score
    pooling. The tiny model keeps it quick; the full model's figure is in BENCHMARKS.md."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stderr
    peak_gb = int(done.stdout.split()[-1]) / 1e6
    assert peak_gb < 2.5, f"peak RSS {peak_gb:.2f} GB"


def test_later_batches_are_submitted_before_this_one_is_waited_for():
    """With an asynchronous backend the device computes the next batches while the host blends this one."""
    events = []

    def submit(tiles):
        index = sum(event.startswith("submit") for event in events)
        events.append(f"submit {index}")
        result = identity_tiles(tiles)
        return lambda: events.append(f"wait {index}") or result()

    rgb = noise_image(100, 150)
    loc, conf = stitch_tiles(HostBlender(rgb, TILE, 16, "box"), submit, batch_size=1)
    batches = sum(event.startswith("submit") for event in events)
    assert batches > BATCHES_IN_FLIGHT
    ahead = BATCHES_IN_FLIGHT - 1
    expected = [f"submit {k}" for k in range(ahead)]
    for k in range(batches):
        expected += ([f"submit {k + ahead}"] if k + ahead < batches else []) + [f"wait {k}"]
    assert events == expected
    np.testing.assert_array_equal(loc[0], rgb.astype(np.float32).transpose(2, 0, 1)[:2])


class SubmittingTileRunner:
    """A tile runner with TensorRT's ``submit_batch``: the batch starts now, the result comes on wait."""

    def __init__(self, runner):
        self.runner, self.waits = runner, 0
        self.activate, self.deactivate = runner.activate, runner.deactivate
        self.ran_on = runner.ran_on

    def submit_batch(self, feed):
        out = self.runner.infer(feed)

        def wait():
            self.waits += 1
            return out

        return wait


def test_predictor_uses_submit_batch_when_the_tile_runner_has_it(torch_backend):
    rgb = noise_image(150, 230, seed=4)
    tiling = TilingConfig(threshold_pixels=100 * 100, batch_size=4)
    expected = Predictor(torch_backend, tiling).predict(rgb)
    submitting = SubmittingTileRunner(torch_backend.tile)
    torch_backend.runners["tile"] = submitting
    got = Predictor(torch_backend, tiling).predict(rgb)
    assert submitting.waits == -(-len(TileGrid.for_image(150, 230, TILE, TILE // 4)) // 4)
    _compare(got, expected, atol=0)


@pytest.mark.parametrize("can_release", [True, False])
def test_whole_graph_memory_is_released_once_before_a_tiled_image(torch_backend, monkeypatch, can_release):
    """The whole graph keeps its buffers between whole images (no re-allocation per image) and, on a
    backend that can release them, gives them back when a tiled image comes, so the two graphs'
    memory never adds up."""
    monkeypatch.setattr(torch_backend, "capabilities", Capabilities(release_memory=can_release))
    releases = []
    monkeypatch.setattr(torch_backend.whole, "release_memory", lambda: releases.append(len(calls)))
    calls = []
    infer = torch_backend.whole.infer
    monkeypatch.setattr(torch_backend.whole, "infer", lambda feed: calls.append(feed) or infer(feed))
    predictor = Predictor(torch_backend, TilingConfig(threshold_pixels=100 * 100))
    small, large = noise_image(60, 80), noise_image(150, 230)
    for rgb in (small, small, large, large, small, large):
        predictor.predict(rgb)
    assert len(calls) == 3  # the small images
    assert releases == ([2, 3] if can_release else [])  # after the 2nd whole run, and after the 3rd


def test_the_device_path_on_cpu_tensors_gives_the_host_paths_result(tiny_model):
    """TorchBackend with ``device_tensors`` (what TorchCudaBackend runs on a GPU) cuts, blends and pools
    tiled images as torch tensors; on the CPU it gives the NumPy path's numbers exactly."""
    rgb = noise_image(150, 230, seed=6)
    tiling = TilingConfig(threshold_pixels=100 * 100, batch_size=4)
    host = Predictor(TorchBackend(tiny_model, tile_size=TILE), tiling).predict(rgb)
    tensors = TorchBackend(tiny_model, tile_size=TILE, device_tensors=True)
    assert tensors.capabilities.device_tensors == "cpu"
    got = Predictor(tensors, tiling).predict(rgb)
    _compare(got, host, atol=0)
    assert got.backend == host.backend == "torch"
