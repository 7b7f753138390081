"""The speech recogniser: a torchaudio Wav2Vec2 (conv feature encoder on raw 16 kHz audio,
transformer encoder, character CTC head) and its ACM form.

Both run on fixed **windows**: chunk c of an utterance is recognised from the audio window
[c*chunk - left, (c+1)*chunk + lookahead) and only the last chunk_frames output frames are kept.
The feature encoder is local (layer-norm mode: no group norm over time, no padding), so the frames
of a window are exactly the frames of the whole utterance at the same positions; the transformer
then sees the chunk with `left` of context. Training, evaluation, export and the server all cut
utterances the same way, so a streamed transcript equals the whole-file transcript by construction.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.models import Wav2Vec2Model, wav2vec2_model
from torchaudio.models.wav2vec2.components import ConvolutionalPositionalEmbedding

from ..acm import ACM, PROJECTIONS, SharedInputCounts, attention, projection_width, weighted_cap_budgets
from ..acm import _init_projection as init_projection
from .text import VOCAB

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class SpeechConfig:
    # (channels, kernel, stride) of the conv feature encoder: 400-sample receptive field, 320 stride.
    conv: tuple[tuple[int, int, int], ...] = ((64, 10, 5),) + ((64, 3, 2),) * 4 + ((64, 2, 2),) * 2
    hidden_dim: int = 128
    num_layers: int = 4
    num_heads: int = 4
    mlp_dim: int = 512
    # No bias in the conv encoder: with layer norm after each conv, the first layer's output is then
    # linear in the waveform and its normalisation makes the features independent of the input
    # gain. With a bias, quiet input (speech at -20 dB is common) gives frames that are mostly the
    # bias pattern: measured at initialisation, features varied 15x less across time than across
    # channels, and training stalled at CTC ~2.5 (greedy CER 0.69 after 36 passes over the corpus).
    conv_bias: bool = False
    pos_conv_kernel: int = 16
    pos_conv_groups: int = 8
    vocab: int = len(VOCAB)
    dropout: float = 0.1
    # Streaming geometry, in 20 ms frames: each window holds left_frames of context + chunk_frames.
    chunk_frames: int = 25
    left_frames: int = 25

    def __post_init__(self):
        object.__setattr__(self, "conv", tuple(tuple(c) for c in self.conv))  # lists from JSON checkpoints

    @property
    def frame_samples(self) -> int:
        s = 1
        for _, _, stride in self.conv:
            s *= stride
        return s

    @property
    def receptive_samples(self) -> int:
        r = 1
        for _, k, stride in reversed(self.conv):
            r = (r - 1) * stride + k
        return r

    @property
    def lookahead_samples(self) -> int:
        return self.receptive_samples - self.frame_samples

    @property
    def chunk_samples(self) -> int:
        return self.chunk_frames * self.frame_samples

    @property
    def left_samples(self) -> int:
        return self.left_frames * self.frame_samples

    @property
    def window_frames(self) -> int:
        return self.left_frames + self.chunk_frames

    @property
    def window_samples(self) -> int:
        return self.window_frames * self.frame_samples + self.lookahead_samples

    def to_dict(self) -> dict:
        return asdict(self)


CONFIGS = {
    # The model to train on two CPU cores in well under an hour (about 120M multiply-adds per
    # second of audio forward, under half of DESIGN §8's measured 13 s-of-audio-per-second model):
    # 4 layers of 128, FFN 512, a 64-channel conv encoder, 0.5 s chunks with 0.5 s of left context.
    "speech-small": SpeechConfig(),
    # For GPU training: a 128-channel conv encoder, 6 layers of 192, FFN 768 (about 430M
    # multiply-adds per second of audio, still a few percent of one core's real time).
    "speech-base": SpeechConfig(conv=((128, 10, 5),) + ((128, 3, 2),) * 4 + ((128, 2, 2),) * 2, hidden_dim=192,
                                num_layers=6, num_heads=4, mlp_dim=768),
    # Larger transformer on the same encoder, for a corpus several times the default: 8 layers of
    # 256, FFN 1024.
    "speech-large": SpeechConfig(conv=((128, 10, 5),) + ((128, 3, 2),) * 4 + ((128, 2, 2),) * 2, hidden_dim=256,
                                 num_layers=8, num_heads=4, mlp_dim=1024),
    # Tiny random model for tests: two layers of 32, a 32-channel conv encoder.
    "tiny": SpeechConfig(conv=((32, 10, 5),) + ((32, 3, 2),) * 4 + ((32, 2, 2),) * 2, hidden_dim=32, num_layers=2,
                         num_heads=2, mlp_dim=64, pos_conv_kernel=8, pos_conv_groups=4, dropout=0.0,
                         chunk_frames=10, left_frames=15),
}


def build_dense(cfg: SpeechConfig) -> Wav2Vec2Model:
    return wav2vec2_model(
        extractor_mode="layer_norm", extractor_conv_layer_config=[list(c) for c in cfg.conv], extractor_conv_bias=cfg.conv_bias,
        encoder_embed_dim=cfg.hidden_dim, encoder_projection_dropout=cfg.dropout,
        encoder_pos_conv_kernel=cfg.pos_conv_kernel, encoder_pos_conv_groups=cfg.pos_conv_groups,
        encoder_num_layers=cfg.num_layers, encoder_num_heads=cfg.num_heads, encoder_attention_dropout=cfg.dropout,
        encoder_ff_interm_features=cfg.mlp_dim, encoder_ff_interm_dropout=0.0, encoder_dropout=cfg.dropout,
        encoder_layer_norm_first=True, encoder_layer_drop=0.0, aux_num_out=cfg.vocab,
    )


# --- windows ----------------------------------------------------------------------------------

def chunk_count(samples: int, cfg: SpeechConfig) -> int:
    """Chunks that cover `samples` of audio (at least one)."""
    return max(1, -(-samples // cfg.chunk_samples))


def pad_for_windows(audio: torch.Tensor, chunks: int, cfg: SpeechConfig) -> torch.Tensor:
    """[B, S] -> [B, left + chunks*chunk + lookahead]: zeros before (missing context) and after."""
    total = chunks * cfg.chunk_samples + cfg.lookahead_samples
    return F.pad(audio[:, :total], (cfg.left_samples, total - min(audio.shape[1], total)))


def windows(audio: torch.Tensor, cfg: SpeechConfig) -> torch.Tensor:
    """The windows the server feeds the graph: [B, S] -> [B, chunks, window_samples]."""
    padded = pad_for_windows(audio, chunk_count(audio.shape[1], cfg), cfg)
    return padded.unfold(1, cfg.window_samples, cfg.chunk_samples)


def window_rows(audio: torch.Tensor, cfg: SpeechConfig) -> torch.Tensor:
    """windows() as the graph's batch rows: [B, S] -> [B*chunks, window_samples], utterance by
    utterance (keep_chunk puts the outputs back)."""
    return windows(audio, cfg).reshape(-1, cfg.window_samples)


def features(model: nn.Module, audio: torch.Tensor) -> torch.Tensor:
    """Conv feature encoder + projection: [B, S] -> [B, frames, hidden]."""
    x, _ = model.feature_extractor(audio, None)
    return model.encoder.feature_projection(x)


def windowed_frames(x: torch.Tensor, cfg: SpeechConfig) -> torch.Tensor:
    """Frame features of a padded utterance [B, F, C] -> the windows' frames [B*chunks, window_frames, C]."""
    w = x.unfold(1, cfg.window_frames, cfg.chunk_frames)  # [B, chunks, C, window_frames]
    return w.permute(0, 1, 3, 2).reshape(-1, cfg.window_frames, x.shape[-1])


