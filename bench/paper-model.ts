// The model-level table at the paper's size: a ViT-B/16-geometry ACM model (hidden 768, 12 layers,
// 197 tokens, N = 4, every FFN and q/k/v/o; random weights) and its dense ViT-B/16, exported by the
// toolchain (models.toolchain.make_tiny_bundle --config vit-b16) into --dir when the folder holds
// no bundle yet, then timed by bench:model. The export takes about two minutes and 700 MB of disk;
// later runs reuse it while the toolchain's sources are those it was exported with (a fingerprint
// beside it); after a change to the kernel or the model code it is exported again, so the table
// never times an older graph. --floor-path is on unless --plain (README, "Floor path"); a folder
// exported the other way is refused rather than silently reused.
//
//   (options: USAGE below, or --help)
// --quick exports the tiny configuration instead (seconds) and runs bench:model --quick on it: it
// checks that the step works; its timings mean nothing.
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { intArg, parseCli, usageError } from './args.js';
import { REPO } from './server-process.js';

const USAGE = `
usage: npm run bench:paper -- [--quick] [--dir .cache/bench/vit-b16-floor] [--plain] [--batches 1,8,32]
    [--repeats 7] [--json FILE]
bench:model at the paper's size: a ViT-B/16-geometry ACM bundle with random weights and its dense
ViT-B/16, exported by the toolchain into --dir on the first run (about two minutes, 700 MB), then
ms per image, speedup and FLOP-ideal speedup at batches and budgets. --plain exports without the
floor path (default: with it; use another --dir for each).
`;

const { values: opts } = parseCli(USAGE, {
  options: {
    quick: { type: 'boolean', default: false },
    dir: { type: 'string' },
    plain: { type: 'boolean', default: false },
    batches: { type: 'string' },
    repeats: { type: 'string' },
    json: { type: 'string' },
  },
});

const config = opts.quick ? 'tiny' : 'vit-b16';
const dir = resolve(opts.dir ?? join(REPO, '.cache', 'bench', `${config}-${opts.plain ? 'plain' : 'floor'}`));
const repeats = intArg('repeats', opts.repeats, opts.quick ? 2 : 7, 1, 1000);
const json = opts.json ?? join(REPO, '.cache', 'bench', `model-${config}.json`);

/** Whether the bundle in `folder` was exported with the floor path (make_tiny_bundle records it in
 * the manifest's free-form training entry; bundles from before that were all exported without). */
function floorPath(folder: string): boolean {
  const manifest = JSON.parse(readFileSync(join(folder, 'acm.json'), 'utf8')) as { training?: { floor_path?: boolean } };
  return manifest.training?.floor_path === true;
}

/** The folders whose Python sources make the exported graph: the model code and the kernel. */
const EXPORT_SOURCES = ['models/toolchain', 'kernels'];
/** Beside the exported bundle: the fingerprint of the sources it was exported with. */
const FINGERPRINT = 'toolchain.sha256';

/** SHA-256 over the name and content of every .py file directly in EXPORT_SOURCES. */
function toolchainFingerprint(root = REPO): string {
  const hash = createHash('sha256');
  for (const folder of EXPORT_SOURCES) {
    for (const name of readdirSync(join(root, folder)).filter((f) => f.endsWith('.py')).sort()) {
      hash.update(`${folder}/${name}\0`).update(readFileSync(join(root, folder, name))).update('\0');
    }
  }
  return hash.digest('hex');
}

function ensureBundle(): void {
  const graph = join(dir, 'model.onnx');
  const fingerprint = toolchainFingerprint();
  if (existsSync(join(dir, 'acm.json')) && existsSync(graph)) {
    if (floorPath(dir) === opts.plain) {
      usageError(`--dir ${dir} holds a bundle exported ${opts.plain ? 'with' : 'without'} the floor path; ` +
        `give another --dir${opts.plain ? '' : ' or add --plain'}`);
    }
    const recorded = existsSync(join(dir, FINGERPRINT)) ? readFileSync(join(dir, FINGERPRINT), 'utf8').trim() : undefined;
    if (recorded === fingerprint) {
      console.log(`${dir}: reusing the bundle there`);
      return;
    }
    console.log(`${dir}: the toolchain has changed since the bundle there was exported`);
  }
  console.log(`exporting the ${config} bundle into ${dir}${opts.plain ? '' : ' with the floor path'} ...`);
  execFileSync(process.env.ACM_PYTHON ?? '/usr/bin/python3',
    ['-m', 'models.toolchain.make_tiny_bundle', '--config', config, '--name', `${config}-acm`, '--out', dir,
      ...(opts.plain ? [] : ['--floor-path'])],
    { cwd: REPO, stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, PYTHONWARNINGS: 'ignore' } });
  writeFileSync(join(dir, FINGERPRINT), `${fingerprint}\n`);
}

async function main(): Promise<void> {
  ensureBundle();
  const args = [fileURLToPath(new URL('./model-bench.js', import.meta.url)), '--bundle', dir, '--repeats', String(repeats), '--json', json];
  if (opts.batches !== undefined) args.push('--batches', opts.batches);
  if (opts.quick) args.push('--quick');
  const child = spawn(process.execPath, args, { stdio: 'inherit' });
  const [code] = (await once(child, 'exit')) as [number | null];
  process.exit(code ?? 1);
}

await main();
