/**
 * Options of createSegmenter() and segment(): types, documented defaults and
 * validation. Everything is checked here, before any native call, and copied
 * into plain objects so the native side never sees a user's object.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FoveaError } from './errors';
import { DEFAULT_LIMIT_INPUT_PIXELS } from './image';
import { packageRoot } from './native';

export type Mode = 'instances' | 'proposals';
export type DeviceSpec = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`;

/** A pipeline stage as reported to onProgress and in `timings`. */
export type Stage = 'decode' | 'pyramid' | 'trunk' | 'proposals' | 'refine' | 'paste' | 'classify' | 'postprocess';

export interface ProgressEvent {
  stage: Stage;
  /** Fraction of the stage done, in [0, 1]. */
  fraction: number;
}

/** Per-call options (also accepted by createSegmenter() as defaults for every call). */
export interface SegmentOptions {
  /**
   * 'instances' (default when the model has a classifier): classified objects.
   * 'proposals': class-agnostic object proposals with their objectness, as
   * DeepMask/SharpMask are evaluated (the default without a classifier).
   */
  mode?: Mode;
  /** Proposals taken from the dense score maps (top-k over all scales). Default 100. */
  maxProposals?: number;
  /** Instances returned at most. Default 100 (MultiPathNet's keep_top_k). */
  maxDetections?: number;
  /**
   * Minimum score kept: class probability in 'instances' mode, objectness in
   * 'proposals' mode. Default 0.5 (the MultiPathNet demo's -thr). `fovea eval`
   * uses 0.05 (instances) and 0 (proposals, as DeepMask's AR is measured).
   */
  scoreThreshold?: number;
  /**
   * IoU above which a lower-scored box of the same class is suppressed. Default
   * 0.3 in 'instances' mode (MultiPathNet), 0.5 in 'proposals' mode (DeepMask
   * itself has no NMS: its dense windows overlap heavily, which is what recall
   * evaluation wants and what a person looking at the result does not; `fovea
   * eval` turns it off). Values >= 1 disable NMS.
   */
  nmsThreshold?: number;
  /** Mask probability threshold. Default 0.2 (DeepMask/SharpMask). */
  maskThreshold?: number;
  /** Pyramid scales. Default: the model's (2^-2.5 … 2^0.5 for the released models). */
  scales?: number[];
  /**
   * Images whose longer side exceeds this are shrunk to it for the proposal
   * stage (masks are still returned at full resolution). Default 600, the
   * demo's -maxsize; 0 disables.
   */
  maxSide?: number;
  /** Cancels the call: it rejects with ERR_ABORTED and frees its memory. */
  signal?: AbortSignal;
  /** Stage progress; called on the main thread. Exceptions it throws are ignored. */
  onProgress?: (event: ProgressEvent) => void;
}

export interface SegmenterOptions extends Omit<SegmentOptions, 'signal' | 'onProgress'> {
  /**
   * Proposal model: a SharpMask or DeepMask .safetensors file. Default: the
   * embedded model in weights/.
   */
  model?: string;
  /**
   * Classifier: a MultiPathNet .safetensors file, or null for none. Default: the
   * embedded classifier when `model` is the default too, else none.
   */
  classifier?: string | null;
  /** 'auto' (default: CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'. */
  device?: DeviceSpec;
  /** Largest width*height decoded (sharp's limitInputPixels). Default 16383^2; false: no limit. */
  limitInputPixels?: number | false;
}

/** What the native run takes: every field set. */
export interface NativeRunOptions {
  mode: Mode;
  maxProposals: number;
  maxDetections: number;
  scoreThreshold: number;
  nmsThreshold: number;
  maskThreshold: number;
  scales?: number[];
  maxSide: number;
}

export interface ResolvedSegmenterOptions {
  model: string;
  classifier: string | null;
  device: DeviceSpec;
  limitInputPixels: number | false;
  defaults: Omit<SegmentOptions, 'signal' | 'onProgress'>;
}

export const DEFAULT_MODEL = path.join(packageRoot, 'weights', 'sharpmask.safetensors');
export const DEFAULT_CLASSIFIER = path.join(packageRoot, 'weights', 'multipathnet.safetensors');

const CALL_KEYS = [
  'mode',
  'maxProposals',
  'maxDetections',
  'scoreThreshold',
  'nmsThreshold',
  'maskThreshold',
  'scales',
  'maxSide',
] as const;
const SEGMENT_KEYS: ReadonlySet<string> = new Set([...CALL_KEYS, 'signal', 'onProgress']);
const SEGMENTER_KEYS: ReadonlySet<string> = new Set([...CALL_KEYS, 'model', 'classifier', 'device', 'limitInputPixels']);

function fail(message: string): never {
  throw new FoveaError('ERR_OPTIONS', message);
}

function checkObject(value: unknown, what: string, allowed: ReadonlySet<string>): Record<string, unknown> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(`${what} must be an object`);
  for (const key of Object.keys(value)) {
    if (!allowed.has(key)) fail(`${what}: unknown option '${key}' (known: ${[...allowed].join(', ')})`);
  }
  return value as Record<string, unknown>;
}

