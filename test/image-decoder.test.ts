// Image decoding off the HTTP thread: the threads give exactly what decoding in place gives, carry
// a bad image's error code across, fail only the images a dying thread held (and are replaced),
// and time out an image that takes too long.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import sharp from 'sharp';
import { AcmError } from '../server/errors.js';
import { ThreadedImageDecoder, imageDecoder, inlineDecoder } from '../server/image-decoder.js';
import { decodeImage } from '../server/image.js';
import { fakeManifest } from './support/fake.js';
import { bombPng } from './support/images.js';

const contract = fakeManifest().image;
const FLAKY = new URL('./support/flaky-decode-worker.js', import.meta.url);

async function code(p: Promise<unknown>): Promise<string> {
  const err = await p.then(() => assert.fail('expected a rejection'), (e: unknown) => e);
  assert.ok(err instanceof AcmError, `expected AcmError, got ${String(err)}`);
  return err.code;
}

const png = async (seed: number): Promise<Buffer> => sharp(Uint8Array.from({ length: 40 * 30 * 3 }, (_, i) => (i * seed) % 256),
  { raw: { width: 40, height: 30, channels: 3 } }).png().toBuffer();

describe('image decoding threads', () => {
  const decoders: ThreadedImageDecoder[] = [];
  after(async () => { await Promise.all(decoders.map((d) => d.close())); });
  const make = (threads: number, url?: URL): ThreadedImageDecoder => {
    const d = url ? new ThreadedImageDecoder(threads, url) : new ThreadedImageDecoder(threads);
    decoders.push(d);
    return d;
  };

  it('ACM_DECODE_THREADS=0 decodes in place, more in threads', () => {
    assert.ok(!(imageDecoder(0) instanceof ThreadedImageDecoder));
    assert.ok(!(inlineDecoder() instanceof ThreadedImageDecoder));
    const d = imageDecoder(2);
    assert.ok(d instanceof ThreadedImageDecoder);
    void d.close();
  });

  it('gives the same tensor as decoding in place, for requests in flight at once', async () => {
    const d = make(2);
    const images = await Promise.all([3, 7, 11, 13, 17, 19].map(png));
    const threaded = await Promise.all(images.map((b) => d.decode(b, contract, 1e6, 5000)));
    const inline = await Promise.all(images.map((b) => decodeImage(b, { image: contract }, 1e6)));
    threaded.forEach((t, i) => assert.deepEqual(Array.from(t.pixels), Array.from(inline[i]!), `image ${i}`));
    assert.ok(threaded.every((t) => t.reader === 'libvips'), 'a 40x30 image is not at the input size');
  });

  it('says which reader decoded each image, and reads with libvips only when direct reading is off', async () => {
    const atSize = await sharp(Buffer.alloc(contract.width * contract.height, 90),
      { raw: { width: contract.width, height: contract.height, channels: 1 } }).toColourspace('b-w').png().toBuffer();
    assert.equal(contract.channels, 1);
    const direct = make(1);
    assert.equal((await direct.decode(atSize, contract, 1e6, 5000)).reader, 'png');
    assert.equal((await direct.decode(await png(3), contract, 1e6, 5000)).reader, 'libvips');
    const off = new ThreadedImageDecoder(1, undefined, false);
    decoders.push(off);
    const viaLibvips = await off.decode(atSize, contract, 1e6, 5000);
    assert.equal(viaLibvips.reader, 'libvips');
    assert.deepEqual(Array.from(viaLibvips.pixels), Array.from((await direct.decode(atSize, contract, 1e6, 5000)).pixels));
    assert.equal((await inlineDecoder().decode(atSize, contract, 1e6, 5000)).reader, 'png');
    assert.equal((await inlineDecoder(false).decode(atSize, contract, 1e6, 5000)).reader, 'libvips');
  });

  it('carries a bad image\'s error code and message from the thread', async () => {
    const d = make(1);
    assert.equal(await code(d.decode(Buffer.from('not an image at all'), contract, 1e6, 5000)), 'invalid_image');
    const err = (await d.decode(bombPng(5000, 5000), contract, 1e6, 5000).catch((e: unknown) => e)) as AcmError;
    assert.equal(err.code, 'image_too_large');
    assert.match(err.message, /at most 1000000 pixels; got 5000x5000 = 25000000/);
    assert.equal(await code(d.decode(Buffer.alloc(0), contract, 1e6, 5000)), 'empty_body');
  });

  it('fails only the image a dying thread held, then decodes on a new thread', async () => {
    const d = make(1, FLAKY);
    assert.equal(await code(d.decode(Buffer.from([0xde, 1, 2]), contract, 1e6, 5000)), 'internal');
    const again = await d.decode(await png(5), contract, 1e6, 5000);
    assert.equal(again.pixels.length, 28 * 28);
  });

  it('fails an image not decoded in time with deadline_exceeded', async () => {
    const d = make(1, FLAKY);
    const t0 = performance.now();
    assert.equal(await code(d.decode(Buffer.from([0xaa, 1, 2]), contract, 1e6, 50)), 'deadline_exceeded');
    assert.ok(performance.now() - t0 < 350, 'the timeout does not wait for the thread');
  });

  it('refuses new images after close with not_ready', async () => {
    const d = make(1);
    await d.decode(await png(3), contract, 1e6, 5000);
    await d.close();
    assert.equal(await code(d.decode(await png(3), contract, 1e6, 5000)), 'not_ready');
  });
});
