/**
 * segment(), createSegmenter() and the Segmenter: decoding with sharp, a
 * FIFO queue in front of the native pipeline (one run at a time per
 * Segmenter: a run already uses every core), cancellation, progress,
 * streaming in input order.
 */
import * as fs from 'node:fs';
import { Transform } from 'node:stream';
import { FoveaError, toFoveaError } from './errors';
import { decodeImage, type ImageInput } from './image';
import { native } from './native';
import {
  DEFAULT_MODEL,
  resolveSegmenterOptions,
  resolveSegmentOptions,
  type NativeRunOptions,
  type ProgressEvent,
  type ResolvedSegmenterOptions,
  type SegmenterOptions,
  type SegmentOptions,
  type Stage,
} from './options';
import type { Rle } from './rle';

export interface Instance {
  /** Class name ('object' in proposals mode). */
  label: string;
  /** COCO category id (1 in proposals mode). */
  categoryId: number;
  /** Class probability (instances) or objectness (proposals). */
  score: number;
  /** Objectness of the proposal the instance came from. */
  objectness: number;
  /** [x, y, width, height] in image pixels. */
  box: [number, number, number, number];
  /** Full-image mask, COCO RLE (pycocotools' compressed string). */
  mask: Rle;
  /** Mask pixels. */
  area: number;
}

export type Timings = Partial<Record<Stage, number>> & { total: number };

export interface SegmentResult {
  width: number;
  height: number;
  instances: Instance[];
  /** The device that ran the models ('cpu', 'cuda:0'). */
  device: string;
  /** Milliseconds per stage, and in total (queue wait excluded). */
  timings: Timings;
}

export interface StreamOptions extends Omit<SegmentOptions, 'onProgress'> {
  /** Images decoded and queued ahead of the one being yielded. Default 2. */
  concurrency?: number;
  /**
   * Called for an input that fails (in input order); the stream then goes on.
   * Without it, the first failure ends the stream with its error.
   */
  onError?: (error: FoveaError, index: number) => void;
}

interface NativeResult {
  width: number;
  height: number;
  device: string;
  timings: Record<string, number>;
  instances: Array<{
    label: string;
    categoryId: number;
    score: number;
    objectness: number;
    box: [number, number, number, number];
    counts: string;
    area: number;
  }>;
}

interface NativeSegmenter {
  run(
    pixels: Uint8Array,
    width: number,
    height: number,
    options: NativeRunOptions,
    onProgress?: (stage: string, fraction: number) => void,
  ): { promise: Promise<NativeResult>; cancel(): void };
  describe(): { hasClassifier: boolean; classNames: string[]; scales: number[]; device: string };
  close(): void;
}

interface PipelineBinding {
  loadPipeline(proposals: string, classifier: string, device: string): Promise<NativeSegmenter>;
}

function aborted(signal: AbortSignal): FoveaError {
  const reason = signal.reason instanceof Error ? `: ${signal.reason.message}` : '';
  return new FoveaError('ERR_ABORTED', `segment() was aborted${reason}`);
}

/** FIFO admission with a fixed number of slots; waiting callers can be aborted. */
class Slots {
  private free: number;
  private readonly waiters: Array<{ grant: () => void }> = [];

  constructor(slots: number) {
    this.free = slots;
  }

  async acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) throw aborted(signal);
    if (this.free > 0) {
      this.free--;
      return this.releaser();
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(this.releaser());
        },
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(aborted(signal as AbortSignal));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiters.shift();
      if (next) next.grant();
      else this.free++;
    };
  }
}

// The pipeline reports stage names it owns; anything else is a bug.
function asStage(stage: string): Stage {
  return stage as Stage;
}

export class Segmenter {
  /** Calls admitted past decoding: bounds the decoded images held in memory. */
  private readonly admission = new Slots(2);
  /** The native pipeline runs one image at a time. */
  private readonly runner = new Slots(1);
  private readonly inFlight = new Set<Promise<unknown>>();
  private closed = false;

  private constructor(
    private readonly pipeline: NativeSegmenter,
    private readonly options: ResolvedSegmenterOptions,
    /** Class names of the classifier (index 0 = background); empty without one. */
    readonly classNames: readonly string[],
    /** Whether 'instances' mode is available. */
    readonly hasClassifier: boolean,
    /** The device the models run on. */
    readonly device: string,
  ) {}

