// The web page: classify an image at a budget and draw the compute map over it; stream speech
// from the microphone or a file through WebSocket /asr and plot compute over time. Everything
// goes through the SDK, against the server that served the page.
import { colour, patchLookup, type Fit } from '../heatmap-core.js';
import { AcmClient, AcmError, type ClassifyResult, type ModelInfo, type SpeechModelInfo, type StreamEvent } from '../sdk.js';

const client = new AcmClient({ url: location.origin, timeoutMs: 30_000 });
const VIEW = 320;
const OVERLAY_ALPHA = 140;
/** Slider moves closer together than this re-classify once. */
const DEBOUNCE_MS = 120;
/** Audio files are streamed in 100 ms pieces, four times faster than real time. */
const FILE_CHUNK_S = 0.1;
const FILE_SPEEDUP = 4;
const MODEL_LIST_ATTEMPTS = 15;
const MODEL_LIST_RETRY_MS = 2000;

function el<T extends HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`page is missing #${id}`);
  return e as T;
}

function describeError(err: unknown): string {
  if (err instanceof AcmError) return `${err.code}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

function fillCompute(dl: HTMLElement, rows: [string, string][]): void {
  dl.replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    dd.dataset.field = k;
    return [dt, dd];
  }));
}

function drawLegend(): void {
  const canvas = el<HTMLCanvasElement>('legend');
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  for (let x = 0; x < canvas.width; x++) {
    const [r, g, b] = colour(x / (canvas.width - 1));
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(x, 0, 1, canvas.height);
  }
}

// ---- image ----

interface ImageModel { name: string; input: { width: number; height: number; resize: Fit } }

const image = {
  panel: el('image-panel'),
  budget: el<HTMLInputElement>('image-budget'),
  budgetValue: el<HTMLOutputElement>('image-budget-value'),
  model: el<HTMLSelectElement>('image-model'),
  canvas: el<HTMLCanvasElement>('image-canvas'),
  overlay: el<HTMLCanvasElement>('overlay'),
  predictions: el<HTMLOListElement>('predictions'),
  compute: el('image-compute'),
  error: el('image-error'),
  models: [] as ImageModel[],
  bytes: undefined as Uint8Array | undefined,
  bitmap: undefined as ImageBitmap | undefined,
  inFlight: undefined as AbortController | undefined,
  timer: undefined as number | undefined,
};

function displaySize(w: number, h: number): { w: number; h: number } {
  const s = VIEW / Math.max(w, h);
  return { w: Math.max(1, Math.round(w * s)), h: Math.max(1, Math.round(h * s)) };
}

function drawImage(bitmap: ImageBitmap): void {
  const ctx = image.canvas.getContext('2d');
  if (!ctx) return;
  const { w, h } = displaySize(bitmap.width, bitmap.height);
  ctx.clearRect(0, 0, VIEW, VIEW);
  ctx.imageSmoothingEnabled = Math.min(bitmap.width, bitmap.height) >= VIEW / 2;
  ctx.drawImage(bitmap, (VIEW - w) / 2, (VIEW - h) / 2, w, h);
}

function drawOverlay(r: ClassifyResult, bitmap: ImageBitmap): void {
  const ctx = image.overlay.getContext('2d');
  const model = image.models.find((m) => m.name === r.model);
  if (!ctx || !model) return;
  const { w, h } = displaySize(bitmap.width, bitmap.height);
  const lookup = patchLookup(r.compute.map, { width: bitmap.width, height: bitmap.height },
    { width: model.input.width, height: model.input.height, fit: model.input.resize }, w, h);
  const data = ctx.createImageData(VIEW, VIEW);
  const x0 = Math.floor((VIEW - w) / 2);
  const y0 = Math.floor((VIEW - h) / 2);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const v = lookup(x, y);
      if (v === undefined) continue;
      const [cr, cg, cb] = colour(v);
      const i = ((y0 + y) * VIEW + x0 + x) * 4;
      data.data[i] = cr;
      data.data[i + 1] = cg;
      data.data[i + 2] = cb;
      data.data[i + 3] = OVERLAY_ALPHA;
    }
  }
  ctx.putImageData(data, 0, 0);
}

function showResult(r: ClassifyResult): void {
  image.predictions.replaceChildren(...r.predictions.map((p) => {
    const li = document.createElement('li');
    li.dataset.label = p.label;
    li.textContent = `${p.label} ${(p.score * 100).toFixed(1)}%`;
    const bar = document.createElement('span');
    bar.className = 'bar';
    bar.style.width = `${Math.max(1, p.score * 100)}%`;
    li.append(bar);
    return li;
  }));
  const c = r.compute;
  fillCompute(image.compute, [
    ['budget requested', c.budget.toFixed(2)],
    ['budget used', c.used.toFixed(3)],
    ['floor', c.floor.toFixed(3)],
    ['GFLOPs', `${c.gflops.toPrecision(3)} of ${c.dense_gflops.toPrecision(3)} dense`],
    ...(r.timings ? [['time', `${r.timings.totalMs.toFixed(1)} ms`] as [string, string]] : []),
  ]);
}

async function classifyNow(): Promise<void> {
  const bytes = image.bytes;
  const bitmap = image.bitmap;
  if (!bytes || !bitmap) return;
  image.inFlight?.abort();
  const abort = new AbortController();
  image.inFlight = abort;
  const budget = Number(image.budget.value);
  image.panel.dataset.state = 'busy';
  image.error.textContent = '';
  try {
    const r = await client.classify(bytes, { budget, topK: 5, model: image.model.value || undefined, signal: abort.signal });
    if (abort.signal.aborted) return;
    showResult(r);
    drawOverlay(r, bitmap);
    image.panel.dataset.budget = String(r.compute.budget);
    image.panel.dataset.state = 'done';
  } catch (err) {
    if (abort.signal.aborted) return;
    image.error.textContent = describeError(err);
    image.panel.dataset.state = 'error';
  }
}

async function loadImage(file: Blob): Promise<void> {
  image.error.textContent = '';
  try {
    image.bytes = new Uint8Array(await file.arrayBuffer());
    image.bitmap?.close();
    // Upright by the photo's EXIF orientation, as the server decodes it, so the map lies over what the model saw.
    image.bitmap = await createImageBitmap(file, { imageOrientation: 'from-image' });
  } catch {
    image.bytes = undefined;
    image.bitmap = undefined;
    image.error.textContent = 'the browser cannot read this file as an image';
    image.panel.dataset.state = 'error';
    return;
  }
  image.overlay.getContext('2d')?.clearRect(0, 0, VIEW, VIEW);
  drawImage(image.bitmap);
  await classifyNow();
}

function setupImage(models: ModelInfo[]): void {
  image.models = models.filter((m): m is ModelInfo & ImageModel => m.task === 'image-classification' && 'input' in m);
  image.model.replaceChildren(...image.models.map((m) => new Option(m.name, m.name)));
  const file = el<HTMLInputElement>('image-file');
  file.addEventListener('change', () => {
    const f = file.files?.[0];
    if (f) void loadImage(f);
  });
  const drop = el('drop');
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const f = e.dataTransfer?.files[0];
    if (f) void loadImage(f);
  });
  image.budget.addEventListener('input', () => {
    image.budgetValue.value = Number(image.budget.value).toFixed(2);
    clearTimeout(image.timer);
    image.timer = window.setTimeout(() => void classifyNow(), DEBOUNCE_MS);
  });
  image.model.addEventListener('change', () => void classifyNow());
  if (image.models.length === 0) {
    image.panel.dataset.disabled = 'true';
    for (const c of [file, image.budget, image.model]) c.disabled = true;
    image.error.textContent = 'this server has no image model loaded';
  }
}

// ---- speech ----

const speech = {
  panel: el('speech-panel'),
  budget: el<HTMLInputElement>('speech-budget'),
  budgetValue: el<HTMLOutputElement>('speech-budget-value'),
  start: el<HTMLButtonElement>('mic-start'),
  stop: el<HTMLButtonElement>('mic-stop'),
  file: el<HTMLInputElement>('audio-file'),
  partial: el('partial-text'),
  final: el('final-text'),
  plot: el<HTMLCanvasElement>('compute-plot'),
  compute: el('speech-compute'),
  error: el('speech-error'),
  model: undefined as SpeechModelInfo | undefined,
  running: false,
  /** Compute per frame of the current stream: partials bring the frames since the previous message. */
  frames: [] as number[],
  frameMs: 20,
};

/** An async iterable of audio pieces that the producer pushes into and ends. */
class AudioQueue implements AsyncIterable<Uint8Array> {
  private readonly items: Uint8Array[] = [];
  private done = false;
  private wake?: () => void;

  push(samples: Float32Array): void {
    this.items.push(new Uint8Array(samples.buffer.slice(samples.byteOffset, samples.byteOffset + samples.byteLength)));
    this.wake?.();
  }

  end(): void {
    this.done = true;
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    for (;;) {
      const next = this.items.shift();
      if (next) yield next;
      else if (this.done) return;
      else await new Promise<void>((resolve) => { this.wake = resolve; });
    }
  }
}

function plotCompute(budget: number): void {
  const ctx = speech.plot.getContext('2d');
  if (!ctx) return;
  const { width: W, height: H } = speech.plot;
  const values = speech.frames;
  const frameS = speech.frameMs / 1000;
  ctx.clearRect(0, 0, W, H);
  ctx.fillStyle = '#666';
  ctx.font = '11px sans-serif';
  ctx.fillText('1', 2, 10);
  ctx.fillText('0', 2, H - 14);
  ctx.fillText(`${(values.length * frameS).toFixed(1)} s`, W - 40, H - 2);
  const plotH = H - 16;
  const yOf = (v: number): number => 2 + (1 - Math.min(1, Math.max(0, v))) * (plotH - 4);
  ctx.strokeStyle = '#b00020';
  ctx.setLineDash([4, 4]);
  ctx.beginPath();
  ctx.moveTo(14, yOf(budget));
  ctx.lineTo(W, yOf(budget));
  ctx.stroke();
  ctx.setLineDash([]);
  ctx.strokeStyle = '#21918c';
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = 14 + (i / Math.max(1, values.length - 1)) * (W - 16);
    if (i === 0) ctx.moveTo(x, yOf(v));
    else ctx.lineTo(x, yOf(v));
  });
  ctx.stroke();
}

function showSpeech(e: StreamEvent, budget: number): void {
  if (e.type === 'partial') speech.partial.textContent = e.text;
  else {
    speech.final.textContent = e.text;
    speech.partial.textContent = '';
  }
  const f = e.compute.frames;
  speech.frameMs = f.frame_ms;
  if (e.type === 'final') speech.frames = [...f.values];
  else f.values.forEach((v, i) => { speech.frames[(f.start ?? 0) + i] = v; });
  speech.plot.dataset.frames = String(speech.frames.length);
  fillCompute(speech.compute, [
    ['budget requested', budget.toFixed(2)],
    ['budget used', Number(e.compute.used).toFixed(3)],
    ['GFLOPs', Number(e.compute.gflops).toPrecision(3)],
  ]);
  plotCompute(budget);
}

async function runStream(audio: AudioQueue, sampleRate: number): Promise<void> {
  const budget = Number(speech.budget.value);
  speech.running = true;
  speech.panel.dataset.state = 'busy';
  speech.error.textContent = '';
  speech.final.textContent = '';
  speech.partial.textContent = '';
  speech.frames = [];
  speech.plot.dataset.frames = '0';
  try {
    for await (const e of client.stream(audio, { sampleRate, encoding: 'pcm_f32le', budget, model: speech.model?.name })) showSpeech(e, budget);
    speech.panel.dataset.state = 'done';
  } catch (err) {
    speech.error.textContent = describeError(err);
    speech.panel.dataset.state = 'error';
  } finally {
    speech.running = false;
    audio.end();
  }
}

async function startMicrophone(): Promise<void> {
  const rate = speech.model?.input.sample_rate;
  if (speech.running || !rate) return;
  let stream: MediaStream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  } catch (err) {
    speech.error.textContent = `no microphone: ${describeError(err)}`;
    return;
  }
  // The context resamples the microphone to the model's rate.
  const ctx = new AudioContext({ sampleRate: rate });
  const source = ctx.createMediaStreamSource(stream);
  // ScriptProcessor needs no separate worklet file; 4096 samples is 256 ms at 16 kHz.
  const processor = ctx.createScriptProcessor(4096, 1, 1);
  const audio = new AudioQueue();
  processor.onaudioprocess = (ev) => audio.push(new Float32Array(ev.inputBuffer.getChannelData(0)));
  source.connect(processor);
  processor.connect(ctx.destination);
  let stopped = false;
  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    audio.end();
    processor.disconnect();
    source.disconnect();
    stream.getTracks().forEach((t) => t.stop());
    void ctx.close();
    speech.start.disabled = false;
    speech.stop.disabled = true;
  };
  speech.stop.onclick = stop;
  speech.start.disabled = true;
  speech.stop.disabled = false;
  await runStream(audio, rate);
  stop();
}

/** Decodes any audio file the browser reads, resampled to the model's rate, channels averaged. */
async function decodeAudio(file: Blob, rate: number): Promise<Float32Array> {
  const bytes = await file.arrayBuffer();
  // A file already at this rate decodes to its own samples, exactly as the server reads it.
  const ctx = new AudioContext({ sampleRate: rate });
  let decoded: AudioBuffer;
  try {
    decoded = await ctx.decodeAudioData(bytes);
  } finally {
    void ctx.close();
  }
  if (decoded.numberOfChannels === 1) return decoded.getChannelData(0);
  const mono = new Float32Array(decoded.length);
  for (let c = 0; c < decoded.numberOfChannels; c++) {
    decoded.getChannelData(c).forEach((v, i) => { mono[i] = (mono[i] ?? 0) + v / decoded.numberOfChannels; });
  }
  return mono;
}

async function streamFile(file: Blob): Promise<void> {
  const rate = speech.model?.input.sample_rate;
  if (speech.running || !rate) return;
  let samples: Float32Array;
  try {
    samples = await decodeAudio(file, rate);
  } catch (err) {
    speech.error.textContent = `the browser cannot decode this audio file: ${describeError(err)}`;
    return;
  }
  const audio = new AudioQueue();
  const step = Math.round(rate * FILE_CHUNK_S);
  // Set before the feed starts: it stops as soon as the stream ends, successful or not.
  speech.running = true;
  const feed = (async () => {
    for (let i = 0; i < samples.length; i += step) {
      if (!speech.running) break;
      audio.push(samples.subarray(i, Math.min(samples.length, i + step)));
      await new Promise((r) => setTimeout(r, (FILE_CHUNK_S * 1000) / FILE_SPEEDUP));
    }
    audio.end();
  })();
  const streamed = runStream(audio, rate);
  await Promise.all([streamed, feed]);
}

function setupSpeech(models: ModelInfo[]): void {
  const model = models.find((m): m is SpeechModelInfo => m.task === 'speech-recognition');
  speech.budget.addEventListener('input', () => {
    speech.budgetValue.value = Number(speech.budget.value).toFixed(2);
  });
  if (!model) {
    speech.panel.dataset.disabled = 'true';
    el('speech-unavailable').hidden = false;
    for (const c of [speech.budget, speech.start, speech.stop, speech.file]) c.disabled = true;
    return;
  }
  speech.model = model;
  if (typeof model.default_budget === 'number') {
    speech.budget.value = String(model.default_budget);
    speech.budgetValue.value = model.default_budget.toFixed(2);
  }
  speech.start.addEventListener('click', () => void startMicrophone());
  speech.file.addEventListener('change', () => {
    const f = speech.file.files?.[0];
    if (f) void streamFile(f);
  });
}

async function main(): Promise<void> {
  drawLegend();
  const status = el('server-status');
  let models: ModelInfo[] = [];
  // A server that has just started lists its models once it begins loading them: wait a little.
  for (let attempt = 0; attempt < MODEL_LIST_ATTEMPTS; attempt++) {
    try {
      models = await client.models();
      if (models.length > 0) break;
      status.textContent = 'Waiting for the server to load its models…';
    } catch (err) {
      status.textContent = `The server did not list its models: ${describeError(err)}`;
    }
    await new Promise((r) => setTimeout(r, MODEL_LIST_RETRY_MS));
  }
  if (models.length > 0) status.textContent = `Serving ${models.map((m) => `${m.name} (${m.task})`).join(', ')}.`;
  setupImage(models);
  setupSpeech(models);
  document.body.dataset.ready = 'true';
}

void main();
