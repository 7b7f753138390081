// CTC prefix beam search constrained to a lexicon and scored with a word n-gram model
// (Hannun et al. 2014, "First-pass large vocabulary continuous speech recognition using
// bi-directional recurrent DNNs"). A hypothesis is a prefix of characters that spells whole lexicon
// words separated by single delimiters, plus the start of one more word. Its score is
//
//   ln P_ctc(prefix) + lmWeight * (ln P_lm of its words + look-ahead) + wordBonus * words
//
// where P_ctc sums over every alignment (blank-ending and symbol-ending paths kept apart, as the
// CTC collapse rule needs) and the look-ahead, while a word is being spelled, is the best unigram
// probability among the lexicon words that start with what is spelled so far. Frames are consumed
// one at a time, so decoding a stream chunk by chunk gives the same hypotheses as decoding the
// whole file at once.
import { WordTimer, type TranscriptDecoder, type WordTiming } from './ctc.js';
import type { DecoderSpec } from './manifest.js';
import { SENTENCE_END, SENTENCE_START, type NGramModel } from './ngram.js';

export interface BeamOptions {
  /** Hypotheses kept after each frame. */
  beam: number;
  lmWeight: number;
  /** Added per word, against the LM's preference for fewer words. */
  wordBonus: number;
  /** Symbols less likely than the frame's best by more than this (ln) are not tried. */
  symbolPrune: number;
}

export const DEFAULT_BEAM: BeamOptions = { beam: 24, lmWeight: 0.5, wordBonus: 1, symbolPrune: 8 };

/** The search settings a manifest's ctc.decoder names (DEFAULT_BEAM's for what it leaves out). */
export function beamOptions(spec: DecoderSpec | undefined): BeamOptions {
  if (!spec) return DEFAULT_BEAM;
  return { beam: spec.beam, lmWeight: spec.lm_weight, wordBonus: spec.word_bonus, symbolPrune: spec.symbol_prune ?? DEFAULT_BEAM.symbolPrune };
}

/** The lexicon as a trie over vocabulary symbols, shared by every decoder of a model. */
export class Lexicon {
  /** Per node: first child, next sibling, symbol on the edge into it, word id ending here (-1 none). */
  readonly firstChild: Int32Array;
  readonly nextSibling: Int32Array;
  readonly symbol: Int32Array;
  readonly wordId: Int32Array;
  /** Per node: ln of the best unigram probability of a word below it (0 at the root). */
  readonly lookahead: Float64Array;
  readonly words: number;
  /** Words of the language model the vocabulary cannot spell, left out. */
  readonly skipped: number;

  /**
   * Every word of the model the vocabulary can spell becomes a lexicon word; `skipped` counts the
   * others (symbols outside the vocabulary, or the delimiter inside a word).
   */
  constructor(readonly lm: NGramModel, vocabulary: readonly string[], blank: number, delimiter: string) {
    const symbolOf = new Map<string, number>();
    vocabulary.forEach((s, i) => {
      if (i !== blank && s !== delimiter) symbolOf.set(s, i);
    });
    const first: number[] = [-1];
    const next: number[] = [-1];
    const sym: number[] = [-1];
    const word: number[] = [-1];
    const parent: number[] = [-1];
    let count = 0;
    let skipped = 0;
    for (let id = 0; id < lm.words.length; id++) {
      const w = lm.words[id]!;
      if (w.startsWith('<')) continue; // <s>, </s>, <unk>: markers, not words
      const symbols = [...w].map((c) => symbolOf.get(c));
      if (symbols.length === 0 || symbols.some((s) => s === undefined)) {
        skipped++;
        continue;
      }
      let node = 0;
      for (const s of symbols as number[]) {
        let child = first[node]!;
        while (child !== -1 && sym[child] !== s) child = next[child]!;
        if (child === -1) {
          child = first.length;
          first.push(-1);
          sym.push(s);
          word.push(-1);
          parent.push(node);
          next.push(first[node]!);
          first[node] = child;
        }
        node = child;
      }
      if (word[node] === -1) count++;
      word[node] = id;
    }
    this.firstChild = Int32Array.from(first);
    this.nextSibling = Int32Array.from(next);
    this.symbol = Int32Array.from(sym);
    this.wordId = Int32Array.from(word);
    this.words = count;
    this.skipped = skipped;
    // Look-ahead: children always come after their parent, so one backward pass suffices.
    const best = new Float64Array(first.length).fill(-Infinity);
    for (let n = first.length - 1; n > 0; n--) {
      if (word[n]! >= 0) best[n] = Math.max(best[n]!, lm.logProb([], word[n]!));
      const p = parent[n]!;
      if (p > 0) best[p] = Math.max(best[p]!, best[n]!);
    }
    best[0] = 0;
    this.lookahead = best;
    this.keyBase = lm.words.length + 1;
    this.numericKeys = this.keyBase ** Math.max(2, lm.order) <= Number.MAX_SAFE_INTEGER;
  }

