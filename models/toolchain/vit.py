"""Dense torchvision VisionTransformer configurations used by the toolchain."""
from __future__ import annotations

import os
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
    # Convolutional stem (Xiao et al. 2021, "Early convolutions help transformers see better"):
    # output channels of stride-2 3x3 conv + BN + ReLU layers, then a 1x1 conv to hidden_dim.
    # Empty: the classic single patch_size x patch_size convolution.
    stem: tuple[int, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "stem", tuple(self.stem))  # lists come back from JSON checkpoints
        if self.stem and 2 ** len(self.stem) != self.patch_size:
            raise ValueError(f"a stem of {len(self.stem)} stride-2 convs makes {2 ** len(self.stem)}-pixel "
                             f"patches, not patch_size {self.patch_size}")

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1

    def to_dict(self) -> dict:
        return asdict(self)


CONFIGS = {
    # The first bundled image model: patchify stem; trains on two CPU cores in half an hour.
    "fashion-small": ViTConfig(),
    # The same transformer behind a small convolutional stem, which costs 3% of the dense MACs.
    "fashion-conv": ViTConfig(stem=(24, 48)),
    # Wider and deeper, for GPU training: 6 layers of 128, FFN 512, a 32/64-channel stem.
    "fashion-conv-wide": ViTConfig(stem=(32, 64), hidden_dim=128, mlp_dim=512, num_layers=6),
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
    if cfg.channels != 3 or cfg.stem:
        # torchvision hard-codes an RGB patchify stem; greyscale data and conv stems get their own.
        model.conv_proj = patch_embedding(cfg)
    return model


def patch_embedding(cfg: ViTConfig) -> nn.Module:
    """Image [B, C, H, W] -> token features [B, hidden, H/patch, W/patch]."""
    if not cfg.stem:
        conv = nn.Conv2d(cfg.channels, cfg.hidden_dim, cfg.patch_size, cfg.patch_size)
        fan_in = cfg.channels * cfg.patch_size ** 2
        nn.init.trunc_normal_(conv.weight, std=(1.0 / fan_in) ** 0.5)
        nn.init.zeros_(conv.bias)
        return conv
    layers: list[nn.Module] = []
    c = cfg.channels
    for out in cfg.stem:
        layers += [nn.Conv2d(c, out, 3, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        c = out
    layers.append(nn.Conv2d(c, cfg.hidden_dim, 1))
    return nn.Sequential(*layers)


def embedding_macs(cfg: ViTConfig) -> int:
    """Multiply-adds of the patch embedding for one image."""
    if not cfg.stem:
        return (cfg.tokens - 1) * cfg.channels * cfg.patch_size ** 2 * cfg.hidden_dim
    macs, c, side = 0, cfg.channels, cfg.image_size
    for out in cfg.stem:
        side = (side + 1) // 2
        macs += side * side * out * c * 9
        c = out
    return macs + side * side * c * cfg.hidden_dim


def dense_macs(cfg: ViTConfig) -> int:
    """Multiply-adds of one image through the dense model (linear layers + attention matmuls)."""
    t, d = cfg.tokens, cfg.hidden_dim
    per_layer = t * (4 * d * d + 2 * d * cfg.mlp_dim) + 2 * t * t * d
    return embedding_macs(cfg) + cfg.num_layers * per_layer + d * cfg.num_classes


def set_threads() -> None:
    """Two threads (the reference machine's cores), or ACM_TORCH_THREADS.

    With other work on the same cores, one thread is faster than two: a preempted thread stalls
    the other at every parallel region (measured: 290 img/s alone with two threads, 48 img/s with
    two threads beside builds and tests).
    """
    torch.set_num_threads(int(os.environ.get("ACM_TORCH_THREADS", "2")))


def add_training_options(ap, threads: bool = False) -> None:
    """--checkpoint-minutes and --device, which every resumable training command takes, and
    --threads (else set_threads' rule) where asked."""
    ap.add_argument("--checkpoint-minutes", type=float, default=3.0)
    if threads:
        ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda when one is present")


def start_training(args) -> torch.device:
    """Threads, the device of --device, and the seed every training command starts from."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    else:
        set_threads()
    device = torch_device(args.device)
    torch.manual_seed(0)
    return device


def torch_device(name: str) -> torch.device:
    """The device training runs on: "cpu" (the default everywhere) or "cuda" when one is present.

    Checkpoints are read back on the CPU (checkpoint.load_file), so a model trained on a GPU is
    converted, evaluated and exported here like any other.
    """
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {name}: PyTorch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device
