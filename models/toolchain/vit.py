"""Dense torchvision VisionTransformer configurations used by the toolchain."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer


@dataclass(frozen=True)
class ViTConfig:
    image_size: int = 28
    channels: int = 1
    patch_size: int = 4
    num_layers: int = 4
    num_heads: int = 4
    hidden_dim: int = 96
    mlp_dim: int = 384
    num_classes: int = 10
    dropout: float = 0.0

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1

    def to_dict(self) -> dict:
        return asdict(self)


CONFIGS = {
    # The bundled image model: small enough to train on two CPU cores.
    "fashion-small": ViTConfig(),
    # ViT-B/16 geometry (random weights) for performance measurements at the paper's size.
    "vit-b16": ViTConfig(image_size=224, channels=3, patch_size=16, num_layers=12, num_heads=12,
                         hidden_dim=768, mlp_dim=3072, num_classes=1000),
    # Tiny random models for tests.
    "tiny": ViTConfig(num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, patch_size=7),
}


def build_vit(cfg: ViTConfig) -> VisionTransformer:
    model = VisionTransformer(
        image_size=cfg.image_size, patch_size=cfg.patch_size, num_layers=cfg.num_layers,
        num_heads=cfg.num_heads, hidden_dim=cfg.hidden_dim, mlp_dim=cfg.mlp_dim,
        num_classes=cfg.num_classes, dropout=cfg.dropout,
    )
    if cfg.channels != 3:
        # torchvision hard-codes RGB input; greyscale data gets a one-channel patch projection.
        model.conv_proj = nn.Conv2d(cfg.channels, cfg.hidden_dim, cfg.patch_size, cfg.patch_size)
        fan_in = cfg.channels * cfg.patch_size ** 2
        nn.init.trunc_normal_(model.conv_proj.weight, std=(1.0 / fan_in) ** 0.5)
        nn.init.zeros_(model.conv_proj.bias)
    return model


def dense_macs(cfg: ViTConfig) -> int:
    """Multiply-adds of one image through the dense model (linear layers + attention matmuls)."""
    t, d = cfg.tokens, cfg.hidden_dim
    patch = (t - 1) * cfg.channels * cfg.patch_size ** 2 * d
    per_layer = t * (4 * d * d + 2 * d * cfg.mlp_dim) + 2 * t * t * d
    return patch + cfg.num_layers * per_layer + d * cfg.num_classes


def set_threads() -> None:
    torch.set_num_threads(2)