  // Word probabilities asked for by the decoders of this model, by history and word. Keys are
  // numbers, the ids in base (words + 1), while they stay exact doubles; strings otherwise.
  private readonly memo = new Map<number | string, number>();
  private readonly keyBase: number;
  private readonly numericKeys: boolean;
  /** Entries kept before the memo starts again empty. */
  static readonly MEMO_LIMIT = 200_000;

  /** ln P_lm(word | history), history as the decoder keeps it (at most max(1, order - 1) ids). */
  wordLogProb(history: readonly number[], word: number): number {
    let key: number | string;
    if (this.numericKeys && history.length < this.lm.order) {
      key = 0;
      for (const id of history) key = key * this.keyBase + id + 1;
      key = key * this.keyBase + word + 1;
    } else {
      key = `${history.join(',')}>${word}`;
    }
    let lp = this.memo.get(key);
    if (lp === undefined) {
      lp = this.lm.logProb(history, word);
      if (this.memo.size >= Lexicon.MEMO_LIMIT) this.memo.clear();
      this.memo.set(key, lp);
    }
    return lp;
  }

  child(node: number, symbol: number): number {
    for (let c = this.firstChild[node]!; c !== -1; c = this.nextSibling[c]!) if (this.symbol[c] === symbol) return c;
    return -1;
  }
}

/** A character prefix: shared by the hypotheses that extend it, so text is rebuilt by walking up. */
class Prefix {
  constructor(
    readonly parent: Prefix | undefined,
    /** Vocabulary index of the last symbol (-1 for the empty prefix). */
    readonly symbol: number,
    /** Trie node of the word being spelled (0: none begun). */
    readonly node: number,
    /** Ids of the completed words the LM conditions on, oldest first. */
    readonly history: readonly number[],
    /** lmWeight * ln P_lm(completed words) + wordBonus * words. */
    readonly wordScore: number,
  ) {}

  /** The frame at which entering this prefix was most likely: its last symbol's time. */
  frame = -1;
  private entry = -Infinity;
  /** The step whose candidate `hyp` is (-1: none yet). */
  candidateStep = -1;
  hyp: Hyp | undefined;
  /** During a step: the kept hypotheses whose prefix extends this one by one symbol. */
  children: Prefix[] | undefined;

  /** Records that the last symbol was emitted at `frame` with log-probability `score`. */
  entered(frame: number, score: number): void {
    if (score > this.entry) {
      this.entry = score;
      this.frame = frame;
    }
  }
}

interface Hyp { prefix: Prefix; blank: number; symbol: number }

function logAdd(a: number, b: number): number {
  if (a === -Infinity) return b;
  if (b === -Infinity) return a;
  return a > b ? a + Math.log1p(Math.exp(b - a)) : b + Math.log1p(Math.exp(a - b));
}

/**
 * The k-th largest value of `a` (1-based), by quickselect; `a` is reordered. Values must not be NaN.
 */
export function kthLargest(a: Float64Array, k: number): number {
  if (!(k >= 1 && k <= a.length)) throw new RangeError(`k must be in [1, ${a.length}]; got ${k}`);
  const target = a.length - k; // its index in ascending order
  let lo = 0;
  let hi = a.length - 1;
  while (lo < hi) {
    // Median of three as the pivot, then a three-way partition: [lo, lt) < pivot, [lt, gt] = pivot.
    const mid = (lo + hi) >>> 1;
    const x = a[lo]!;
    const y = a[mid]!;
    const z = a[hi]!;
    const pivot = x < y ? (y < z ? y : x < z ? z : x) : (x < z ? x : y < z ? z : y);
    let lt = lo;
    let gt = hi;
    let i = lo;
    while (i <= gt) {
      const v = a[i]!;
      if (v < pivot) {
        a[i] = a[lt]!;
        a[lt++] = v;
        i++;
      } else if (v > pivot) {
        a[i] = a[gt]!;
        a[gt--] = v;
      } else i++;
    }
    if (target < lt) hi = lt - 1;
    else if (target > gt) lo = gt + 1;
    else return pivot;
  }
  return a[target]!;
}

