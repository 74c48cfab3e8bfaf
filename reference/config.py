"""Model presets: one frozen dataclass of numbers per variant, handed to one builder."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The official code divides uint8 pixels by 256, not 255 (ARCHITECTURE.md 4.1).
PIXEL_SCALE = 256.0

# BatchNorm eps of the confidence decoder, which is not stored in checkpoints and differs between
# the two official entry points (ARCHITECTURE.md 4.7).
CONF_BN_EPS = {"docker": 1e-5, "train": 1e-3}


@dataclass(frozen=True)
class TruForConfig:
    """Hyper-parameters of a TruFor variant; the defaults are the released model (MiT-B2 encoders)."""

    embed_dims: tuple[int, int, int, int] = (64, 128, 320, 512)
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    depths: tuple[int, int, int, int] = (3, 4, 6, 3)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratio: int = 4
    decoder_dim: int = 512
    num_classes: int = 2
    noiseprint_depth: int = 17
    noiseprint_width: int = 64
    drop_path_rate: float = 0.1
    # "docker" reproduces test_docker/trufor_test.py, "train" reproduces TruFor_train_test/test.py.
    conf_bn_variant: str = "docker"
    # Fused scaled-dot-product attention (no N x N/R^2 matrix in memory) or the explicit
    # matmul-softmax-matmul of the official code; the two agree to float rounding.
    fused_attention: bool = True

    def __post_init__(self):
        if self.conf_bn_variant not in CONF_BN_EPS:
            raise ValueError(
                f"conf_bn_variant must be one of {sorted(CONF_BN_EPS)}, got {self.conf_bn_variant!r}"
            )
        for name in ("embed_dims", "num_heads", "depths", "sr_ratios"):
            if len(getattr(self, name)) != 4:
                raise ValueError(f"{name} needs one value per encoder stage (4)")

    @property
    def conf_bn_eps(self) -> float:
        return CONF_BN_EPS[self.conf_bn_variant]

    def replace(self, **changes) -> TruForConfig:
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, TruForConfig] = {
    # The released TruFor model: 68,697,421 parameters, loads trufor.pth.tar strictly.
    "trufor": TruForConfig(),
    # MiT-B0 encoders and a 256-wide decoder: the same code path at about a fifth of the encoder cost.
    "trufor_b0": TruForConfig(
        embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2), decoder_dim=256
    ),
    # The project's own default model (training/recipe.py): MiT-B0 depths with narrower deep
    # stages, a 128-wide decoder and a 17 x 32 Noiseprint++ (a quarter of the released one's
    # convolution cost): 7.2 M parameters, trainable on a 2-core CPU in a working day.
    "trufor_lite": TruForConfig(
        embed_dims=(32, 64, 128, 192),
        num_heads=(1, 2, 4, 6),
        depths=(2, 2, 2, 2),
        decoder_dim=128,
        noiseprint_width=32,
    ),
    # Tests and CPU pipeline checks: every module present, a few hundred thousand parameters.
    "tiny": TruForConfig(
        embed_dims=(16, 32, 64, 128),
        num_heads=(1, 1, 2, 2),
        depths=(1, 1, 1, 1),
        decoder_dim=32,
        noiseprint_depth=5,
        noiseprint_width=16,
    ),
}


def get_config(preset: str, **overrides) -> TruForConfig:
    """The preset's config with overrides applied; an unknown name lists the valid ones."""
    try:
        config = PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}") from None
    return config.replace(**overrides) if overrides else config
