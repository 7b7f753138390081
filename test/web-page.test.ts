// The web page in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core)
// against the shipped image model served in-process: choose a committed test image, read the
// predictions at budget 0.5, move the slider to 1.0 with the keyboard, and check the page shows
// what the server answers and that the compute overlay changes; a file dropped on the page is
// classified too. The page must load nothing from outside the server and log no errors. The
// speech panel streams a committed test utterance chosen in its file input, and Chromium's fake
// microphone, through /asr (the shipped speech model); the file must end on the utterance's text,
// which is also what POST /transcribe gives for it.
// Screenshots go to test-artifacts/.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import sharp from 'sharp';
import { AcmClient } from '../clients/sdk.js';
import type { TestApp } from './support/fake.js';
import { speechServer, type SpeechTestServer } from './support/tiny-speech.js';
import { ortApp, REPO_ROOT } from './support/tiny-bundle.js';

const CHROMIUM = '/usr/bin/chromium';
const FIXTURE = join(REPO_ROOT, 'test', 'fixtures', 'fashion-test', 'ankle-boot-6000.png');
const ARTIFACTS = join(REPO_ROOT, 'test-artifacts');

interface Overlay { url: string; painted: number }

async function overlay(page: Page): Promise<Overlay> {
  return page.evaluate(() => {
    const canvas = document.getElementById('overlay') as HTMLCanvasElement;
    const data = canvas.getContext('2d')?.getImageData(0, 0, canvas.width, canvas.height).data ?? new Uint8ClampedArray();
    let painted = 0;
    for (let i = 3; i < data.length; i += 4) if ((data[i] ?? 0) > 0) painted++;
    return { url: canvas.toDataURL('image/png'), painted };
  });
}

async function shownPredictions(page: Page): Promise<{ label: string; text: string }[]> {
  return page.$$eval('#predictions li', (items) => items.map((li) => ({ label: (li as HTMLElement).dataset.label ?? '', text: li.textContent ?? '' })));
}

async function waitForBudget(page: Page, budget: string): Promise<void> {
  await page.waitForSelector(`#image-panel[data-state="done"][data-budget="${budget}"]`, { timeout: 30_000 });
}