export class LexiconBeamDecoder implements TranscriptDecoder {
  private hyps: Hyp[];
  private frames = 0;
  private readonly blank: number;
  private readonly delimiter: number;
  private readonly frameS: number;
  private readonly vocab: readonly string[];
  private readonly logp: Float64Array;
  /** Scratch: the symbols tried at the current frame are its first entries. */
  private readonly tried: Int32Array;
  private readonly start: number;
  private readonly end: number;

  constructor(private readonly lexicon: Lexicon, ctc: { blank: number; vocabulary: readonly string[]; word_delimiter: string },
    frameMs: number, private readonly opts: BeamOptions = DEFAULT_BEAM) {
    this.blank = ctc.blank;
    this.vocab = ctc.vocabulary;
    this.delimiter = ctc.vocabulary.indexOf(ctc.word_delimiter);
    this.frameS = frameMs / 1000;
    this.logp = new Float64Array(ctc.vocabulary.length);
    this.tried = new Int32Array(ctc.vocabulary.length);
    this.start = lexicon.lm.id(SENTENCE_START) ?? -1;
    this.end = lexicon.lm.id(SENTENCE_END)!;
    const root = new Prefix(undefined, -1, 0, this.start >= 0 ? [this.start] : [], 0);
    this.hyps = [{ prefix: root, blank: 0, symbol: -Infinity }];
  }

  /** Appends `count` frames of logits laid out [frames][vocab]. */
  push(logits: Float32Array, count: number): void {
    for (let f = 0; f < count; f++) this.step(logits, f * this.vocab.length);
  }

  // One frame of the search. The bookkeeping lives on the prefixes rather than in per-frame maps:
  // `children` lists the kept hypotheses one symbol below a prefix (any other extension is a fresh
  // prefix), `candidateStep` and `hyp` hold this frame's candidate for the prefix. Candidates keep
  // the order in which they first appear. Both are cleared before the step ends.
  private step(logits: Float32Array, offset: number): void {
    const v = this.vocab.length;
    const lp = this.logp;
    let max = -Infinity;
    for (let i = 0; i < v; i++) max = Math.max(max, logits[offset + i]!);
    let sum = 0;
    for (let i = 0; i < v; i++) sum += Math.exp(logits[offset + i]! - max);
    const norm = max + Math.log(sum);
    let best = -Infinity;
    for (let i = 0; i < v; i++) {
      lp[i] = logits[offset + i]! - norm;
      best = Math.max(best, lp[i]!);
    }
    const tried = this.tried;
    let triedCount = 0;
    for (let i = 0; i < v; i++) if (i !== this.blank && lp[i]! >= best - this.opts.symbolPrune) tried[triedCount++] = i;

    const stepId = this.frames;
    for (const h of this.hyps) {
      const c = h.prefix;
      if (c.parent) (c.parent.children ??= []).push(c);
    }
    const next: Hyp[] = [];
    const add = (prefix: Prefix, blank: number, symbol: number): void => {
      if (prefix.candidateStep === stepId) {
        const h = prefix.hyp!;
        h.blank = logAdd(h.blank, blank);
        h.symbol = logAdd(h.symbol, symbol);
      } else {
        const h = { prefix, blank, symbol };
        prefix.candidateStep = stepId;
        prefix.hyp = h;
        next.push(h);
      }
    };
    const blankLp = lp[this.blank]!;
    for (const h of this.hyps) {
      const p = h.prefix;
      const total = logAdd(h.blank, h.symbol);
      // Stay: a blank, or the last symbol again without a blank between (collapsed).
      add(p, total + blankLp, p.symbol >= 0 ? h.symbol + lp[p.symbol]! : -Infinity);
      for (let t = 0; t < triedCount; t++) {
        const s = tried[t]!;
        const child = this.liveChild(p, s) ?? this.extend(p, s);
        if (!child) continue;
        // The same symbol twice in a row needs a blank between to count twice.
        const enter = (s === p.symbol ? h.blank : total) + lp[s]!;
        child.entered(stepId, enter);
        add(child, -Infinity, enter);
      }
    }
    // Nothing of this step stays referenced: pruned prefixes must be free to go.
    for (const h of next) h.prefix.hyp = undefined;
    for (const h of this.hyps) if (h.prefix.parent) h.prefix.parent.children = undefined;
    this.hyps = this.prune(next);
    this.frames++;
  }