  /** Loads the models (in a worker thread) and returns a ready Segmenter. */
  static async create(options: SegmenterOptions = {}): Promise<Segmenter> {
    const resolved = resolveSegmenterOptions(options);
    // 'auto': the first CUDA device this binary has kernels for (cuda_status() probes once
    // per process), else the CPU. result.device says which ran.
    const device = resolved.device === 'auto' ? autoDevice() : resolved.device;
    if (resolved.model === DEFAULT_MODEL && !fs.existsSync(DEFAULT_MODEL)) {
      throw new FoveaError(
        'ERR_WEIGHTS',
        `the embedded default model ${DEFAULT_MODEL} is missing from this install; pass options.model (a SharpMask or DeepMask .safetensors file)`,
      );
    }
    const binding = native() as unknown as PipelineBinding;
    let pipeline: NativeSegmenter;
    try {
      pipeline = await binding.loadPipeline(resolved.model, resolved.classifier ?? '', device);
    } catch (err) {
      throw toFoveaError(err);
    }
    const d = pipeline.describe();
    return new Segmenter(pipeline, resolved, d.classNames, d.hasClassifier, d.device);
  }

  /** Segments one image. Calls on one Segmenter are queued and run in order. */
  segment(input: ImageInput, options?: SegmentOptions): Promise<SegmentResult> {
    const work = this.run(input, options);
    this.inFlight.add(work);
    const forget = () => this.inFlight.delete(work);
    work.then(forget, forget);
    return work;
  }

  private async run(input: ImageInput, options?: SegmentOptions): Promise<SegmentResult> {
    if (this.closed) throw new FoveaError('ERR_OPTIONS', 'this Segmenter is closed');
    const call = resolveSegmentOptions(options, this.options.defaults, this.hasClassifier);
    const { signal } = call;
    const report = (event: ProgressEvent) => {
      try {
        call.onProgress?.(event);
      } catch {
        // A failing progress callback must not fail the segmentation.
      }
    };
    const releaseAdmission = await this.admission.acquire(signal);
    try {
      const start = performance.now();
      const image = await decodeImage(input, { limitInputPixels: this.options.limitInputPixels });
      // The native side reads the pixels from a worker thread: give it a copy
      // the caller cannot modify meanwhile (decodeImage passes raw RGB through).
      const pixels = typeof input === 'object' && 'channels' in input ? image.data.slice() : image.data;
      const decodeMs = performance.now() - start;
      report({ stage: 'decode', fraction: 1 });
      if (signal?.aborted) throw aborted(signal);
      const releaseRunner = await this.runner.acquire(signal);
      try {
        const runStart = performance.now();
        const job = this.pipeline.run(pixels, image.width, image.height, call.run, (stage, fraction) =>
          report({ stage: asStage(stage), fraction }),
        );
        const onAbort = () => job.cancel();
        signal?.addEventListener('abort', onAbort, { once: true });
        let result: NativeResult;
        try {
          result = await job.promise;
        } catch (err) {
          const e = toFoveaError(err);
          throw e.code === 'ERR_ABORTED' && signal?.aborted ? aborted(signal) : e;
        } finally {
          signal?.removeEventListener('abort', onAbort);
        }
        return toResult(result, decodeMs, performance.now() - runStart);
      } finally {
        releaseRunner();
      }
    } finally {
      releaseAdmission();
    }
  }

