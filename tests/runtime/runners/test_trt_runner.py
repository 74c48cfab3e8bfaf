"""TrtRunner's bookkeeping with a fake engine and fake CUDA memory: chunking, slots, shapes and
addresses set only on change, checked booleans, CUDA graph capture, fallback and freeing."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from export.errors import ArtifactError
from reference.errors import TruForError
from export.contract import graph_specs
from runtime.runners.base import BaseRunner
from runtime.runners.trt_runner import TrtRunner

from trt_fakes import FakeDeviceBuffer, FakeGraph, FakePinnedHostBuffer, FakeWholeEngine, expected_outputs, install_fake_cuda


@pytest.fixture
def engine(monkeypatch):
    install_fake_cuda(monkeypatch)
    return FakeWholeEngine()


def runner_for(engine, **kwargs) -> TrtRunner:
    return TrtRunner(graph_specs(64)["whole"], lambda: SimpleNamespace(engine=engine), **kwargs)


def images(batch, height=40, width=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)


def check(outputs, image):
    for name, want in expected_outputs(image).items():
        np.testing.assert_allclose(outputs[name], want, rtol=1e-6, err_msg=name)


def test_outputs_come_back_per_image(engine):
    with runner_for(engine) as runner:
        image = images(1)
        check(runner.infer({"image": image}), image)
        assert [c.profile for c in engine.contexts] == [0, 1]  # one profile per context


def test_large_batch_is_split_and_pipelined_over_slots(engine):
    with runner_for(engine) as runner:
        image = images(5)  # profile allows batch <= 2: chunks of 2, 2, 1 over both contexts
        out = runner.infer({"image": image})
        check(out, image)
        assert out["map"].shape == (5, 40, 48)
        assert [c.runs for c in engine.contexts] == [2, 1]


def test_shapes_and_addresses_are_set_only_when_they_change(engine):
    with runner_for(engine, streams=1) as runner:
        for _ in range(3):
            runner.infer({"image": images(1)})
        context = engine.contexts[0]
        assert context.shape_calls == [("image", (1, 40, 48, 3))]
        assert sorted(name for name, _ in context.address_calls) == ["conf", "image", "map", "score"]
        runner.infer({"image": images(1, 64, 64)})  # bigger: new shape; image/map/conf buffers grow and move
        assert context.shape_calls[-1] == ("image", (1, 64, 64, 3))
        assert sorted(name for name, _ in context.address_calls[4:]) == ["conf", "image", "map"]  # score fits
        runner.infer({"image": images(1, 40, 48)})  # smaller again: shape set, buffers reused
        assert len(context.shape_calls) == 3 and len(context.address_calls) == 7


def test_every_boolean_is_checked(engine):
    with runner_for(engine) as runner:
        engine.accept_shapes = False
        with pytest.raises(TruForError, match=r"set_input_shape\('image', \(1, 40, 48, 3\)\) failed"):
            runner.infer({"image": images(1)})
        engine.accept_shapes, engine.execute_ok = True, False
        with pytest.raises(TruForError, match="execute_async_v3 failed"):
            runner.infer({"image": images(1, 50, 50)})


def test_out_of_profile_without_fallback_names_the_limit(engine):
    with runner_for(engine) as runner:
        with pytest.raises(TruForError, match=r"outside the engine's profile .*rebuild the engines with larger limits"):
            runner.infer({"image": images(1, 200, 48)})


class Recording(BaseRunner):
    def __init__(self):
        super().__init__(graph_specs(64)["whole"])
        self.calls = 0

    def infer_impl(self, feed):
        self.calls += 1
        return expected_outputs(feed["image"])


def test_out_of_profile_goes_to_the_fallback_once_noted(engine, capsys):
    fallback = Recording()
    with runner_for(engine, fallback=fallback) as runner:
        for _ in range(2):
            check(runner.infer({"image": images(1, 200, 48)}), images(1, 200, 48))
        assert fallback.calls == 2 and all(c.runs == 0 for c in engine.contexts)
    assert capsys.readouterr().err.count("run on ONNX Runtime") == 1
    assert not fallback.is_active  # deactivated with the runner


def test_cuda_graph_is_captured_on_the_second_run_and_replayed(engine):
    engine.profile = ((1, 64, 64, 3),) * 2 + ((2, 64, 64, 3),)  # static shape, like the tile engine
    with runner_for(engine, streams=1, cuda_graphs=True) as runner:
        context = engine.contexts[0]
        first_addresses = len(context.address_calls)  # buffers for the largest batch, bound at activation
        for seed in range(4):
            image = images(2, 64, 64, seed)
            check(runner.infer({"image": image}), image)
        assert FakeGraph.captures == 1
        assert len(context.address_calls) == first_addresses  # captured addresses never move
        image = images(1, 64, 64)
        check(runner.infer({"image": image}), image)  # another batch size: its own graph later
        assert FakeGraph.captures == 1


def test_submit_returns_before_the_host_needs_the_result(engine):
    with runner_for(engine, timing=True) as runner:
        a, b = images(1, seed=1), images(1, seed=2)
        first, second = runner.submit({"image": a}), runner.submit({"image": b})
        check(second.wait(), b)
        check(first.wait(), a)
        # events recorded at 1, 3, 6 and 10 ms: start, after the copy in, after compute, done
        assert first.stage_ms == {"h2d": 2.0, "compute": 3.0, "d2h": 4.0}
        third = runner.submit({"image": b})  # reuses the first slot: its result was already copied out
        check(third.wait(), b)
        check(first.wait(), a)


def test_deactivate_frees_every_buffer(engine):
    runner = runner_for(engine)
    with runner:
        runner.infer({"image": images(3)})
    assert FakeDeviceBuffer.live and all(b.ptr == 0 for b in FakeDeviceBuffer.live + FakePinnedHostBuffer.live)
    assert runner.slots == [] and runner.loaded is None


def test_engine_with_other_io_is_refused(engine):
    engine.output_dtype = "HALF"
    with pytest.raises(ArtifactError, match="output 'map' is float16, expected float32"):
        runner_for(engine, rebuild_hint="Rebuild with: X").activate()