describe('web page in headless Chromium', () => {
  let t: TestApp;
  let server: Server;
  let origin: string;
  let browser: Browser;
  let page: Page;
  const requests: string[] = [];
  const problems: string[] = [];

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: install the Debian package chromium (.ci/run does)`);
    t = await ortApp(join(REPO_ROOT, 'models'));
    server = createServer(t.app).listen(0, '127.0.0.1');
    await once(server, 'listening');
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    await mkdir(ARTIFACTS, { recursive: true });
    // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1100, height: 1000 } });
    page.on('request', (r) => requests.push(r.url()));
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('response', (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`); });
  });
  after(async () => {
    await browser?.close();
    server?.close();
    await t?.inference.shutdown(1000);
  });

  it('classifies a chosen image, and the slider re-classifies with a different overlay', { timeout: 120_000 }, async () => {
    const client = new AcmClient({ url: origin });
    const labels = JSON.parse(await readFile(join(REPO_ROOT, 'test', 'fixtures', 'fashion-test', 'labels.json'), 'utf8')) as Record<string, string>;
    const expected = labels['ankle-boot-6000.png'];
    const bytes = await readFile(FIXTURE);

    await page.goto(`${origin}/`);
    await page.waitForSelector('body[data-ready="true"]');
    await page.setInputFiles('#image-file', FIXTURE);
    await waitForBudget(page, '0.5');
    const half = await shownPredictions(page);
    const atHalf = await client.classify(bytes, { budget: 0.5, topK: 5 });
    assert.deepEqual(half.map((p) => p.label), atHalf.predictions.map((p) => p.label), 'the page shows the server ranking at 0.5');
    assert.equal(half[0]?.label, expected, `the image is a ${expected}`);
    assert.ok(half[0]?.text.includes(`${((atHalf.predictions[0]?.score ?? 0) * 100).toFixed(1)}%`), half[0]?.text);
    assert.equal(await page.textContent('#image-compute dd[data-field="budget requested"]'), '0.50');
    assert.equal(await page.textContent('#image-compute dd[data-field="budget used"]'), atHalf.compute.used.toFixed(3));
    const before = await overlay(page);
    assert.ok(before.painted > 320 * 320 * 0.9, `the map covers the square image (${before.painted} pixels)`);
    await page.screenshot({ path: join(ARTIFACTS, 'web-image-budget-0.5.png'), fullPage: true });

    await page.focus('#image-budget');
    await page.keyboard.press('End');
    await waitForBudget(page, '1');
    const full = await shownPredictions(page);
    const atFull = await client.classify(bytes, { budget: 1, topK: 5 });
    assert.deepEqual(full.map((p) => p.label), atFull.predictions.map((p) => p.label), 'the page shows the server ranking at 1.0');
    assert.equal(full[0]?.label, expected);
    assert.equal(await page.textContent('#image-budget-value'), '1.00');
    assert.equal(await page.textContent('#image-compute dd[data-field="budget used"]'), atFull.compute.used.toFixed(3));
    const afterMove = await overlay(page);
    assert.notEqual(afterMove.url, before.url, 'the overlay changes with the budget');
    await page.screenshot({ path: join(ARTIFACTS, 'web-image-budget-1.png'), fullPage: true });
    await page.locator('.viewer').screenshot({ path: join(ARTIFACTS, 'web-overlay-budget-1.png') });

    // Dropping a file on the drop zone classifies it at the slider's budget.
    const trouser = await readFile(join(REPO_ROOT, 'test', 'fixtures', 'fashion-test', 'trouser-6000.png'));
    const atDrop = await client.classify(trouser, { budget: 1, topK: 5 });
    const transfer = await page.evaluateHandle((b64) => {
      const dt = new DataTransfer();
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      dt.items.add(new File([bytes], 'trouser.png', { type: 'image/png' }));
      return dt;
    }, trouser.toString('base64'));
    await page.dispatchEvent('#drop', 'drop', { dataTransfer: transfer });
    await page.waitForSelector(`#predictions li:first-child[data-label="${atDrop.predictions[0]?.label ?? ''}"]`, { timeout: 30_000 });
    await waitForBudget(page, '1');
    assert.deepEqual((await shownPredictions(page)).map((p) => p.label), atDrop.predictions.map((p) => p.label));
    assert.equal(atDrop.predictions[0]?.label, labels['trouser-6000.png']);
    assert.notEqual((await overlay(page)).url, afterMove.url, 'the overlay is the dropped image\'s');
  });

  it('draws a photo upright by its EXIF orientation, with the map over it as the server saw it', { timeout: 60_000 }, async () => {
    // Stored 40 wide and 20 high, left half white; Orientation 6 shows it 20 wide and 40 high, white on top.
    const raw = Uint8Array.from({ length: 40 * 20 }, (_, i) => (i % 40 < 20 ? 255 : 0));
    const tagged = await sharp(raw, { raw: { width: 40, height: 20, channels: 1 } }).jpeg({ quality: 95 })
      .withMetadata({ orientation: 6 }).toBuffer();
    await page.goto(`${origin}/`);
    await page.waitForSelector('body[data-ready="true"]');
    await page.setInputFiles('#image-file', { name: 'portrait.jpg', mimeType: 'image/jpeg', buffer: tagged });
    await waitForBudget(page, '0.5');
    const drawn = await page.evaluate(() => {
      const read = (id: string): Uint8ClampedArray => {
        const c = document.getElementById(id) as HTMLCanvasElement;
        return c.getContext('2d')?.getImageData(0, 0, c.width, c.height).data ?? new Uint8ClampedArray();
      };
      const img = read('image-canvas');
      const map = read('overlay');
      let top = 0, bottom = 0, left = 320, right = -1, high = 320, low = -1;
      for (let y = 0; y < 320; y++) {
        for (let x = 0; x < 320; x++) {
          const i = (y * 320 + x) * 4;
          if (y < 160) top += img[i] ?? 0; else bottom += img[i] ?? 0;
          if ((map[i + 3] ?? 0) > 0) {
            left = Math.min(left, x); right = Math.max(right, x); high = Math.min(high, y); low = Math.max(low, y);
          }
        }
      }
      return { top, bottom, mapWidth: right - left + 1, mapHeight: low - high + 1 };
    });
    assert.ok(drawn.top > 4 * drawn.bottom, `the white half is on top (red sums ${drawn.top} above, ${drawn.bottom} below)`);
    assert.ok(drawn.mapHeight > 1.5 * drawn.mapWidth, `the map is drawn over a portrait image (${drawn.mapWidth}x${drawn.mapHeight})`);
  });

  it('shows the speech panel only when a speech model is served', async () => {
    const models = await new AcmClient({ url: origin }).models();
    const speech = models.some((m) => m.task !== 'image-classification');
    assert.equal(await page.isVisible('#speech-unavailable'), !speech);
    assert.equal(await page.isDisabled('#mic-start'), !speech);
    assert.equal(await page.isDisabled('#audio-file'), !speech);
  });

  it('loads everything from the server itself and logs no errors', () => {
    assert.ok(requests.length >= 4, `requests seen: ${requests.join(', ')}`);
    assert.deepEqual(requests.filter((u) => !u.startsWith(`${origin}/`)), [], 'no request leaves the server');
    assert.deepEqual(problems, []);
  });
});