  /** The prefix p followed by symbol s, or undefined when the lexicon does not allow it. */
  private extend(p: Prefix, s: number): Prefix | undefined {
    const lex = this.lexicon;
    if (s === this.delimiter) {
      const word = p.node > 0 ? lex.wordId[p.node]! : -1;
      if (word < 0) return undefined;
      const history = [...p.history, word].slice(-Math.max(1, lex.lm.order - 1));
      return new Prefix(p, s, 0, history, p.wordScore + this.wordScore(p.history, word));
    }
    const node = lex.child(p.node, s);
    if (node < 0) return undefined;
    return new Prefix(p, s, node, p.history, p.wordScore);
  }

  /** The kept hypothesis whose prefix is p followed by s, if there is one. */
  private liveChild(p: Prefix, s: number): Prefix | undefined {
    const children = p.children;
    if (children) for (const c of children) if (c.symbol === s) return c;
    return undefined;
  }

  private wordScore(history: readonly number[], word: number): number {
    return this.opts.lmWeight * this.lexicon.wordLogProb(history, word) + this.opts.wordBonus;
  }

  private score(h: Hyp): number {
    return logAdd(h.blank, h.symbol) + h.prefix.wordScore + this.opts.lmWeight * this.lexicon.lookahead[h.prefix.node]!;
  }

  /**
   * The best `beam` hypotheses, best first, ties in their order in `hyps` (what a stable sort of
   * all of them would keep). Only the kept ones are sorted: the cut-off score is found by selection.
   */
  private prune(hyps: Hyp[]): Hyp[] {
    const beam = this.opts.beam;
    const n = hyps.length;
    if (n <= beam) return hyps;
    const scores = new Float64Array(n);
    for (let i = 0; i < n; i++) scores[i] = this.score(hyps[i]!);
    const cut = kthLargest(Float64Array.from(scores), beam);
    let above = 0;
    for (let i = 0; i < n; i++) if (scores[i]! > cut) above++;
    let ties = beam - above;
    const kept: number[] = [];
    for (let i = 0; i < n; i++) {
      if (scores[i]! > cut) kept.push(i);
      else if (scores[i] === cut && ties > 0) {
        kept.push(i);
        ties--;
      }
    }
    kept.sort((a, b) => scores[b]! - scores[a]! || a - b);
    return kept.map((i) => hyps[i]!);
  }

  /**
   * The best hypothesis if the audio ended now: the word being spelled must be a lexicon word and
   * is scored, then the sentence end. When no hypothesis can end there (a word half spelled), the
   * best one by its running score, partial word included.
   */
  private best(): Prefix {
    let top: Prefix | undefined;
    let topScore = -Infinity;
    for (const h of this.hyps) {
      const p = h.prefix;
      let s = logAdd(h.blank, h.symbol) + p.wordScore;
      let history = p.history;
      if (p.node > 0) {
        const word = this.lexicon.wordId[p.node]!;
        if (word < 0) continue;
        s += this.wordScore(history, word);
        history = [...history, word];
      }
      s += this.opts.lmWeight * this.lexicon.wordLogProb(history, this.end);
      if (s > topScore) {
        topScore = s;
        top = p;
      }
    }
    if (top) return top;
    return this.hyps.reduce((a, b) => (this.score(b) > this.score(a) ? b : a)).prefix;
  }

  /** The best hypothesis's words, each timed by the frames its symbols were most likely entered at. */
  private words(): WordTimer {
    const path: Prefix[] = [];
    for (let p: Prefix | undefined = this.best(); p && p.symbol >= 0; p = p.parent) path.push(p);
    const words = new WordTimer(this.vocab[this.delimiter]!, this.frameS);
    for (let i = path.length - 1; i >= 0; i--) words.add(this.vocab[path[i]!.symbol]!, path[i]!.frame);
    return words;
  }

  /** The transcript so far: words separated by one space, no leading or trailing space. */
  transcript(): string {
    return this.words().text();
  }

  /** Word timings of the best hypothesis: first symbol's frame to the end of the last one's. */
  timings(): WordTiming[] {
    return this.words().timings();
  }
}
