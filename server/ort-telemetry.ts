// onnxruntime's official Linux builds (1.29 and later) report each session they create (model file
// and graph names, weight hashes, the machine's settings) to Microsoft's telemetry collector, and
// leave a log file and a session file in TMPDIR, unless the environment variable
// ORT_DISABLE_TELEMETRY is 1 when the first session is created. A server should not announce the
// models it serves to a third party by default, so the variable is set here unless the operator
// has set it (any other value, such as 0, leaves the library's telemetry on).
//
// onnxruntime reads the process environment from native code, and a worker thread's process.env is
// only a copy: this must run on the main thread before any session exists.
import { isMainThread } from 'node:worker_threads';

export const TELEMETRY_VARIABLE = 'ORT_DISABLE_TELEMETRY';

/** Sets ORT_DISABLE_TELEMETRY=1 unless it is set already; returns whether the library's telemetry is off. */
export function disableOrtTelemetry(env: NodeJS.ProcessEnv = process.env): boolean {
  if (!isMainThread) throw new Error('disableOrtTelemetry must run on the main thread: a worker\'s process.env does not reach onnxruntime');
  env[TELEMETRY_VARIABLE] ??= '1';
  return env[TELEMETRY_VARIABLE] === '1';
}
