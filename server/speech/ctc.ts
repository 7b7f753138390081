// Greedy CTC decoding over the kept frames of successive windows: the best label per frame, then
// repeats collapsed and blanks dropped. Decoding is incremental (a stream appends each chunk's
// frames) and gives the same text as decoding all frames at once. Word timings come from the same
// alignment: a word spans from its first character's frame to the end of its last one's.
import type { SpeechManifest } from './manifest.js';

export interface WordTiming {
  word: string;
  /** Seconds from the start of the audio. */
  start: number;
  end: number;
}

/** What a recognition feeds its frames to: the greedy decoder here or the lexicon beam search. */
export interface TranscriptDecoder {
  /** Appends `count` frames of logits laid out [frames][vocab]. */
  push(logits: Float32Array, count: number): void;
  transcript(): string;
  timings(): WordTiming[];
}

/**
 * Words from the symbols a decoder emits, each with the frame it was emitted at: a word spans from
 * its first symbol's frame to the end of its last one's, and the delimiter ends it.
 */
export class WordTimer {
  private readonly done: WordTiming[] = [];
  private open?: WordTiming;

  constructor(private readonly delimiter: string, private readonly frameS: number) {}

  add(symbol: string, frame: number): void {
    const t = frame * this.frameS;
    if (symbol === this.delimiter) {
      if (this.open) this.done.push(this.open);
      this.open = undefined;
    } else if (this.open) {
      this.open.word += symbol;
      this.open.end = t + this.frameS;
    } else {
      this.open = { word: symbol, start: t, end: t + this.frameS };
    }
  }

  private all(): WordTiming[] {
    return this.open ? [...this.done, this.open] : this.done;
  }

  /** The words so far separated by one space, the word still being spelled included. */
  text(): string {
    return this.all().map((w) => w.word).join(' ');
  }

  /** Word timings so far in seconds, to the millisecond, the word still being spelled included. */
  timings(): WordTiming[] {
    const round = (x: number): number => Math.round(x * 1000) / 1000;
    return this.all().map((w) => ({ word: w.word, start: round(w.start), end: round(w.end) }));
  }
}

export class CtcDecoder implements TranscriptDecoder {
  private readonly vocab: readonly string[];
  private readonly blank: number;
  private readonly words: WordTimer;
  private prev = -1;
  private frames = 0;

  constructor(m: SpeechManifest) {
    this.vocab = m.ctc.vocabulary;
    this.blank = m.ctc.blank;
    this.words = new WordTimer(m.ctc.word_delimiter, m.audio.frame_ms / 1000);
  }

  /** Appends `count` frames of logits laid out [frames][vocab]. */
  push(logits: Float32Array, count: number): void {
    const v = this.vocab.length;
    for (let f = 0; f < count; f++) {
      let best = 0;
      let bestValue = -Infinity;
      for (let i = 0; i < v; i++) {
        const x = logits[f * v + i] ?? -Infinity;
        if (x > bestValue) {
          bestValue = x;
          best = i;
        }
      }
      if (best !== this.prev && best !== this.blank) this.words.add(this.vocab[best] ?? '', this.frames);
      this.prev = best;
      this.frames++;
    }
  }

  /** The transcript so far: words separated by one space, no leading or trailing space. */
  transcript(): string {
    return this.words.text();
  }

  /** Word timings so far, the word still being spelled included. */
  timings(): WordTiming[] {
    return this.words.timings();
  }
}
