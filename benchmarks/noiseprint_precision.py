"""How much numeric precision Noiseprint++ needs: its residual in each precision against float64.

    python -m benchmarks.noiseprint_precision --weights noiseprint++.th IMAGE_OR_DIR... [--crop 512] [--per-layer]

Noiseprint++ (the 17-layer DnCNN) computes a camera-noise residual that is small next to its
intermediate activations, so rounding errors are amplified on the way out. This runs the released
weights (``noiseprint++.th``, or the ``dncnn`` of any TruFor checkpoint) on real images, centre
crops of ``--crop`` pixels, and compares each form with the float64 residual: relative RMS error and
correlation, worst image. The forms: float32 (what every exported graph keeps); float16 and
bfloat16 storage of every conv's inputs, weights and bias with float32 accumulation (what a GPU's
fp16 kernels do; float16 rounding is also what TF32 does to the inputs of fp32 convolutions on
Ampere and later GPUs); and int8 as ``export.int8`` quantizes it (interior convs, per-channel
weights, per-tensor activations calibrated on the synthetic tiles, run in ONNX Runtime's CPU form).
``--per-layer`` adds int8 for each interior conv alone. These figures decide what the fp16 and int8
exports may lower: see ``export/fp16.py`` and ``export/int8.py``.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reference.checkpoint import load_noiseprint
from reference.config import get_config
from reference.image import load_rgb
from reference.inputs import collect_inputs
from reference.noiseprint import Noiseprint
from reference.optimize import fold_batchnorm_
from reference.weights import recorded_preset

STORAGE = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class NoiseprintGraph(nn.Module):
    """uint8 NHWC image -> residual; the attribute name gives the ONNX nodes the export's ``/dncnn/`` scope."""

    def __init__(self, dncnn: Noiseprint):
        super().__init__()
        self.dncnn = dncnn

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.dncnn(image.permute(0, 3, 1, 2).float() / 256.0)


def rounded_forward(dncnn: Noiseprint, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The folded DnCNN with every conv's inputs, weights and bias rounded to ``dtype``, accumulating in float32."""
    def rounded(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype).float()

    for layer in dncnn.modules():
        if isinstance(layer, nn.Conv2d):
            x = F.conv2d(rounded(x), rounded(layer.weight), rounded(layer.bias), padding=layer.padding)
        elif isinstance(layer, nn.ReLU):
            x = torch.relu(x)
    return x


class RoundedNoiseprint(nn.Module):
    """A folded DnCNN that runs as ``rounded_forward``: what a whole model does with a reduced-precision
    Noiseprint++ (``benchmarks.evaluate --noiseprint-storage``)."""

    def __init__(self, dncnn: Noiseprint, dtype: torch.dtype):
        super().__init__()
        self.dncnn = fold_batchnorm_(copy.deepcopy(dncnn).eval())
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rounded_forward(self.dncnn, x, self.dtype)


def compare(reference: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    error = np.sqrt(np.mean((got - reference) ** 2)) / np.sqrt(np.mean(reference**2))
    return float(error), float(np.corrcoef(reference.ravel(), got.ravel())[0, 1])


def int8_sessions(dncnn: Noiseprint, per_layer: bool) -> dict[str, object]:
    """ONNX Runtime sessions of the DnCNN quantized as ``export.int8`` does: all interior convs, and each alone."""
    import onnx
    import onnxruntime as ort

    from export import calibration
    from export.int8 import calibrate, nodes_to_quantize, quantize_model, unsigned_activations
    from export.session import session_options

    def session(model: onnx.ModelProto):
        cpu_form = unsigned_activations(model).SerializeToString()
        return ort.InferenceSession(cpu_form, session_options(), providers=["CPUExecutionProvider"])

    with tempfile.TemporaryDirectory(prefix="trufor-np-int8-") as tmp:
        graph = Path(tmp) / "noiseprint.onnx"
        with torch.no_grad():
            torch.onnx.export(NoiseprintGraph(dncnn), (torch.zeros(1, 64, 64, 3, dtype=torch.uint8),), str(graph),
                              dynamo=False, opset_version=18, input_names=["image"], output_names=["residual"],
                              dynamic_axes={"image": {0: "batch", 1: "height", 2: "width"}})
        cache = Path(tmp) / "calibration.json"
        tiles = calibration.TileReader(calibration.synthetic_tiles(512), calibration.DEFAULT_COUNT)
        calibrate(graph, tiles, cache, Path(tmp))
        interior = nodes_to_quantize(onnx.load(str(graph)), ("dncnn",))
        chosen = {"int8 (interior convs)": interior}
        if per_layer:
            chosen.update({f"int8 conv {i + 2} alone": [name] for i, name in enumerate(interior)})
        return {label: session(quantize_model(graph, cache, nodes)) for label, nodes in chosen.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.noiseprint_precision", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="images, folders or globs")
    parser.add_argument("--weights", required=True, help="noiseprint++.th, or a TruFor checkpoint (e.g. reference/default_model/trufor_lite.pth.tar)")
    parser.add_argument("--crop", type=int, default=512, help="centre crop side (default 512)")
    parser.add_argument("--per-layer", action="store_true", help="also int8 for each interior conv alone")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)

    preset = recorded_preset(Path(args.weights))  # the project's checkpoints say their width; the releases are 64 wide
    dncnn = Noiseprint(width=get_config(preset).noiseprint_width) if preset else Noiseprint()
    load_noiseprint(dncnn, args.weights)
    dncnn = fold_batchnorm_(dncnn.eval())
    float64 = copy.deepcopy(dncnn).double()
    images = []
    for item in collect_inputs(args.inputs):
        rgb = load_rgb(item.path)
        top, left = max((rgb.shape[0] - args.crop) // 2, 0), max((rgb.shape[1] - args.crop) // 2, 0)
        images.append(np.ascontiguousarray(rgb[top : top + args.crop, left : left + args.crop]))
    sessions = int8_sessions(dncnn, args.per_layer)
    rows: dict[str, list[tuple[float, float]]] = {}
    with torch.no_grad():
        for rgb in images:
            x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 256.0
            reference = float64(x.double()).numpy()
            forms = {"float32": dncnn(x).numpy()}
            forms.update({f"{name} storage": rounded_forward(dncnn, x, dtype).numpy() for name, dtype in STORAGE.items()})
            forms.update({label: s.run(None, {"image": rgb[None]})[0] for label, s in sessions.items()})
            for label, residual in forms.items():
                rows.setdefault(label, []).append(compare(reference, residual))
    table = [
        {"form": label, "images": len(values), "rel_rms_error_max": float(f"{max(v[0] for v in values):.3g}"),
         "correlation_min": round(min(v[1] for v in values), 6)}
        for label, values in rows.items()
    ]
    for row in table:
        print(json.dumps(row))
    if args.markdown:
        print("\n| form | relative RMS error vs float64 (worst image) | correlation (worst image) |\n|---|---|---|")
        for row in table:
            print(f"| {row['form']} | {row['rel_rms_error_max']} | {row['correlation_min']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