function integerIn(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(`${name} must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
  return value;
}

function numberIn(value: unknown, name: string, min: number, max: number, open = false): number {
  const ok = typeof value === 'number' && Number.isFinite(value) && (open ? value > min && value < max : value >= min && value <= max);
  if (!ok) fail(`${name} must be a number in ${open ? '(' : '['}${min}, ${max}${open ? ')' : ']'}, got ${String(value)}`);
  return value as number;
}

/** Validates the per-call fields present in `o` (shared by both option kinds). */
function callOptions(o: Record<string, unknown>): Omit<SegmentOptions, 'signal' | 'onProgress'> {
  const out: Omit<SegmentOptions, 'signal' | 'onProgress'> = {};
  if (o['mode'] !== undefined) {
    if (o['mode'] !== 'instances' && o['mode'] !== 'proposals') {
      fail(`mode must be 'instances' or 'proposals', got ${String(o['mode'])}`);
    }
    out.mode = o['mode'];
  }
  if (o['maxProposals'] !== undefined) out.maxProposals = integerIn(o['maxProposals'], 'maxProposals', 1, 100000);
  if (o['maxDetections'] !== undefined) out.maxDetections = integerIn(o['maxDetections'], 'maxDetections', 1, 100000);
  if (o['scoreThreshold'] !== undefined) out.scoreThreshold = numberIn(o['scoreThreshold'], 'scoreThreshold', 0, 1);
  if (o['nmsThreshold'] !== undefined) out.nmsThreshold = numberIn(o['nmsThreshold'], 'nmsThreshold', 0, 1);
  if (o['maskThreshold'] !== undefined) out.maskThreshold = numberIn(o['maskThreshold'], 'maskThreshold', 0, 1, true);
  if (o['maxSide'] !== undefined) out.maxSide = integerIn(o['maxSide'], 'maxSide', 0, 1 << 20);
  if (o['scales'] !== undefined) {
    const s = o['scales'];
    if (!Array.isArray(s) || s.length < 1 || s.length > 64) fail('scales must be an array of 1 to 64 numbers');
    out.scales = (s as unknown[]).map((v, i) => {
      if (typeof v !== 'number' || !(v > 0 && v <= 16)) fail(`scales[${i}] must be a number in (0, 16], got ${String(v)}`);
      return v;
    });
  }
  return out;
}

function checkDevice(value: unknown): DeviceSpec {
  if (typeof value !== 'string' || !/^(auto|cpu|cuda|cuda:(0|[1-9][0-9]{0,2}))$/.test(value)) {
    fail(`device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got ${String(value)}`);
  }
  return value as DeviceSpec;
}

function checkFile(value: unknown, name: string): string {
  if (typeof value !== 'string' || value.length === 0) fail(`${name} must be a path to a .safetensors file`);
  return path.resolve(value);
}

export function resolveSegmenterOptions(options: unknown): ResolvedSegmenterOptions {
  const o = checkObject(options, 'createSegmenter options', SEGMENTER_KEYS);
  const model = o['model'] === undefined ? DEFAULT_MODEL : checkFile(o['model'], 'model');
  let classifier: string | null;
  if (o['classifier'] === null) classifier = null;
  else if (o['classifier'] !== undefined) classifier = checkFile(o['classifier'], 'classifier');
  else classifier = o['model'] === undefined && fs.existsSync(DEFAULT_CLASSIFIER) ? DEFAULT_CLASSIFIER : null;
  const device = o['device'] === undefined ? 'auto' : checkDevice(o['device']);
  let limitInputPixels: number | false = DEFAULT_LIMIT_INPUT_PIXELS;
  if (o['limitInputPixels'] !== undefined) {
    const l = o['limitInputPixels'];
    if (l !== false && (typeof l !== 'number' || !Number.isSafeInteger(l) || l < 1)) {
      fail(`limitInputPixels must be a positive integer or false, got ${String(l)}`);
    }
    limitInputPixels = l as number | false;
  }
  const defaults = callOptions(o);
  if (defaults.mode === 'instances' && classifier === null) {
    fail("mode 'instances' needs a classifier: pass options.classifier (a MultiPathNet file) or use mode 'proposals'");
  }
  return { model, classifier, device, limitInputPixels, defaults };
}

export interface ResolvedCall {
  run: NativeRunOptions;
  signal?: AbortSignal;
  onProgress?: (event: ProgressEvent) => void;
}

/** Per-call options over the Segmenter's defaults, with the mode-dependent defaults filled in. */
export function resolveSegmentOptions(
  options: unknown,
  defaults: Omit<SegmentOptions, 'signal' | 'onProgress'>,
  hasClassifier: boolean,
): ResolvedCall {
  const o = checkObject(options, 'segment options', SEGMENT_KEYS);
  const c = { ...defaults, ...callOptions(o) };
  const mode: Mode = c.mode ?? (hasClassifier ? 'instances' : 'proposals');
  if (mode === 'instances' && !hasClassifier) {
    fail("mode 'instances' needs a classifier, and this Segmenter has none: use mode 'proposals' or createSegmenter({ classifier })");
  }
  const run: NativeRunOptions = {
    mode,
    maxProposals: c.maxProposals ?? 100,
    maxDetections: c.maxDetections ?? 100,
    scoreThreshold: c.scoreThreshold ?? 0.5,
    nmsThreshold: c.nmsThreshold ?? (mode === 'instances' ? 0.3 : 0.5),
    maskThreshold: c.maskThreshold ?? 0.2,
    maxSide: c.maxSide ?? 600,
  };
  if (c.scales) run.scales = [...c.scales];
  const out: ResolvedCall = { run };
  const signal = o['signal'];
  if (signal !== undefined) {
    if (!(signal instanceof AbortSignal)) fail('signal must be an AbortSignal');
    out.signal = signal;
  }
  const onProgress = o['onProgress'];
  if (onProgress !== undefined) {
    if (typeof onProgress !== 'function') fail('onProgress must be a function');
    out.onProgress = onProgress as (event: ProgressEvent) => void;
  }
  return out;
}
