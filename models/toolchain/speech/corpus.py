"""Synthetic English speech corpus: espeak-ng voices, rates, pitch, volume, noise and reverberation.

    nice -n 15 /usr/bin/python3 -m models.toolchain.speech.corpus --out .cache/speech/espeak-v1 \\
        --train 4000 --val 300 --test 400 --jobs 2

Splits are disjoint by sentence AND by voice: the validation and test sets are spoken by voice
variants that never speak in training, and their sentences never occur in training. Everything is
derived from --seed (sentence order, voice per utterance, every augmentation), so a seed and the
installed espeak-ng fix the corpus. Each split folder holds 16 kHz mono 16-bit WAV files and
index.jsonl (one line per utterance: id, text, voice, and the augmentation applied).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import subprocess
import tempfile
import wave
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from . import text as textmod

SAMPLE_RATE = 16000
SPLITS = ("train", "val", "test")
# espeak-ng's own English accents (the gmw voices ship with the Debian package; mbrola ones need
# extra packages and are not used).
ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
           "en-029", "en-us-nyc"]
# Voice variants of espeak-ng 1.51 (espeak-ng-data/voices/!v). A voice is accent + variant.
VARIANTS = """Alex Alicia Andrea Andy Annie AnxiousAndy Denis Diogo Gene Gene2 Henrique Hugo Jacky Lee
Marco Mario Michael Mike Nguyen RicishayMax Storm Tweaky adam anika antonio aunty belinda benjamin boris
caleb david ed edward edward2 f1 f2 f3 f4 f5 gustave iven iven2 iven3 iven4 john kaukovalta klatt klatt2
klatt3 klatt4 linda m1 m2 m3 m4 m5 m6 m7 m8 marcelo max michel miguel norbert pablo paul pedro""".split()
# Share of the variants (and so of the voices) each held-out split gets; training gets the rest.
HELD_OUT_VARIANTS = {"val": 0.12, "test": 0.18}
# Share of the generated sentences each held-out split gets.
HELD_OUT_SENTENCES = {"val": 0.06, "test": 0.10}


def voice_split(seed: int) -> dict[str, list[str]]:
    """Variants per split, disjoint; shuffled by seed."""
    variants = sorted(VARIANTS)
    random.Random(seed).shuffle(variants)
    n_val = max(1, round(len(variants) * HELD_OUT_VARIANTS["val"]))
    n_test = max(1, round(len(variants) * HELD_OUT_VARIANTS["test"]))
    return {"test": sorted(variants[:n_test]), "val": sorted(variants[n_test:n_test + n_val]),
            "train": sorted(variants[n_test + n_val:])}


def sentence_split(counts: dict[str, int], seed: int, words: list[str] | None = None) -> dict[str, list[str]]:
    """Distinct sentences per split: one pool, cut into disjoint ranges."""
    pool = textmod.sentences(sum(counts.values()), seed, words)
    out, start = {}, 0
    for split in SPLITS:
        out[split] = pool[start:start + counts[split]]
        start += counts[split]
    return out


def draw_item(rng: random.Random, uid: str, sentence: str, variants: list[str]) -> dict:
    """One utterance: its sentence, a voice from `variants`, and every augmentation, from rng."""
    item = {
        "id": uid,
        "text": sentence,
        "accent": rng.choice(ACCENTS),
        "variant": rng.choice(variants),
        "rate": rng.randint(125, 215),           # words per minute
        "pitch": rng.randint(20, 80),            # espeak-ng 0..99
        "gain_db": round(rng.uniform(-18.0, 0.0), 2),
        "lead_s": round(rng.uniform(0.05, 0.4), 3),
        "tail_s": round(rng.uniform(0.05, 0.4), 3),
        "reverb_rt60": round(rng.uniform(0.15, 0.6), 3) if rng.random() < 0.4 else 0.0,
        "noise": rng.choice(["white", "pink", "brown"]) if rng.random() < 0.75 else "none",
        "snr_db": round(rng.uniform(5.0, 30.0), 2),
        "seed": rng.randrange(2 ** 31),
    }
    item["voice"] = f"{item['accent']}+{item['variant']}"
    return item


def plan(counts: dict[str, int], seed: int, words: list[str] | None = None,
         extra_train: int = 0) -> dict[str, list[dict]]:
    """Every utterance to synthesise: text, voice and augmentation, all drawn from the seed.

    extra_train adds that many training utterances (ids train-x000000...) after the planned ones,
    from a second sentence stream that skips every validation and test sentence: the corpus grows
    while its held-out splits stay exactly those of the same seed and counts without extras.
    """
    voices = voice_split(seed)
    texts = sentence_split(counts, seed, words)
    out: dict[str, list[dict]] = {}
    for si, split in enumerate(SPLITS):
        rng = random.Random(seed * 1000 + si)
        out[split] = [draw_item(rng, f"{split}-{i:06d}", sentence, voices[split])
                      for i, sentence in enumerate(texts[split])]
    if extra_train:
        taken = {sentence for split in SPLITS for sentence in texts[split]}
        rng = random.Random(seed * 1000 + 99)
        fresh = textmod.sentences(extra_train + len(taken), seed + 100_003, words)
        fresh = [s for s in fresh if s not in taken][:extra_train]
        if len(fresh) < extra_train:
            raise RuntimeError(f"only {len(fresh)} new sentences for {extra_train} extra training utterances")
        out["train"] = out["train"] + [draw_item(rng, f"train-x{i:06d}", sentence, voices["train"])
                                       for i, sentence in enumerate(fresh)]
    return out


def synthesise(item: dict) -> np.ndarray:
    """espeak-ng speech for one item at its native rate (22050 Hz), as float32 in [-1, 1]."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "u.wav")
        subprocess.run(["espeak-ng", "-v", item["voice"], "-s", str(item["rate"]), "-p", str(item["pitch"]),
                        "-w", path, item["text"]], check=True, capture_output=True, timeout=60)
        with wave.open(path) as w:
            rate, width, frames = w.getframerate(), w.getsampwidth(), w.readframes(w.getnframes())
    if width != 2:
        raise RuntimeError(f"espeak-ng wrote {8 * width}-bit audio; expected 16-bit")
    audio = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    return resample(audio, rate, SAMPLE_RATE)


