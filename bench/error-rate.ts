// Character and word error rates as the speech toolchain computes them (speech/model.py
// error_rates): total edits over total reference length, for a whole set of utterances.

/** Levenshtein distance between two sequences (substitutions, insertions and deletions cost 1). */
export function editDistance<T>(a: readonly T[], b: readonly T[]): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur.push(Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1)));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

export interface ErrorRates { cer: number; wer: number }

export function errorRates(hyps: readonly string[], refs: readonly string[]): ErrorRates {
  if (hyps.length !== refs.length) throw new Error(`${hyps.length} hypotheses for ${refs.length} references`);
  let ce = 0, cn = 0, we = 0, wn = 0;
  hyps.forEach((h, i) => {
    const r = refs[i]!;
    ce += editDistance([...h], [...r]);
    cn += r.length;
    const rw = r.split(' ').filter((w) => w);
    we += editDistance(h.split(' ').filter((w) => w), rw);
    wn += rw.length;
  });
  return { cer: ce / Math.max(1, cn), wer: we / Math.max(1, wn) };
}
