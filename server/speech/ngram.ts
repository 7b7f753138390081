// A word n-gram language model read from an ARPA file (plain or gzip), as the speech toolchain
// writes it (models/toolchain/speech/lm.py) and as common LM tools do. Probabilities are looked up
// with the usual back-off: P(w | h) is the stored value of the n-gram h w when there is one, else
// the back-off weight of h times P(w | h without its first word).
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';

export const SENTENCE_START = '<s>';
export const SENTENCE_END = '</s>';
const LN10 = Math.LN10;

export class ArpaError extends Error {
  constructor(source: string, line: number, problem: string) {
    super(`${source}: line ${line}: ${problem}`);
    this.name = 'ArpaError';
  }
}

export class NGramModel {
  /** Every word with a unigram entry, <s> and </s> included, indexed by id. */
  readonly words: readonly string[];
  readonly order: number;
  private readonly ids = new Map<string, number>();
  /** Per order n (index n - 1): key of the n ids -> [ln P, ln back-off]. */
  private readonly grams: Map<string, [number, number]>[];
  private readonly unigram: Float64Array;
  private readonly unigramBackoff: Float64Array;

  private constructor(words: string[], order: number, grams: Map<string, [number, number]>[], unigram: Float64Array, backoff: Float64Array) {
    this.words = words;
    this.order = order;
    words.forEach((w, i) => this.ids.set(w, i));
    this.grams = grams;
    this.unigram = unigram;
    this.unigramBackoff = backoff;
  }

  /** Reads an ARPA file, gunzipped off the thread when compressed; `source` names it in errors. */
  static async load(path: string, source = path): Promise<NGramModel> {
    const bytes = await readFile(path);
    const gzip = bytes[0] === 0x1f && bytes[1] === 0x8b;
    return NGramModel.parse((gzip ? await promisify(gunzip)(bytes) : bytes).toString('utf8'), source);
  }

  /** Parses ARPA text; `source` names it in errors. */
  static parse(text: string, source = 'ARPA'): NGramModel {
    const lines = text.split('\n');
    let i = 0;
    const fail = (problem: string): never => {
      throw new ArpaError(source, i + 1, problem);
    };
    while (i < lines.length && lines[i]!.trim() !== '\\data\\') i++;
    if (i === lines.length) fail('no \\data\\ section');
    i++;
    const declared: number[] = [];
    for (; i < lines.length; i++) {
      const line = lines[i]!.trim();
      if (line === '') continue;
      const m = /^ngram (\d+)=(\d+)$/.exec(line);
      if (!m) break;
      if (Number(m[1]) !== declared.length + 1) fail(`expected the count of ${declared.length + 1}-grams, got ${JSON.stringify(line)}`);
      declared.push(Number(m[2]));
    }
    const order = declared.length;
    if (order === 0) fail('no n-gram counts in the \\data\\ section');
    const words: string[] = [];
    const uni: number[] = [];
    const uniBackoff: number[] = [];
    const idOf = new Map<string, number>();
    const grams: Map<string, [number, number]>[] = [];
    for (let n = 1; n <= order; n++) {
      while (i < lines.length && lines[i]!.trim() === '') i++;
      if (lines[i]?.trim() !== `\\${n}-grams:`) fail(`expected \\${n}-grams:`);
      i++;
      const table = new Map<string, [number, number]>();
      let count = 0;
      for (; i < lines.length; i++) {
        const line = lines[i]!.trim();
        if (line === '') continue;
        if (line.startsWith('\\')) break;
        const fields = line.split(/\s+/);
        if (fields.length !== n + 1 && fields.length !== n + 2) fail(`a ${n}-gram line needs ${n + 1} or ${n + 2} fields, got ${fields.length}`);
        const logp = Number(fields[0]);
        const backoff = fields.length === n + 2 ? Number(fields[n + 1]) : 0;
        if (!Number.isFinite(logp) || !Number.isFinite(backoff)) fail('a probability or back-off is not a number');
        count++;
        if (n === 1) {
          const w = fields[1]!;
          if (idOf.has(w)) fail(`the word ${JSON.stringify(w)} is listed twice`);
          idOf.set(w, words.length);
          words.push(w);
          uni.push(logp * LN10);
          uniBackoff.push(backoff * LN10);
          continue;
        }
        const ids: number[] = [];
        for (const w of fields.slice(1, n + 1)) {
          const id = idOf.get(w);
          if (id === undefined) fail(`the word ${JSON.stringify(w)} has no unigram entry`);
          ids.push(id!);
        }
        table.set(ids.join(','), [logp * LN10, backoff * LN10]);
      }
      if (count !== declared[n - 1]) fail(`the \\data\\ section declares ${declared[n - 1]} ${n}-grams, the file has ${count}`);
      grams.push(table);
    }
    if (!idOf.has(SENTENCE_END)) fail(`no unigram entry for ${SENTENCE_END}`);
    return new NGramModel(words, order, grams, Float64Array.from(uni), Float64Array.from(uniBackoff));
  }

  id(word: string): number | undefined {
    return this.ids.get(word);
  }

  /** ln P(word | history); history holds word ids, oldest first (only the last order - 1 count). */
  logProb(history: readonly number[], word: number): number {
    const h = history.length > this.order - 1 ? history.slice(history.length - (this.order - 1)) : history;
    let backoff = 0;
    for (let start = 0; start < h.length; start++) {
      const ctx = h.slice(start);
      const hit = this.grams[ctx.length]!.get(`${ctx.join(',')},${word}`);
      if (hit) return backoff + hit[0];
      backoff += this.contextBackoff(ctx);
    }
    return backoff + this.unigram[word]!;
  }

  /** ln back-off weight of a context (0 when the context was never seen). */
  private contextBackoff(ctx: readonly number[]): number {
    if (ctx.length === 1) return this.unigramBackoff[ctx[0]!]!;
    return this.grams[ctx.length - 1]!.get(ctx.join(','))?.[1] ?? 0;
  }
}
