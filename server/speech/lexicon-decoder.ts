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
  }

  child(node: number, symbol: number): number {
    for (let c = this.firstChild[node]!; c !== -1; c = this.nextSibling[c]!) if (this.symbol[c] === symbol) return c;
    return -1;
  }
}

/** A character prefix: shared by the hypotheses that extend it, so text is rebuilt by walking up. */
class Prefix {
  private static nextId = 0;
  readonly id = Prefix.nextId++;
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

export class LexiconBeamDecoder implements TranscriptDecoder {
  private hyps: Hyp[];
  private frames = 0;
  private readonly blank: number;
  private readonly delimiter: number;
  private readonly frameS: number;
  private readonly vocab: readonly string[];
  private readonly logp: Float64Array;
  private readonly scoreCache = new Map<string, number>();
  private readonly start: number;
  private readonly end: number;

  constructor(private readonly lexicon: Lexicon, ctc: { blank: number; vocabulary: readonly string[]; word_delimiter: string },
    frameMs: number, private readonly opts: BeamOptions = DEFAULT_BEAM) {
    this.blank = ctc.blank;
    this.vocab = ctc.vocabulary;
    this.delimiter = ctc.vocabulary.indexOf(ctc.word_delimiter);
    this.frameS = frameMs / 1000;
    this.logp = new Float64Array(ctc.vocabulary.length);
    this.start = lexicon.lm.id(SENTENCE_START) ?? -1;
    this.end = lexicon.lm.id(SENTENCE_END)!;
    const root = new Prefix(undefined, -1, 0, this.start >= 0 ? [this.start] : [], 0);
    this.hyps = [{ prefix: root, blank: 0, symbol: -Infinity }];
  }

  /** Appends `count` frames of logits laid out [frames][vocab]. */
  push(logits: Float32Array, count: number): void {
    for (let f = 0; f < count; f++) this.step(logits, f * this.vocab.length);
  }

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
    const tried: number[] = [];
    for (let i = 0; i < v; i++) if (i !== this.blank && lp[i]! >= best - this.opts.symbolPrune) tried.push(i);

    // Hypotheses of this frame, by prefix; the current ones are found again by (parent, symbol).
    const next = new Map<Prefix, Hyp>();
    const existing = new Map<number, Prefix>();
    for (const h of this.hyps) if (h.prefix.parent) existing.set(h.prefix.parent.id * v + h.prefix.symbol, h.prefix);
    const add = (prefix: Prefix, blank: number, symbol: number): void => {
      const h = next.get(prefix);
      if (h) {
        h.blank = logAdd(h.blank, blank);
        h.symbol = logAdd(h.symbol, symbol);
      } else {
        next.set(prefix, { prefix, blank, symbol });
      }
    };
    const blankLp = lp[this.blank]!;
    for (const h of this.hyps) {
      const p = h.prefix;
      const total = logAdd(h.blank, h.symbol);
      // Stay: a blank, or the last symbol again without a blank between (collapsed).
      add(p, total + blankLp, p.symbol >= 0 ? h.symbol + lp[p.symbol]! : -Infinity);
      for (const s of tried) {
        const child = existing.get(p.id * v + s) ?? this.extend(p, s);
        if (!child) continue;
        // The same symbol twice in a row needs a blank between to count twice.
        const enter = (s === p.symbol ? h.blank : total) + lp[s]!;
        child.entered(this.frames, enter);
        add(child, -Infinity, enter);
      }
    }
    this.hyps = this.prune([...next.values()]);
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

  private wordScore(history: readonly number[], word: number): number {
    const key = `${history.join(',')}>${word}`;
    let s = this.scoreCache.get(key);
    if (s === undefined) {
      s = this.opts.lmWeight * this.lexicon.lm.logProb(history, word) + this.opts.wordBonus;
      if (this.scoreCache.size > 100_000) this.scoreCache.clear();
      this.scoreCache.set(key, s);
    }
    return s;
  }

  private score(h: Hyp): number {
    return logAdd(h.blank, h.symbol) + h.prefix.wordScore + this.opts.lmWeight * this.lexicon.lookahead[h.prefix.node]!;
  }

  private prune(hyps: Hyp[]): Hyp[] {
    if (hyps.length <= this.opts.beam) return hyps;
    const scored = hyps.map((h) => ({ h, s: this.score(h) }));
    scored.sort((a, b) => b.s - a.s);
    return scored.slice(0, this.opts.beam).map((x) => x.h);
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
      s += this.opts.lmWeight * this.lexicon.lm.logProb(history, this.end);
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
