// Strict reader of a speech-recognition acm.json (models/BUNDLE.md "Speech"). Besides the fields
// every bundle has (manifest-fields.ts), it checks the audio contract for internal consistency: the
// server cuts audio into windows from these numbers, and a window geometry that disagrees with the
// graph would silently misalign every transcript.
import { checkAcmLayout, checkHeader, checkTensorNames, Reader, type ManifestCommon } from '../manifest-fields.js';

export interface AudioContract {
  /** Samples per second the graph expects (mono float32 in [-1, 1]). */
  readonly sample_rate: number;
  /** Output frame period, ms. */
  readonly frame_ms: number;
  readonly frame_samples: number;
  /** Samples past a chunk's end its last frame needs (receptive field - frame). */
  readonly lookahead_samples: number;
  readonly chunk_frames: number;
  readonly left_context_frames: number;
  readonly chunk_samples: number;
  readonly left_context_samples: number;
  /** Samples fed per window: left context + chunk + lookahead. */
  readonly window_samples: number;
  /** Frames out per window: left context + chunk; the last chunk_frames are kept. */
  readonly window_frames: number;
}

export interface SpeechManifest extends ManifestCommon<'speech-recognition'> {
  readonly inputs: { readonly audio: string; readonly budget: string };
  readonly audio: AudioContract;
  readonly ctc: {
    readonly blank: number;
    readonly vocabulary: readonly string[];
    readonly word_delimiter: string;
    /** Absent: greedy CTC. */
    readonly decoder?: DecoderSpec;
  };
  readonly tokens: { readonly count: number };
}

/** The lexicon beam search (lexicon-decoder.ts) with the bundle's word n-gram model. */
export interface DecoderSpec {
  readonly type: 'lexicon-beam';
  /** ARPA file (gzip allowed) in the bundle folder; its unigrams are the lexicon. */
  readonly lm: string;
  readonly beam: number;
  readonly lm_weight: number;
  readonly word_bonus: number;
  readonly symbol_prune?: number;
}

const TOP_KEYS = ['format', 'name', 'task', 'graph', 'inputs', 'outputs', 'audio', 'ctc', 'tokens', 'acms', 'macs',
  'budget_floor', 'default_budget', 'quality'] as const;
const AUDIO_KEYS = ['sample_rate', 'frame_ms', 'frame_samples', 'lookahead_samples', 'chunk_frames', 'left_context_frames',
  'chunk_samples', 'left_context_samples', 'window_samples', 'window_frames'] as const;
const MAX = Number.MAX_SAFE_INTEGER;

/** Validates a parsed acm.json of a speech-recognition bundle; throws ManifestError naming the field. */
export function parseSpeechManifest(bundle: string, raw: unknown): SpeechManifest {
  const r: Reader = new Reader(bundle);
  const m = checkHeader(r, raw, 'speech-recognition', TOP_KEYS);
  checkTensorNames(r, m.inputs, 'inputs', ['audio', 'budget']);
  checkTensorNames(r, m.outputs, 'outputs', ['logits', 'learner_counts']);

  const a = r.obj(m.audio, 'audio', AUDIO_KEYS);
  const n = (k: (typeof AUDIO_KEYS)[number], min: number, max: number): number => r.num(a[k], `audio.${k}`, min, max, { int: true });
  const rate = n('sample_rate', 1000, 384_000);
  const frame = n('frame_samples', 1, 1_000_000);
  const lookahead = n('lookahead_samples', 0, 1_000_000);
  const chunkFrames = n('chunk_frames', 1, 100_000);
  const leftFrames = n('left_context_frames', 0, 100_000);
  const derived: [string, number, number][] = [
    ['frame_ms', n('frame_ms', 1, 10_000), (1000 * frame) / rate],
    ['chunk_samples', n('chunk_samples', 1, MAX), chunkFrames * frame],
    ['left_context_samples', n('left_context_samples', 0, MAX), leftFrames * frame],
    ['window_frames', n('window_frames', 1, MAX), leftFrames + chunkFrames],
    ['window_samples', n('window_samples', 1, MAX), (leftFrames + chunkFrames) * frame + lookahead],
  ];
  for (const [key, got, want] of derived) {
    if (got !== want) r.fail(`audio.${key}`, `is ${got} but the other audio fields imply ${want}`);
  }

  const ctc = r.obj(m.ctc, 'ctc', ['blank', 'vocabulary', 'word_delimiter'], ['decoder']);
  const vocab = r.arr(ctc.vocabulary, 'ctc.vocabulary', 2);
  vocab.forEach((v, i) => r.str(v, `ctc.vocabulary[${i}]`));
  if (new Set(vocab).size !== vocab.length) r.fail('ctc.vocabulary', 'must not repeat an entry');
  r.num(ctc.blank, 'ctc.blank', 0, vocab.length - 1, { int: true });
  const delimiter = r.str(ctc.word_delimiter, 'ctc.word_delimiter');
  if (!vocab.includes(delimiter)) r.fail('ctc.word_delimiter', `${JSON.stringify(delimiter)} is not in ctc.vocabulary`);
  if (ctc.decoder !== undefined) {
    const d = r.obj(ctc.decoder, 'ctc.decoder', ['type', 'lm', 'beam', 'lm_weight', 'word_bonus'], ['symbol_prune']);
    if (d.type !== 'lexicon-beam') r.fail('ctc.decoder.type', `must be "lexicon-beam"; got ${JSON.stringify(d.type)}`);
    // A file of the bundle folder, never a path out of it.
    r.str(d.lm, 'ctc.decoder.lm', /^[A-Za-z0-9][A-Za-z0-9._-]*$/);
    r.num(d.beam, 'ctc.decoder.beam', 1, 4096, { int: true });
    r.num(d.lm_weight, 'ctc.decoder.lm_weight', 0, 100);
    r.num(d.word_bonus, 'ctc.decoder.word_bonus', -100, 100);
    if (d.symbol_prune !== undefined) r.num(d.symbol_prune, 'ctc.decoder.symbol_prune', 0, 1000, { minOpen: true });
  }

  const tokens = r.obj(m.tokens, 'tokens', ['count']);
  const windowFrames = leftFrames + chunkFrames;
  if (tokens.count !== windowFrames) r.fail('tokens.count', `must equal audio.window_frames (${windowFrames}); got ${JSON.stringify(tokens.count)}`);

  checkAcmLayout(r, m);
  return raw as SpeechManifest;
}
