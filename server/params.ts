// Request parameters shared by every transport (HTTP query and headers today, WebSocket start
// messages and KServe parameters later), parsed one way so the same bad value gets the same
// error everywhere.
import { AcmError, shown } from './errors.js';

const DECIMAL = /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i;

/** Parses a budget given as text; undefined or empty means "use the default". */
export function parseBudget(raw: string | undefined, field = 'budget'): number | undefined {
  if (raw === undefined || raw.trim() === '') return undefined;
  // Plain decimal notation only: Number() would also take "0x1" or "0b1".
  const value = DECIMAL.test(raw.trim()) ? Number(raw.trim()) : NaN;
  return checkBudget(value, field, raw);
}

/** Checks a budget already typed as a number (JSON transports). */
export function checkBudget(value: number, field = 'budget', raw: unknown = value): number {
  if (!Number.isFinite(value) || value <= 0 || value > 1) {
    throw new AcmError('invalid_budget', `${field} must be a number in (0, 1]; got ${shown(raw)}`);
  }
  return value;
}

/** Parses top_k as text; the upper bound depends on the model and is checked by checkTopK. */
export function parseTopK(raw: string | undefined, field = 'top_k'): number | undefined {
  if (raw === undefined || raw.trim() === '') return undefined;
  const value = /^\s*\d+\s*$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new AcmError('bad_request', `${field} must be an integer >= 1; got ${shown(raw)}`);
  }
  return value;
}

export function checkTopK(value: number, classes: number, field = 'top_k'): number {
  if (!Number.isSafeInteger(value) || value < 1 || value > classes) {
    throw new AcmError('bad_request', `${field} must be an integer in [1, ${classes}]; got ${shown(value)}`);
  }
  return value;
}

/** What POST /classify takes, in its query or as multipart text fields beside the image. */
export const CLASSIFY_PARAMS: readonly string[] = ['budget', 'top_k', 'model'];
/** What POST /transcribe and the /asr handshake take in their query. */
export const SPEECH_PARAMS: readonly string[] = ['budget', 'model'];

/** The first of `names` that is not in `known`, or undefined when every one is. */
export function firstUnknown(names: Iterable<string>, known: readonly string[]): string | undefined {
  for (const name of names) if (!known.includes(name)) return name;
  return undefined;
}

/**
 * Refuses a query parameter the route does not take: a misspelt `?budegt=0.25` would otherwise be
 * served at the default budget, and the caller would never learn why it cost what it did.
 */
export function onlyKnownParams(names: Iterable<string>, known: readonly string[], route: string): void {
  const unknown = firstUnknown(names, known);
  if (unknown !== undefined) throw new AcmError('bad_request', `${route} takes the query parameters ${known.join(', ')}; got ${shown(unknown)}`);
}

/** Scalar query values only: `?budget=1&budget=2` is ambiguous and refused rather than guessed. */
export function single(value: unknown, field: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'string') return value;
  throw new AcmError('bad_request', `${field} must be given once, as a single value; got ${shown(JSON.stringify(value))}`);
}