  /**
   * Segments every input of an (async) iterable and yields the results in
   * input order, with up to `concurrency` images decoded and queued ahead.
   * Inputs are pulled only as results are consumed (backpressure). Leaving the
   * loop early aborts the calls still in flight.
   */
  async *stream(
    inputs: Iterable<ImageInput> | AsyncIterable<ImageInput>,
    options: StreamOptions = {},
  ): AsyncGenerator<SegmentResult, void, undefined> {
    const { concurrency = 2, onError, signal, ...rest } = options;
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) {
      throw new FoveaError('ERR_OPTIONS', `concurrency must be an integer in [1, 64], got ${String(concurrency)}`);
    }
    if (onError !== undefined && typeof onError !== 'function') {
      throw new FoveaError('ERR_OPTIONS', 'onError must be a function');
    }
    const controller = new AbortController();
    const onOuterAbort = () => controller.abort(signal?.reason);
    if (signal?.aborted) onOuterAbort();
    signal?.addEventListener('abort', onOuterAbort, { once: true });
    const iterator =
      Symbol.asyncIterator in inputs
        ? (inputs as AsyncIterable<ImageInput>)[Symbol.asyncIterator]()
        : (inputs as Iterable<ImageInput>)[Symbol.iterator]();
    type Settled = { ok: true; value: SegmentResult } | { ok: false; error: FoveaError };
    const pending: Array<Promise<Settled>> = [];
    let exhausted = false;
    let index = 0;
    try {
      for (;;) {
        while (!exhausted && pending.length < concurrency) {
          const next = await iterator.next();
          if (next.done) {
            exhausted = true;
            break;
          }
          pending.push(
            this.segment(next.value, { ...rest, signal: controller.signal }).then(
              (value): Settled => ({ ok: true, value }),
              (error: unknown): Settled => ({ ok: false, error: toFoveaError(error) }),
            ),
          );
        }
        const head = pending.shift();
        if (!head) return;
        const settled = await head;
        if (settled.ok) yield settled.value;
        else if (onError) onError(settled.error, index);
        else throw settled.error;
        index++;
      }
    } finally {
      signal?.removeEventListener('abort', onOuterAbort);
      if (pending.length > 0) {
        controller.abort();
        await Promise.all(pending);
      }
      if (!exhausted) await iterator.return?.();
    }
  }

  /**
   * An object-mode Transform: write images (any ImageInput), read
   * SegmentResults in the same order. A failing image destroys the stream with
   * its error.
   */
  createStream(options: Omit<StreamOptions, 'onError'> = {}): Transform {
    const { concurrency = 2, ...rest } = options;
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) {
      throw new FoveaError('ERR_OPTIONS', `concurrency must be an integer in [1, 64], got ${String(concurrency)}`);
    }
    const pending: Array<Promise<SegmentResult>> = [];
    const segmenter = this;
    const emitHead = async (stream: Transform) => {
      const head = pending.shift() as Promise<SegmentResult>;
      stream.push(await head);
    };
    return new Transform({
      objectMode: true,
      transform(chunk: ImageInput, _encoding, callback) {
        const work = segmenter.segment(chunk, rest);
        // Rejections are handled when the result reaches the head of the line.
        work.catch(() => undefined);
        pending.push(work);
        if (pending.length < concurrency) callback();
        else emitHead(this).then(() => callback(), callback);
      },
      flush(callback) {
        const drain = async () => {
          while (pending.length > 0) await emitHead(this);
        };
        drain().then(() => callback(), callback);
      },
    });
  }

  /** Waits for the calls in flight, then releases the models. Later calls fail with ERR_OPTIONS. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.inFlight]);
    this.pipeline.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function toResult(r: NativeResult, decodeMs: number, runMs: number): SegmentResult {
  const timings: Timings = { decode: decodeMs, total: decodeMs + runMs };
  for (const [stage, ms] of Object.entries(r.timings)) timings[asStage(stage)] = ms;
  return {
    width: r.width,
    height: r.height,
    device: r.device,
    timings,
    instances: r.instances.map((i) => ({
      label: i.label,
      categoryId: i.categoryId,
      score: i.score,
      objectness: i.objectness,
      box: i.box,
      mask: { size: [r.height, r.width], counts: i.counts },
      area: i.area,
    })),
  };
}

function autoDevice(): string {
  const cuda = native().info().cuda;
  const usable = cuda.available ? cuda.devices.find((d) => d.supported) : undefined;
  return usable ? `cuda:${usable.index}` : 'cpu';
}

/** Loads the models and returns a Segmenter; see SegmenterOptions for the defaults. */
export function createSegmenter(options: SegmenterOptions = {}): Promise<Segmenter> {
  return Segmenter.create(options);
}

const SEGMENTER_ONLY_KEYS = ['model', 'classifier', 'device', 'limitInputPixels'] as const;
const shared = new Map<string, Promise<Segmenter>>();

/**
 * One-shot segmentation. Segmenters are cached per (model, classifier,
 * device, limitInputPixels), so repeated calls load the weights once.
 */
export async function segment(input: ImageInput, options: SegmenterOptions & SegmentOptions = {}): Promise<SegmentResult> {
  if (typeof options !== 'object' || options === null) throw new FoveaError('ERR_OPTIONS', 'options must be an object');
  const segmenterOptions: Record<string, unknown> = {};
  const callOptions: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(options)) {
    if ((SEGMENTER_ONLY_KEYS as readonly string[]).includes(key)) segmenterOptions[key] = value;
    else callOptions[key] = value;
  }
  const key = JSON.stringify(SEGMENTER_ONLY_KEYS.map((k) => segmenterOptions[k] ?? null));
  let seg = shared.get(key);
  if (!seg) {
    seg = createSegmenter(segmenterOptions as SegmenterOptions);
    shared.set(key, seg);
    // A failed load is not cached: the next call retries (e.g. after a fix to the file).
    seg.catch(() => shared.delete(key));
  }
  return (await seg).segment(input, callOptions as SegmentOptions);
}
