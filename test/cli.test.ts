// The acm CLI as a user runs it: a child process against the real HTTP server in-process (fake
// backend). Output in text and JSON, the heatmap PNG, the server URL from --url and ACM_URL,
// and one line plus a non-zero exit for every kind of failure.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { fakeApp, LABELS } from './support/fake.js';
import { makeImage } from './support/images.js';
import { REPO_ROOT } from './support/tiny-bundle.js';

const CLI = join(REPO_ROOT, 'dist', 'clients', 'cli.js');

interface Run { code: number; stdout: string; stderr: string }

function acm(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ACM_URL: '', ...env }, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

function oneLineError(r: Run, code: number, pattern: RegExp): void {
  assert.equal(r.code, code, `exit ${code}: ${r.stderr}`);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line: ${r.stderr}`);
  assert.match(lines[0] ?? '', pattern);
  assert.equal(r.stdout, '');
}

describe('acm CLI', () => {
  let server: Server;
  let url: string;
  let dir: string;
  let image: string;
  before(async () => {
    const t = await fakeApp();
    server = createServer(t.app).listen(0, '127.0.0.1');
    await once(server, 'listening');
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    dir = await mkdtemp(join(tmpdir(), 'acm-cli-'));
    image = join(dir, 'shoe.png');
    await writeFile(image, await makeImage(6, 'png', 56, 40));
  });
  after(async () => {
    server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('lists models as text and as JSON', async () => {
    const text = await acm(['models', '--url', url]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^fake-vit-acm {2}image-classification, 10 classes, default budget 1, floor 0\.05$/m);
    const json = await acm(['models', '--json'], { ACM_URL: url });
    assert.equal(json.code, 0, json.stderr);
    assert.equal((JSON.parse(json.stdout) as { models: { name: string }[] }).models[0]?.name, 'fake-vit-acm');
  });

  it('classifies an image: predictions, compute report and map as text; the server answer with --json', async () => {
    const text = await acm(['classify', image, '--budget', '0.5', '--top-k', '3', '--url', url]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^fake-vit-acm: budget 0\.5, used 0\.\d{3} \(floor 0\.050\), [\d.e-]+ GFLOPs of [\d.e-]+ dense$/m);
    const ranked = text.stdout.split('\n').filter((l) => /^ +\d\. /.test(l));
    assert.equal(ranked.length, 3);
    for (const line of ranked) assert.ok(LABELS.some((l) => line.includes(l)), line);
    assert.match(text.stdout, /compute map \(4x4 patches/);

    const json = await acm(['classify', image, '--budget', '0.5', '--top-k', '3', '--json', '--url', url]);
    assert.equal(json.code, 0, json.stderr);
    const body = JSON.parse(json.stdout) as { model: string; predictions: unknown[]; compute: { budget: number; map: { grid: number[] } } };
    assert.deepEqual(Object.keys(body).sort(), ['compute', 'model', 'predictions']);
    assert.equal(body.compute.budget, 0.5);
    assert.equal(body.predictions.length, 3);
    assert.deepEqual(body.compute.map.grid, [4, 4]);
  });

  it('writes --heatmap: the image enlarged with the map blended over it and a colour strip, different per budget', async () => {
    const low = join(dir, 'low.png');
    const high = join(dir, 'high.png');
    const a = await acm(['classify', image, '--budget', '0.25', '--heatmap', low, '--url', url]);
    assert.equal(a.code, 0, a.stderr);
    assert.match(a.stdout, /^heatmap: .*low\.png \(314x240\)$/m, 'a 56x40 image is enlarged to 224 px on its short side, plus a 16 px strip');
    assert.equal((await acm(['classify', image, '--budget', '1', '--heatmap', high, '--json', '--url', url])).code, 0);
    const [lo, hi, plain] = await Promise.all([low, high].map((p) => sharp(p).raw().toBuffer({ resolveWithObject: true }))
      .concat(sharp(await readFile(image)).resize(314, 224, { kernel: 'nearest' }).raw().toBuffer({ resolveWithObject: true })));
    assert.deepEqual([lo?.info.format, lo?.info.width, lo?.info.height], ['raw', 314, 240]);
    assert.notDeepEqual(lo?.data, hi?.data, 'the overlay changes with the budget');
    assert.notDeepEqual(lo?.data.subarray(0, 314 * 224 * 3), plain?.data, 'the map is drawn over the image');
  });

  it('exits 1 with one line for a server that is down, a missing file, and a server error code', async () => {
    const closed = createServer().listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const down = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
    closed.close();
    await once(closed, 'close');
    oneLineError(await acm(['models', '--url', down]), 1, /^acm: unreachable: cannot reach http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED$/);
    oneLineError(await acm(['classify', join(dir, 'none.png'), '--url', url]), 1, /^acm: cannot read image .*none\.png: ENOENT$/);
    const notImage = join(dir, 'notes.txt');
    await writeFile(notImage, 'hello');
    oneLineError(await acm(['classify', notImage, '--url', url]), 1, /^acm: unsupported_media_type: Content-Type must be one of image\/png/);
    oneLineError(await acm(['classify', image, '--model', 'nope', '--url', url]), 1, /^acm: unknown_model: model must be one of fake-vit-acm; got "nope"$/);
    oneLineError(await acm(['transcribe', image, '--url', url]), 1, /^acm: not_found: no route POST \/transcribe/);
  });

  it('exits 2 with one line for a mistake in the command line', async () => {
    oneLineError(await acm(['classify', image, '--budget', 'abc', '--url', url]), 2, /^acm: --budget must be a number in \(0, 1\]; got "abc" \(acm --help for usage\)$/);
    oneLineError(await acm(['classify', image, '--budget', '0', '--url', url]), 2, /--budget must be a number in \(0, 1\]; got "0"/);
    oneLineError(await acm(['classify', image, '--top-k', 'x', '--url', url]), 2, /^acm: --top-k must be an integer >= 1; got "x"/);
    oneLineError(await acm(['frobnicate']), 2, /^acm: unknown command or arguments: frobnicate/);
    oneLineError(await acm([]), 2, /^acm: no command given/);
    oneLineError(await acm(['classify', '--nope']), 2, /^acm: Unknown option '--nope'/);
    oneLineError(await acm(['models', '--url', 'ftp://x']), 2, /^acm: url must be an http\(s\) URL; got "ftp:\/\/x"/);
    const help = await acm(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^usage: acm <command>/);
  });
});
