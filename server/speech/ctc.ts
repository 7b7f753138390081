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

export class CtcDecoder implements TranscriptDecoder {
  private readonly vocab: readonly string[];
  private readonly blank: number;
  private readonly delimiter: string;
  private readonly frameS: number;
  private prev = -1;
  private frames = 0;
  private text = '';
  private words: WordTiming[] = [];
  private open?: WordTiming;

  constructor(m: SpeechManifest) {
    this.vocab = m.ctc.vocabulary;
    this.blank = m.ctc.blank;
    this.delimiter = m.ctc.word_delimiter;
    this.frameS = m.audio.frame_ms / 1000;
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
      if (best !== this.prev && best !== this.blank) this.emit(this.vocab[best] ?? '', this.frames);
      this.prev = best;
      this.frames++;
    }
  }

  private emit(symbol: string, frame: number): void {
    const t = frame * this.frameS;
    if (symbol === this.delimiter) {
      this.close();
      return;
    }
    this.text += symbol;
    if (this.open) {
      this.open.word += symbol;
      this.open.end = t + this.frameS;
    } else {
      this.open = { word: symbol, start: t, end: t + this.frameS };
    }
  }

  private close(): void {
    if (!this.open) return;
    this.words.push(this.open);
    this.open = undefined;
    this.text += this.delimiter;
  }

  /** The transcript so far: words separated by one space, no leading or trailing space. */
  transcript(): string {
    return this.text.split(this.delimiter).filter((w) => w.length > 0).join(' ');
  }

  /** Word timings so far, the word still being spelled included. */
  timings(): WordTiming[] {
    const round = (x: number): number => Math.round(x * 1000) / 1000;
    return [...this.words, ...(this.open ? [this.open] : [])].map((w) => ({ word: w.word, start: round(w.start), end: round(w.end) }));
  }
}
