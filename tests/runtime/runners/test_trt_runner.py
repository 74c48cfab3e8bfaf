"""TrtRunner's bookkeeping with a fake engine and fake CUDA memory: chunking, slots, shapes and
addresses set only on change, checked booleans, CUDA graphs under TensorRT's rules, fallback (and
who ran), the torch-tensor path, releasing and freeing memory."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from export.errors import ArtifactError
from reference.errors import TruForError
from export.contract import graph_specs
from runtime.runners.base import BaseRunner
from runtime.runners.trt_runner import TrtRunner

from trt_fakes import (
    FakeDeviceBuffer,
    FakeGraph,
    FakePinnedHostBuffer,
    FakeWholeEngine,
    expected_outputs,
    fake_loaded,
    install_fake_cuda,
)


@pytest.fixture
def engine(monkeypatch):
    install_fake_cuda(monkeypatch)
    return FakeWholeEngine()


def runner_for(engine, **kwargs) -> TrtRunner:
    return TrtRunner(graph_specs(64)["whole"], lambda: fake_loaded(engine), **kwargs)


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
        assert len(context.memory_calls) == 1  # activation memory for the first shape
        runner.infer({"image": images(1, 64, 64)})  # bigger: new shape; image/map/conf buffers grow and move
        assert context.shape_calls[-1] == ("image", (1, 64, 64, 3))
        assert sorted(name for name, _ in context.address_calls[4:]) == ["conf", "image", "map"]  # score fits
        runner.infer({"image": images(1, 40, 48)})  # smaller again: shape set, buffers reused
        assert len(context.shape_calls) == 3 and len(context.address_calls) == 7
        ptrs = [ptr for ptr, _ in context.memory_calls]
        assert len(ptrs) == 3 and ptrs[1] == ptrs[2] != ptrs[0]  # grown once, then reused for the smaller shape
        assert context.strategy == 2  # USER_MANAGED: the activation memory is the runner's to release


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
    """Stands for the ONNX Runtime fallback."""

    runs_on = "onnxruntime"

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
    assert capsys.readouterr().err.count("run on onnxruntime") == 1
    assert not fallback.is_active  # deactivated with the runner


def test_ran_on_names_the_fallback_after_it_ran(engine):
    fallback = Recording()
    with runner_for(engine, fallback=fallback) as runner:
        runner.infer({"image": images(1)})
        assert runner.ran_on == "tensorrt"
        runner.infer({"image": images(1, 200, 48)})
        assert runner.ran_on == "onnxruntime"
        runner.infer({"image": images(1)})
        assert runner.ran_on == "tensorrt"


def test_cuda_graph_is_captured_on_the_second_run_and_replayed(engine):
    engine.profile = ((1, 64, 64, 3),) * 2 + ((2, 64, 64, 3),)  # static shape, like the tile engine
    with runner_for(engine, streams=1, cuda_graphs=True) as runner:
        context = engine.contexts[0]
        first_addresses = len(context.address_calls)  # buffers for the largest batch, bound at activation
        for seed in range(4):
            image = images(2, 64, 64, seed)
            check(runner.infer({"image": image}), image)
        assert FakeGraph.captures == 1 and context.runs == 4  # 1 plain run, 3 replays
        assert len(context.address_calls) == first_addresses  # captured addresses never move


def test_alternating_batch_shapes_never_replay_or_capture_against_tensorrts_rules(engine):
    """TensorRT wants a plain enqueue after every input-shape change before a capture, and a graph
    replays only at the shapes it captured (the fakes raise otherwise). A partial last tile batch
    alternates shapes: each change drops the graph, and outputs stay right."""
    engine.profile = ((1, 64, 64, 3),) * 2 + ((2, 64, 64, 3),)
    with runner_for(engine, streams=1, cuda_graphs=True) as runner:
        for seed, batch in enumerate((2, 2, 1, 2, 1, 1, 1, 2, 2, 2)):
            image = images(batch, 64, 64, seed)
            check(runner.infer({"image": image}), image)
        # captures: the second 2 (after a plain 2), the second 1 of "1, 1, 1", the third 2 of "2, 2, 2"
        assert FakeGraph.captures == 3


def test_a_batch_beyond_the_profile_is_chunked_into_one_shape_for_cuda_graphs(engine):
    engine.profile = ((1, 64, 64, 3),) * 2 + ((2, 64, 64, 3),)
    with runner_for(engine, streams=1, cuda_graphs=True) as runner:
        shapes = []
        submit = runner.submit
        runner.submit = lambda feed: shapes.append(feed["image"].shape[0]) or submit(feed)
        for seed in range(3):
            image = images(5, 64, 64, seed)  # chunks 2, 2 and 1 padded to 2
            out = runner.infer({"image": image})
            assert out["map"].shape == (5, 64, 64)
            check(out, image)
        assert set(shapes) == {2} and FakeGraph.captures == 1


def test_release_memory_frees_buffers_and_activations_and_the_next_call_regrows(engine):
    with runner_for(engine, streams=1) as runner:
        runner.infer({"image": images(1, 128, 128)})
        slot = runner.slots[0]
        held = list(slot.device.values()) + list(slot.host.values())
        assert held and slot.device["(activations)"].nbytes == 1000 * 128 * 128 * 3
        runner.release_memory()
        assert all(buffer.ptr == 0 for buffer in held) and not slot.device and not slot.host
        image = images(1)
        check(runner.infer({"image": image}), image)  # shapes, buffers and activation memory set again
        assert slot.device["(activations)"].nbytes == 1000 * 40 * 48 * 3
        assert engine.contexts[0].memory_calls[-1][0] == slot.device["(activations)"].ptr


def test_growing_device_buffers_is_stream_ordered(engine):
    with runner_for(engine, streams=1) as runner:
        runner.infer({"image": images(1)})
        runner.infer({"image": images(1, 128, 128)})
        stream = runner.slots[0].stream.handle
        assert {buffer.stream for buffer in FakeDeviceBuffer.live} == {stream}


def test_the_tensor_path_runs_in_place_on_torchs_stream(engine, monkeypatch):
    """``submit_tensors`` (tiles blended on the GPU) binds the torch tensors themselves and enqueues on
    torch's current stream; CPU tensors stand for CUDA ones here."""
    import torch

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: SimpleNamespace(cuda_stream=99))
    fallback = Recording()
    with runner_for(engine, fallback=fallback) as runner:
        image = images(2)
        outputs = runner.submit_tensors({"image": torch.from_numpy(image)})()
        assert all(isinstance(t, torch.Tensor) for t in outputs.values()) and runner.ran_on == "tensorrt"
        check({name: tensor.numpy() for name, tensor in outputs.items()}, image)
        context = engine.contexts[0]
        assert dict(context.address_calls)["map"] == outputs["map"].data_ptr()
        big = images(1, 200, 48)
        outputs = runner.submit_tensors({"image": torch.from_numpy(big)})()
        check({name: tensor.numpy() for name, tensor in outputs.items()}, big)
        assert runner.ran_on == "onnxruntime" and fallback.calls == 1


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