def resample(audio: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst:
        return audio
    import torch
    import torchaudio.functional as AF
    return AF.resample(torch.from_numpy(audio), src, dst).numpy()


def coloured_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n).astype(np.float32)
    if kind == "white":
        return white
    spectrum = np.fft.rfft(white)
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    # pink: power 1/f (amplitude 1/sqrt f); brown: power 1/f^2.
    spectrum = spectrum / (np.sqrt(f) if kind == "pink" else f)
    out = np.fft.irfft(spectrum, n).astype(np.float32)
    return out / (out.std() + 1e-9)


def reverberate(audio: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """A simple room: exponentially decaying noise impulse response (-60 dB at rt60), direct path first."""
    length = int(rt60 * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    ir = rng.standard_normal(length).astype(np.float32) * np.exp(-6.9078 * t / rt60).astype(np.float32)
    ir[0] = 0.0
    ir = ir / (np.sqrt((ir ** 2).sum()) + 1e-9) * 0.5
    ir[0] = 1.0
    wet = np.convolve(audio, ir)[:len(audio)]
    return wet / (np.abs(wet).max() + 1e-9) * (np.abs(audio).max() + 1e-9)


def augment(speech: np.ndarray, item: dict) -> np.ndarray:
    rng = np.random.default_rng(item["seed"])
    audio = np.concatenate([np.zeros(int(item["lead_s"] * SAMPLE_RATE), np.float32), speech,
                            np.zeros(int(item["tail_s"] * SAMPLE_RATE), np.float32)])
    if item["reverb_rt60"] > 0:
        audio = reverberate(audio, item["reverb_rt60"], rng)
    peak = np.abs(audio).max() + 1e-9
    audio = audio / peak * 0.9 * 10 ** (item["gain_db"] / 20)
    if item["noise"] != "none":
        voiced = audio[np.abs(audio) > 1e-4]
        power = float((voiced ** 2).mean()) if voiced.size else 1e-6
        noise = coloured_noise(item["noise"], len(audio), rng)
        audio = audio + noise * math.sqrt(power / 10 ** (item["snr_db"] / 10))
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def write_wav(path: str, audio: np.ndarray) -> None:
    pcm = np.round(audio * 32767.0).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def read_wav(path: str) -> np.ndarray:
    """A corpus WAV as float32 in [-1, 1]."""
    with wave.open(path) as w:
        if w.getframerate() != SAMPLE_RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16 kHz mono 16-bit")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


def _make(args: tuple[str, dict]) -> dict:
    folder, item = args
    path = os.path.join(folder, item["id"] + ".wav")
    if not os.path.exists(path):
        audio = augment(synthesise(item), item)
        tmp = path + ".tmp.wav"
        write_wav(tmp, audio)
        os.replace(tmp, path)  # a run stopped half-way never leaves a truncated file behind
    with wave.open(path) as w:
        seconds = w.getnframes() / SAMPLE_RATE
    return {**item, "seconds": round(seconds, 3)}


def generate(out: str, counts: dict[str, int], seed: int, jobs: int = 1,
             items: dict[str, list[dict]] | None = None, extra_train: int = 0,
             index_only: bool = False) -> dict[str, list[dict]]:
    """Writes every split under `out` (existing WAVs are reused, so a stopped run resumes).

    items: the plan to synthesise, by split (default: plan(counts, seed, extra_train=...)); see
    --from-index. index_only: write the plan as index.jsonl files without synthesising anything.
    """
    items = items if items is not None else plan(counts, seed, extra_train=extra_train)
    done: dict[str, list[dict]] = {}
    for split in items:
        folder = os.path.join(out, split)
        os.makedirs(folder, exist_ok=True)
        work = [(folder, item) for item in items[split]]
        if index_only:
            done[split] = items[split]
        elif jobs > 1:
            with ProcessPoolExecutor(jobs) as pool:
                done[split] = list(pool.map(_make, work, chunksize=8))
        else:
            done[split] = [_make(w) for w in work]
        rows = "".join(json.dumps(row, sort_keys=True) + "\n" for row in done[split])
        replace_text(os.path.join(folder, "index.jsonl"), rows)
    # The sentences depend on the installed word list and the audio on espeak-ng's version: both
    # are recorded, so a corpus can be compared with one generated elsewhere.
    words = textmod.system_words()
    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
    provenance = {"word_list": textmod.WORDLIST if words else None, "words": len(words),
                  "words_sha1": hashlib.sha1("\n".join(words).encode()).hexdigest(), "espeak_ng": espeak}
    replace_text(os.path.join(out, "corpus.json"), json.dumps(
        {"seed": seed, "counts": counts, "extra_train": extra_train, "sample_rate": SAMPLE_RATE, "voices": voice_split(seed), **provenance},
        indent=1))
    return done


def replace_text(path: str, text: str) -> None:
    """Write `path` as a new file that takes the old one's name.

    Never in place: a corpus grown from a hard-linked copy of another (`cp -al`, then
    --extra-train) would otherwise rewrite the original's index too, and a stopped run would leave
    a truncated one.
    """
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_index(out: str, split: str) -> list[dict]:
    with open(os.path.join(out, split, "index.jsonl")) as f:
        return [json.loads(line) for line in f]


def stats(done: dict[str, list[dict]]) -> dict:
    out = {}
    for split, rows in done.items():
        secs = [r["seconds"] for r in rows]
        out[split] = {
            "utterances": len(rows), "hours": round(sum(secs) / 3600, 4),
            "seconds_min_mean_max": [round(min(secs), 2), round(sum(secs) / len(secs), 2), round(max(secs), 2)] if secs else [],
            "voices": len({r["voice"] for r in rows}), "variants": len({r["variant"] for r in rows}),
            "accents": len({r["accent"] for r in rows}), "sentences": len({r["text"] for r in rows}),
            "words": sum(len(r["text"].split()) for r in rows),
            "noisy": sum(r["noise"] != "none" for r in rows), "reverberant": sum(r["reverb_rt60"] > 0 for r in rows),
        }
    train = done.get("train", [])
    for split in ("val", "test"):
        if split not in done:
            continue
        rows = done[split]
        out[split]["voices_seen_in_train"] = len({r["voice"] for r in rows} & {r["voice"] for r in train})
        out[split]["sentences_seen_in_train"] = len({r["text"] for r in rows} & {r["text"] for r in train})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=".cache/speech/espeak-v1")
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--val", type=int, default=300)
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--extra-train", type=int, default=0,
                    help="more training utterances on new sentences; validation and test stay as without them")
    ap.add_argument("--index-only", action="store_true",
                    help="write the plan (index.jsonl per split) and stop: synthesise it elsewhere with --from-index")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--from-index", metavar="CORPUS",
                    help="synthesise the items listed in CORPUS/<split>/index.jsonl (voice, rate, text, noise "
                         "and its seed...) instead of planning new ones: the same corpus on another machine, "
                         "without copying its audio")
    ap.add_argument("--splits", default=",".join(SPLITS), help="with --from-index: the splits to synthesise")
    args = ap.parse_args()
    counts = {"train": args.train, "val": args.val, "test": args.test}
    items = None
    if args.from_index:
        with open(os.path.join(args.from_index, "corpus.json")) as f:
            source = json.load(f)
            args.seed, args.extra_train = source["seed"], source.get("extra_train", 0)
        items = {split: [{k: v for k, v in row.items() if k != "seconds"} for row in load_index(args.from_index, split)]
                 for split in args.splits.split(",")}
        counts = {split: len(rows) for split, rows in items.items()}
    done = generate(args.out, counts, args.seed, args.jobs, items, args.extra_train, args.index_only)
    if not args.index_only:
        print(json.dumps(stats(done), indent=1))


if __name__ == "__main__":
    main()