def keep_chunk(logits: torch.Tensor, batch: int, cfg: SpeechConfig) -> torch.Tensor:
    """Window outputs [B*chunks, window_frames, V] -> the utterances' frames [B, chunks*chunk_frames, V]."""
    kept = logits[:, cfg.left_frames:]
    return kept.reshape(batch, -1, kept.shape[-1])


def dense_frames_logits(model: Wav2Vec2Model, frames: torch.Tensor, batch: int, cfg: SpeechConfig) -> torch.Tensor:
    """The dense transformer and CTC head over window frames [batch*chunks, window_frames, C]
    (windowed_frames) -> CTC logits [batch, chunks*chunk_frames, V]."""
    return keep_chunk(model.aux(model.encoder.transformer(frames)), batch, cfg)


def dense_windows_logits(model: Wav2Vec2Model, audio: torch.Tensor, cfg: SpeechConfig) -> torch.Tensor:
    """Training forward of the dense model: conv once per utterance, transformer per window.

    audio [B, S] (zero-padded to the longest) -> CTC logits [B, chunks*chunk_frames, V].
    """
    padded = pad_for_windows(audio, chunk_count(audio.shape[1], cfg), cfg)
    return dense_frames_logits(model, windowed_frames(features(model, padded), cfg), audio.shape[0], cfg)


