// The runtime contract the batcher relies on. One Backend serves one model; the batcher hands it
// whole batches and gets back one result per item, in order. Implementations: OrtBackend (ONNX
// sessions in worker threads) and, in tests, fakes that need no model.

export interface BatchItem {
  /**
   * The graph input of one item, laid out per ModelShape.input: normalised CHW pixels of one
   * image, or one audio window of a speech model.
   */
  readonly input: Float32Array;
  /** Requested budget in (0, 1]. */
  readonly budget: number;
}

export interface ItemResult {
  /** Logits, laid out per ModelShape.logits: [classes], or [frames, vocabulary] for speech. */
  readonly logits: Float32Array;
  /** Learners executed per ACM and token, row-major [acms][tokens]. */
  readonly learnerCounts: Int32Array;
}

export interface BackendInfo {
  /** Execution provider the sessions actually run on, for logs and /v1/models. */
  readonly provider: string;
  /** Worker threads serving this model. */
  readonly workers: number;
}

export interface Backend {
  /** Starts the runtime and checks the graph against the manifest; resolves once it can run. */
  start(): Promise<BackendInfo>;
  /**
   * Runs one batch. Resolves with results in item order, or rejects for the whole batch (an
   * AcmError for failures a client should see). Must never leave the promise unsettled.
   */
  run(items: readonly BatchItem[]): Promise<ItemResult[]>;
  /** Batches the runtime can execute at once; the batcher keeps at most this many in flight. */
  readonly concurrency: number;
  /** Stops the runtime; runs in flight are rejected. */
  close(): Promise<void>;
}

/** Shape facts about one model that a backend needs to pack and unpack tensors. */
export interface ModelShape {
  /** Dimensions of one item's input, batch excluded: [C, H, W] for images, [samples] for speech windows. */
  readonly input: readonly number[];
  /** Dimensions of one item's logits: [classes], or [frames, vocabulary]. */
  readonly logits: readonly number[];
  readonly acms: number;
  readonly tokens: number;
}

/** Values in one item of the given dimensions. */
export function sizeOf(dims: readonly number[]): number {
  return dims.reduce((p, d) => p * d, 1);
}
