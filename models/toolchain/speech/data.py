"""The synthetic corpus (corpus.py) as training batches: whole split in memory as int16, batches of
similar-length utterances, addressable by step so a resumed run sees the same data."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from . import corpus
from .text import encode


@dataclass
class Split:
    audio: list[np.ndarray]      # int16 per utterance
    texts: list[str]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def load(root: str, split: str, limit: int | None = None) -> Split:
    rows = corpus.load_index(root, split)[:limit]
    audio = []
    for r in rows:
        pcm = (corpus.read_wav(os.path.join(root, split, r["id"] + ".wav")) * 32768.0).round().astype(np.int16)
        audio.append(pcm)
    return Split(audio, [r["text"] for r in rows], [r["id"] for r in rows])


def collate(split: Split, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(audio [B, S] float32 zero-padded, samples [B], targets [sum L], target lengths [B])."""
    longest = max(len(split.audio[i]) for i in idx)
    audio = torch.zeros(len(idx), longest)
    for row, i in enumerate(idx):
        audio[row, :len(split.audio[i])] = torch.from_numpy(split.audio[i].astype(np.float32) / 32768.0)
    samples = torch.tensor([len(split.audio[i]) for i in idx])
    targets = [encode(split.texts[i]) for i in idx]
    return audio, samples, torch.tensor([t for ts in targets for t in ts]), torch.tensor([len(t) for t in targets])


class Batches:
    """Deterministic training batches by step: each epoch a seeded permutation, cut into pools of
    50 batches sorted by length (little padding), pools' batches in seeded order.

    With sorted_epochs=E, the first E epochs instead run shortest utterances first (SortaGrad,
    Amodei et al. 2016): CTC from scratch learns the alignment on short utterances more easily.
    """

    def __init__(self, split: Split, batch: int, seed: int, sorted_epochs: int = 0):
        self.split, self.batch, self.seed, self.sorted_epochs = split, batch, seed, sorted_epochs
        self.per_epoch = max(1, len(split) // batch)

    def indices(self, step: int) -> list[int]:
        epoch, i = divmod(step, self.per_epoch)
        rng = np.random.default_rng(self.seed + epoch)
        perm = rng.permutation(len(self.split))[:self.per_epoch * self.batch]
        if epoch < self.sorted_epochs:
            by_length = sorted(perm, key=lambda j: len(self.split.audio[j]))
            return [int(j) for j in by_length[i * self.batch:(i + 1) * self.batch]]
        pool = 50 * self.batch
        batches = []
        for start in range(0, len(perm), pool):
            chunk = sorted(perm[start:start + pool], key=lambda j: len(self.split.audio[j]))
            batches += [chunk[b:b + self.batch] for b in range(0, len(chunk), self.batch)]
        order = rng.permutation(len(batches))
        return [int(j) for j in batches[order[i]]]

    def __call__(self, step: int):
        return collate(self.split, self.indices(step))


def gain_augment(audio: torch.Tensor, step: int, seed: int) -> torch.Tensor:
    """Random gain of -12..+6 dB per utterance (clipped), on top of the corpus' own variation."""
    gen = torch.Generator().manual_seed(seed * 100003 + step)
    db = torch.rand(audio.shape[0], 1, generator=gen) * 18 - 12
    return (audio * 10 ** (db / 20)).clamp(-1, 1)


def speed_perturb(audio: torch.Tensor, samples: torch.Tensor, step: int, seed: int,
                  spread: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each utterance played 1 +- spread times as fast (uniform, seeded by step), by linear
    interpolation: tempo and pitch move together, like a shorter or longer vocal tract, so the
    model hears voices between the corpus' own (Ko et al. 2015 use 0.9 / 1.0 / 1.1).

    audio [B, S] zero-padded, samples [B] -> (audio [B, S'] zero-padded, samples [B]).
    """
    gen = torch.Generator().manual_seed(seed * 100019 + step)
    factors = 1 + (torch.rand(audio.shape[0], generator=gen) * 2 - 1) * spread
    lengths = [max(1, int(round(int(n) / float(f)))) for n, f in zip(samples, factors)]
    out = audio.new_zeros(audio.shape[0], max(lengths))
    for row, (n, m) in enumerate(zip(samples.tolist(), lengths)):
        clip = audio[row, :n].reshape(1, 1, n)
        out[row, :m] = torch.nn.functional.interpolate(clip, size=m, mode="linear", align_corners=True).reshape(m)
    return out, torch.tensor(lengths, dtype=samples.dtype, device=samples.device)