def output_frames(samples: torch.Tensor, cfg: SpeechConfig) -> torch.Tensor:
    """CTC input lengths: every frame of the chunks that cover each utterance."""
    return (-(-samples // cfg.chunk_samples)).clamp_min(1) * cfg.chunk_frames


# --- ACM form ---------------------------------------------------------------------------------

class ACMSpeechLayer(nn.Module):
    """A pre-norm Wav2Vec2 encoder layer whose FFN is an ACM, and with `projections` its q, k, v
    and o projections too (low-rank learners, DESIGN §2); otherwise attention is the dense module."""

    def __init__(self, cfg: SpeechConfig, dense_layer: nn.Module, n: int, projections: bool):
        super().__init__()
        d = cfg.hidden_dim
        self.heads = cfg.num_heads
        self.layer_norm = copy.deepcopy(dense_layer.layer_norm)
        self.final_layer_norm = copy.deepcopy(dense_layer.final_layer_norm)
        self.dropout = nn.Dropout(cfg.dropout)
        self.attention = None if projections else copy.deepcopy(dense_layer.attention)
        if projections:
            width = projection_width(d, n)
            self.q, self.k, self.v, self.o = (ACM(d, n, width, kind) for kind in PROJECTIONS)
            # q, k and v read the same input: served, one gate and one cap decide their counts.
            self.qkv = SharedInputCounts([self.q, self.k, self.v])
        self.mlp = ACM(d, n, cfg.mlp_dim // n, "ffn")
        for _, acm in self.acms():
            acm.tokens = cfg.window_frames  # the model runs on windows of a fixed length

    def acms(self) -> list[tuple[str, ACM]]:
        proj = [] if self.attention is not None else [(f"attention.{k}", getattr(self, k)) for k in PROJECTIONS]
        return proj + [("feed_forward", self.mlp)]

    def block(self, x: torch.Tensor, run, run_qkv=None) -> torch.Tensor:
        """The layer, with run(acm, z) -> output deciding how each ACM executes (served or relaxed);
        run_qkv(layer, z) -> (q, k, v), when given, runs the three projections of the same input."""
        h = self.layer_norm(x)
        if self.attention is not None:
            a = self.attention(h)
        else:
            q, k, v = run_qkv(self, h) if run_qkv is not None else (run(self.q, h), run(self.k, h), run(self.v, h))
            a = run(self.o, attention(q, k, v, self.heads))
        x = x + self.dropout(a)
        return x + run(self.mlp, self.final_layer_norm(x))


class ACMWav2Vec2(nn.Module):
    """forward(audio [B, window_samples] float32, budget [B] float64)
    -> (logits [B, window_frames, vocab], learner_counts [B, A, window_frames])."""

    def __init__(self, cfg: SpeechConfig, dense: Wav2Vec2Model, n: int = 4, projections: bool = True):
        super().__init__()
        self.cfg, self.n, self.projections = cfg, n, projections
        self.feature_extractor = copy.deepcopy(dense.feature_extractor)
        self.feature_projection = copy.deepcopy(dense.encoder.feature_projection)
        t = dense.encoder.transformer
        # Built anew and loaded: deepcopy cannot copy weight-norm's derived (non-leaf) weight.
        self.pos_conv_embed = ConvolutionalPositionalEmbedding(cfg.hidden_dim, cfg.pos_conv_kernel, cfg.pos_conv_groups)
        self.pos_conv_embed.load_state_dict(t.pos_conv_embed.state_dict())
        self.layer_norm = copy.deepcopy(t.layer_norm)
        # torchaudio normalises before the layers when they are post-norm, and after them when
        # they are pre-norm (ours): mirror its choice exactly.
        self.norm_first = t.layer_norm_first
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(ACMSpeechLayer(cfg, layer, n, projections) for layer in t.layers)
        self.aux = copy.deepcopy(dense.aux)
        # How the window cap shares a budget among the ACMs (weighted_cap_budgets): equal weights
        # cap every ACM at the budget itself; speech.tune_caps searches them by the loss they cost.
        self.register_buffer("cap_weights", torch.ones(len(self.acms()), dtype=torch.float64))
        # False runs the gates alone (every cap at all learners), to read what they ask for.
        self.capped = True

    def load_state_dict(self, state: dict, strict: bool = True):
        # Checkpoints from before cap weights existed were trained and served with equal ones.
        if "cap_weights" not in state:
            state = {**state, "cap_weights": torch.ones_like(self.cap_weights)}
        return super().load_state_dict(state, strict)

    def acms(self) -> list[tuple[str, int, ACM]]:
        return [(f"encoder.layers.{i}.{name}", i, acm) for i, layer in enumerate(self.layers) for name, acm in layer.acms()]

    def cap_budgets(self, budget: torch.Tensor) -> torch.Tensor:
        """Per window and ACM [N, A], in acms() order, the budget each ACM's cap applies: the
        window's budget shared in proportion to cap_weights (acm.weighted_cap_budgets; with equal
        weights every ACM's cap is the budget), so an ACM whose minimum costs more than its share
        runs that minimum and the others share the rest. Uncapped (capped False): all learners."""
        if not self.capped:
            return torch.ones(budget.shape[0], len(self.cap_weights), dtype=torch.float64, device=budget.device)
        return weighted_cap_budgets([a for _, _, a in self.acms()], budget, self.cap_weights)

    def embed_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Projected frames [N, T, C] -> the first layer's input (positional conv, norm if first)."""
        x = x + self.pos_conv_embed(x)
        return self.dropout(self.layer_norm(x) if self.norm_first else x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Last layer's output -> CTC logits (final norm when the layers are pre-norm)."""
        return self.aux(x if self.norm_first else self.layer_norm(x))

    def project(self, audio: torch.Tensor) -> torch.Tensor:
        """Windows [N, window_samples] -> projected conv features [N, window_frames, C]: the part
        no budget touches."""
        x, _ = self.feature_extractor(audio, None)
        return self.feature_projection(x)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        return self.embed_frames(self.project(audio))

    def forward(self, audio: torch.Tensor, budget: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.from_projected(self.project(audio), budget)

    def from_projected(self, projected: torch.Tensor, budget: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """forward() after project(): what tune_caps runs again for every candidate."""
        x = self.embed_frames(projected)
        budget = budget.to(torch.float64)
        cap = self.cap_budgets(budget)
        counts: list[torch.Tensor] = []

        def run(acm: ACM, z: torch.Tensor) -> torch.Tensor:
            y, k = acm(z, budget, cap[:, len(counts)])
            counts.append(k)
            return y

        def run_qkv(layer: ACMSpeechLayer, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
            at = len(counts)
            ran = layer.qkv.run(z, budget, cap[:, at:at + 3])
            counts.extend(k for _, k in ran)
            return tuple(y for y, _ in ran)

        for layer in self.layers:
            x = layer.block(x, run, run_qkv)
        # run() is called in acms() order: q, k, v, o, then the FFN, layer by layer.
        return self.head(x), torch.stack(counts, 1)

    def fixed_macs(self) -> int:
        return fixed_macs(self.cfg, self.projections)


def conv_macs(cfg: SpeechConfig, samples: int) -> tuple[int, int]:
    """Multiply-adds of the conv feature encoder on `samples`, and the frames it yields."""
    macs, length, c_in = 0, samples, 1
    for c_out, k, s in cfg.conv:
        length = (length - k) // s + 1
        macs += length * c_out * c_in * k
        c_in = c_out
    return macs, length


def fixed_macs(cfg: SpeechConfig, projection_acms: bool = True) -> int:
    """Per window: conv encoder, feature projection, positional conv, attention matmuls (and the
    q/k/v/o projections when they are not ACMs), head."""
    conv, frames = conv_macs(cfg, cfg.window_samples)
    assert frames == cfg.window_frames, (frames, cfg.window_frames)
    d, t = cfg.hidden_dim, frames
    proj = t * cfg.conv[-1][0] * d
    pos = t * d * (d // cfg.pos_conv_groups) * cfg.pos_conv_kernel
    attn = cfg.num_layers * ((0 if projection_acms else 4 * t * d * d) + 2 * t * t * d)
    return conv + proj + pos + attn + t * d * cfg.vocab


def dense_macs(cfg: SpeechConfig) -> int:
    return fixed_macs(cfg, projection_acms=False) + cfg.num_layers * cfg.window_frames * 2 * cfg.hidden_dim * cfg.mlp_dim


@torch.no_grad()
def from_dense(dense: Wav2Vec2Model, cfg: SpeechConfig, n: int = 4, projections: bool = True) -> ACMWav2Vec2:
    """The ACM model. FFN learners start as the dense FFN's most important hidden units; q/k/v/o
    learners as blocks of the projection's singular directions (the image model's initialisation)."""
    model = ACMWav2Vec2(cfg, dense, n, projections)
    for layer, block in zip(model.layers, dense.encoder.transformer.layers):
        if projections:
            attn = block.attention
            for acm, linear in ((layer.q, attn.q_proj), (layer.k, attn.k_proj), (layer.v, attn.v_proj), (layer.o, attn.out_proj)):
                init_projection(acm, linear.weight, linear.bias)
        fc1, fc2 = block.feed_forward.intermediate_dense, block.feed_forward.output_dense
        importance = fc1.weight.norm(dim=1) * fc2.weight.norm(dim=0)
        perm = importance.argsort(descending=True)
        layer.mlp.w1.copy_(fc1.weight[perm].t())
        layer.mlp.b1.copy_(fc1.bias[perm])
        layer.mlp.w2.copy_(fc2.weight[:, perm].t())
        # The FFN's output bias has no place in a learner (k = 0 must give zero); as for the image
        # model it is dropped here and phase 1 distillation absorbs it.
    return model


@torch.no_grad()
def dense_trace(dense: Wav2Vec2Model, frames: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
    """Dense transformer over window frames [N, T, C] (projected features): logits and, per layer,
    the (input, output) of q, k, v, o and the FFN. torchaudio's attention is recomputed from its
    projections so their inputs and outputs can be recorded; the result equals its own."""
    t = dense.encoder.transformer
    x = t._preprocess(frames)
    pairs = []
    for layer in t.layers:
        attn = layer.attention
        h = layer.layer_norm(x)
        q, k, v = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
        a = attention(q, k, v, attn.num_heads)
        o = attn.out_proj(a)
        x = x + layer.dropout(o)
        h2 = layer.final_layer_norm(x)
        m = layer.feed_forward(h2)
        pairs.append({"q": (h, q), "k": (h, k), "v": (h, v), "o": (a, o), "ffn": (h2, m)})
        x = x + m
    return dense.aux(x if t.layer_norm_first else t.layer_norm(x)), pairs


def greedy_decode(logits: torch.Tensor) -> str:
    """Best path of one utterance's CTC logits [frames, V]: collapse repeats, drop blanks."""
    ids = logits.argmax(-1).tolist()
    out, prev = [], -1
    for i in ids:
        if i != prev and i != 0:
            out.append(VOCAB[i])
        prev = i
    return " ".join("".join(out).split())


def edit_distance(a: list, b: list) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def error_rates(hyps: list[str], refs: list[str]) -> dict:
    """Character and word error rates over a set: total edits / total reference length."""
    ce = sum(edit_distance(list(h), list(r)) for h, r in zip(hyps, refs))
    we = sum(edit_distance(h.split(), r.split()) for h, r in zip(hyps, refs))
    return {"cer": ce / max(1, sum(len(r) for r in refs)), "wer": we / max(1, sum(len(r.split()) for r in refs))}