describe('speech panel in headless Chromium', () => {
  let s: SpeechTestServer;
  let browser: Browser;
  let page: Page;
  const problems: string[] = [];
  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: install the Debian package chromium (.ci/run does)`);
    s = await speechServer({ ACM_MODELS_DIR: join(REPO_ROOT, 'models') });
    await mkdir(ARTIFACTS, { recursive: true });
    // A fake microphone (Chromium's test tone) that needs no permission prompt.
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true,
      args: ['--no-sandbox', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'] });
    page = await browser.newPage({ viewport: { width: 1100, height: 1000 } });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()}`));
  });
  after(async () => {
    await browser?.close();
    await s?.close();
  });

  it('streams a chosen WAV file: partials while it runs, its transcript as the final text, compute over time', { timeout: 120_000 }, async () => {
    const path = join(REPO_ROOT, 'test', 'fixtures', 'speech', 'utterance.wav');
    const wav = await readFile(path);
    const spoken = (JSON.parse(await readFile(join(REPO_ROOT, 'test', 'fixtures', 'speech', 'utterance.json'), 'utf8')) as { text: string }).text;
    await page.goto(`${s.url}/`);
    await page.waitForSelector('body[data-ready="true"]');
    assert.equal(await page.isVisible('#speech-unavailable'), false);
    // Budget 0.5 with the keyboard: Home is 0.05, each step 0.05.
    await page.focus('#speech-budget');
    await page.keyboard.press('Home');
    for (let i = 0; i < 9; i++) await page.keyboard.press('ArrowRight');
    assert.equal(await page.textContent('#speech-budget-value'), '0.50');
    const expected = await new AcmClient({ url: s.url }).transcribe(wav, { budget: 0.5 });
    assert.equal(expected.text, spoken, 'the bundled model transcribes the committed utterance');

    await page.evaluate(() => {
      const seen: string[] = [];
      (window as unknown as { partials: string[] }).partials = seen;
      const el = document.getElementById('partial-text') as HTMLElement;
      new MutationObserver(() => { if (el.textContent) seen.push(el.textContent); }).observe(el, { childList: true, characterData: true, subtree: true });
    });
    await page.setInputFiles('#audio-file', path);
    await page.waitForSelector('#speech-panel[data-state="done"]', { timeout: 60_000 });
    assert.equal(await page.textContent('#final-text'), expected.text);
    const partials = await page.evaluate(() => (window as unknown as { partials: string[] }).partials);
    assert.ok(partials.length >= 2, `partial text shown while streaming (${partials.length} updates)`);
    assert.equal(Number(await page.getAttribute('#compute-plot', 'data-frames')), expected.compute.frames.values.length,
      'the plot holds one value per frame of the audio');
    assert.equal(await page.textContent('#speech-compute dd[data-field="budget requested"]'), '0.50');
    const painted = await page.evaluate(() => {
      const c = document.getElementById('compute-plot') as HTMLCanvasElement;
      const d = c.getContext('2d')?.getImageData(0, 0, c.width, c.height).data ?? new Uint8ClampedArray();
      let n = 0;
      for (let i = 3; i < d.length; i += 4) if ((d[i] ?? 0) > 0) n++;
      return n;
    });
    assert.ok(painted > 200, `the compute plot is drawn (${painted} pixels)`);
    await page.screenshot({ path: join(ARTIFACTS, 'web-speech.png'), fullPage: true });
    assert.deepEqual(problems, []);
  });

  it('streams the microphone from Start to Stop and ends on a final transcript with compute over time', { timeout: 60_000 }, async () => {
    await page.click('#mic-start');
    await page.waitForSelector('#speech-panel[data-state="busy"]');
    // Wait for audio to have reached the server: the first partial's compute is plotted.
    await page.waitForFunction(() => Number(document.getElementById('compute-plot')?.dataset.frames ?? 0) > 0, undefined, { timeout: 30_000 });
    assert.equal(await page.textContent('#speech-error'), '');
    assert.equal(await page.isDisabled('#mic-start'), true);
    await page.click('#mic-stop');
    await page.waitForSelector('#speech-panel[data-state="done"]', { timeout: 30_000 });
    assert.equal(await page.isDisabled('#mic-start'), false);
    assert.equal(await page.isDisabled('#mic-stop'), true);
    assert.ok(Number(await page.getAttribute('#compute-plot', 'data-frames')) > 0);
    assert.match(await page.textContent('#speech-compute dd[data-field="budget used"]') ?? '', /^0\.\d{3}$/);
    assert.equal(await page.textContent('#speech-error'), '');
    await page.screenshot({ path: join(ARTIFACTS, 'web-speech-microphone.png'), fullPage: true });
    assert.deepEqual(problems, []);
  });
});
