/**
 * ONNX export of fovea's models: the same graph and the same weights as the
 * native runtime (native/models/*.cc, whose semantics are those of the PyTorch
 * reference in tools/reference/), written as an opset-17 ModelProto with the
 * onnx-proto protobuf classes, for onnxruntime or any other ONNX runtime.
 *
 * The runtime is split into parts that each become one ONNX model, because the
 * steps between them (top-k proposal selection, the SharpMask window gather,
 * pasting and NMS) are data-dependent host code, not network layers:
 *
 * | part                 | inputs                                       | outputs |
 * |----------------------|----------------------------------------------|---------|
 * | `deepmask-dense`     | `image` [N,3,H,W] (padded, normalised)       | `score_logits` [N,1,gh,gw], `embedding` [N,D,gh,gw] |
 * | `deepmask-mask-head` | `embedding` [K,D]                            | `mask_logits` [K,oSz,oSz] |
 * | `sharpmask-h`        | `image` [N,3,H,W]                            | `h1`..`h4`: the horizontal nets on the whole tap maps |
 * | `sharpmask-dense`    | `image` [N,3,H,W]                            | `score_logits`, `embedding`, `h1`..`h4` (one trunk pass) |
 * | `sharpmask-refine`   | `embedding` [K,D], `h1`..`h4` windows        | `mask_logits` [K,16·fSz,16·fSz] |
 * | `multipathnet`       | `image` [N,3,H,W], `rois` [K,5]              | `cls_prob` [K,C], `bbox_deltas` [K,4C] |
 *
 * `gh = L3(H) − fSz + 1` with `L3(n) = ⌈⌈⌈⌈n/2⌉/2⌉/2⌉/2⌉`; the `h_i` windows of
 * `sharpmask-refine` are `[K, k_i/2, fSz·2^(i−1), fSz·2^(i−1)]` with
 * `k_i = km/2^(i−1)`, cut from the `h_i` maps at `(r·2^(i−1), c·2^(i−1))` for
 * grid cell (r, c) and zero-filled past the map's edge. `rois` rows are
 * `(batch index, x1, y1, x2, y2)`, 0-based, in input pixels.
 *
 * Exactness: every layer is the runtime's, in fp32. SymPad(1) is Pad 'edge';
 * SymPad(p > 1) is built from reversed Slices and a Concat, which copy values
 * exactly. MultiPathNet's ROI pooling is imagine-nn v2 (see roiPool below): the
 * bin edges are computed with the kernel's float32 arithmetic and C rounding,
 * and each bin's max is taken by a one-bin MaxRoiPool over exactly that integer
 * rectangle. What the graph does not do is validate its inputs (the runtime
 * rejects non-finite ROI coordinates, for example; here a ROI batch index
 * outside the image batch fails in MaxRoiPool).
 *
 * onnxruntime: every part runs on the CPU execution provider at every graph
 * optimisation level, with one exception: `multipathnet` with K = 0 ROIs needs
 * a level below 'all' (ORT's NCHWc layout pass inserts a Reshape that cannot
 * take the empty batch in layer4); callers normally skip an empty batch anyway.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { onnx } from 'onnx-proto';
import { FoveaError } from './errors';
import { version } from './info';
import { CONFIG_METADATA_KEY, readSafetensors, type SafetensorsFile } from './safetensors';

export const ONNX_PARTS = [
  'deepmask-dense',
  'deepmask-mask-head',
  'sharpmask-h',
  'sharpmask-dense',
  'sharpmask-refine',
  'multipathnet',
] as const;

export type OnnxPart = (typeof ONNX_PARTS)[number];

export interface OnnxExportOptions {
  /** Which part of the model to export (see the table at the top of this file). */
  readonly part: OnnxPart;
}

export const ONNX_OPSET = 17;
/** The IR version that goes with opset 17. */
const ONNX_IR_VERSION = 8;

/** Builds the ONNX model of one part of the fovea model at `modelPath` (a .safetensors file). */
export function exportOnnx(modelPath: string, options: OnnxExportOptions): Uint8Array {
  const part = checkOptions(modelPath, options);
  const weights = ModelWeights.read(modelPath);
  const g = new GraphBuilder(weights);
  BUILDERS[part](g);
  return g.encode(part);
}

/** exportOnnx() written to `outPath`; returns the number of bytes written. */
export function exportOnnxFile(modelPath: string, outPath: string, options: OnnxExportOptions): number {
  if (typeof outPath !== 'string' || outPath === '') {
    throw new FoveaError('ERR_OPTIONS', 'exportOnnxFile: outPath must be a non-empty string');
  }
  const bytes = exportOnnx(modelPath, options);
  try {
    fs.writeFileSync(outPath, bytes);
  } catch (err) {
    throw new FoveaError('ERR_OPTIONS', `exportOnnxFile: cannot write ${outPath}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return bytes.length;
}

function checkOptions(modelPath: unknown, options: unknown): OnnxPart {
  if (typeof modelPath !== 'string' || modelPath === '') {
    throw new FoveaError('ERR_OPTIONS', 'exportOnnx: modelPath must be a non-empty string');
  }
  const part = (options as { part?: unknown } | null | undefined)?.part;
  if (typeof part !== 'string' || !(ONNX_PARTS as readonly string[]).includes(part)) {
    throw new FoveaError(
      'ERR_OPTIONS',
      `exportOnnx: options.part must be one of ${ONNX_PARTS.join(', ')}, got ${JSON.stringify(part)}`,
    );
  }
  return part as OnnxPart;
}

// ---------------------------------------------------------------------------
// The weights file: tensors checked on use, config values checked on read.

function weightsError(message: string): FoveaError {
  return new FoveaError('ERR_WEIGHTS', message);
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

class ModelWeights {
  private constructor(
    readonly path: string,
    private readonly file: SafetensorsFile,
    private readonly config: Record<string, Json>,
  ) {}

  static read(path: string): ModelWeights {
    let bytes: Uint8Array;
    try {
      bytes = fs.readFileSync(path);
    } catch (err) {
      throw new FoveaError('ERR_WEIGHTS', `cannot read the model ${path}: ${(err as Error).message}`, { cause: err });
    }
    const file = readSafetensors(bytes);
    const text = file.metadata[CONFIG_METADATA_KEY];
    if (text === undefined) throw weightsError(`${path}: no "${CONFIG_METADATA_KEY}" in the metadata: not a fovea model`);
    let config: unknown;
    try {
      config = JSON.parse(text);
    } catch {
      throw weightsError(`${path}: "${CONFIG_METADATA_KEY}" is not valid JSON`);
    }
    if (typeof config !== 'object' || config === null || Array.isArray(config)) {
      throw weightsError(`${path}: "${CONFIG_METADATA_KEY}" is not a JSON object`);
    }
    return new ModelWeights(path, file, config as Record<string, Json>);
  }

  get configJson(): string {
    return JSON.stringify(this.config);
  }

  private configError(key: string, what: string): FoveaError {
    return weightsError(`${this.path}: fovea.config "${key}" ${what}`);
  }

  private value(key: string): Json {
    const v = this.config[key];
    if (v === undefined) throw this.configError(key, 'is missing');
    return v;
  }

  string(key: string, allowed?: readonly string[]): string {
    const v = this.value(key);
    if (typeof v !== 'string') throw this.configError(key, 'is not a string');
    if (allowed && !allowed.includes(v)) {
      throw this.configError(key, `is ${JSON.stringify(v)}; the ONNX export supports ${allowed.join(', ')}`);
    }
    return v;
  }

  integer(key: string, lo = 1, hi = 1 << 20): number {
    const v = this.value(key);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
      throw this.configError(key, `must be an integer in [${lo}, ${hi}], got ${JSON.stringify(v)}`);
    }
    return v;
  }

  integers(key: string, count: number): number[] {
    const v = this.value(key);
    if (!Array.isArray(v) || v.length !== count || !v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 1)) {
      throw this.configError(key, `must be ${count} positive integers, got ${JSON.stringify(v)}`);
    }
    return v as number[];
  }

  /** The JSON text of a config value, for comparing structured values. */
  json(key: string): string {
    return JSON.stringify(this.value(key));
  }

  positive(key: string): number {
    const v = this.value(key);
    if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(Math.fround(v))) {
      throw this.configError(key, `must be a finite number > 0, got ${JSON.stringify(v)}`);
    }
    return v;
  }

  /** Throws unless the file is one of `architectures` (what a part reads). */
  expectArchitecture(part: OnnxPart, architectures: readonly string[]): void {
    const arch = this.config['architecture'];
    if (typeof arch !== 'string' || !architectures.includes(arch)) {
      throw weightsError(
        `${this.path}: architecture ${JSON.stringify(arch)}: the ONNX part "${part}" needs a ${architectures.join(' or ')} model`,
      );
    }
  }

  has(name: string): boolean {
    return this.file.tensors.has(name);
  }

  /**
   * The tensor `name` as float32 bytes (F16/BF16/F64 files are converted, as the
   * native loader does), whose shape must match `shape` (null = any size).
   */
  tensor(name: string, shape: readonly (number | null)[]): Float32Bytes {
    const t = this.file.tensors.get(name);
    const want = `[${shape.map((d) => (d === null ? '*' : String(d))).join(', ')}]`;
    if (!t) throw weightsError(`${this.path}: missing tensor "${name}" (shape ${want})`);
    if (!FLOAT_DTYPES.has(t.dtype)) throw weightsError(`${this.path}: tensor "${name}" is ${t.dtype}, expected a float dtype`);
    if (t.shape.length !== shape.length || shape.some((d, i) => d !== null && d !== t.shape[i])) {
      throw weightsError(`${this.path}: tensor "${name}" has shape [${t.shape.join(', ')}], expected ${want}`);
    }
    if (t.dtype === 'F32') return t;
    const f = t.toFloat32();
    return { name: t.name, shape: t.shape, bytes: new Uint8Array(f.buffer, f.byteOffset, f.byteLength) };
  }
}

/** A weight as little-endian float32 bytes, what an ONNX FLOAT initializer holds. */
interface Float32Bytes {
  readonly name: string;
  readonly shape: readonly number[];
  readonly bytes: Uint8Array;
}

const FLOAT_DTYPES: ReadonlySet<string> = new Set(['F32', 'F16', 'BF16', 'F64']);

// ---------------------------------------------------------------------------
// Graph builder: nodes, initializers and SSA value names.

type Attr =
  | { readonly int: number }
  | { readonly float: number }
  | { readonly ints: readonly number[] }
  | { readonly str: string };
type Attrs = Readonly<Record<string, Attr>>;

const int = (v: number): Attr => ({ int: v });
const float = (v: number): Attr => ({ float: v });
const ints = (...v: number[]): Attr => ({ ints: v });
const str = (v: string): Attr => ({ str: v });

const { FLOAT, INT64 } = onnx.TensorProto.DataType;
type Dim = number | string;

/** A feature map (NCHW) and its channel count, which every layer checks its weights against. */
interface Feature {
  readonly v: string;
  readonly c: number;
}

function attribute(name: string, a: Attr): onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if ('int' in a) return { name, type: T.INT, i: a.int };
  if ('float' in a) return { name, type: T.FLOAT, f: a.float };
  if ('ints' in a) return { name, type: T.INTS, ints: [...a.ints] };
  return { name, type: T.STRING, s: new TextEncoder().encode(a.str) };
}

function valueInfo(name: string, dims: readonly Dim[], elemType: number = FLOAT): onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function bytesOf(a: Float32Array | BigInt64Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

class GraphBuilder {
  private readonly nodes: onnx.INodeProto[] = [];
  private readonly initializers: onnx.ITensorProto[] = [];
  private readonly inputs: onnx.IValueInfoProto[] = [];
  private readonly outputs: onnx.IValueInfoProto[] = [];
  private readonly names = new Set<string>();
  private readonly params = new Map<string, string>();

  constructor(readonly weights: ModelWeights) {}

  /** A value name not used before, derived from `hint` (ONNX values are assigned once). */
  private fresh(hint: string): string {
    let name = hint;
    for (let i = 2; this.names.has(name); i++) name = `${hint}_${i}`;
    this.names.add(name);
    return name;
  }

  input(name: string, dims: readonly Dim[]): string {
    this.names.add(name);
    this.inputs.push(valueInfo(name, dims));
    return name;
  }

  /** Declares `value` a graph output called `name` (through an Identity when it has another name). */
  output(value: string, name: string, dims: readonly Dim[]): void {
    if (value !== name) {
      this.names.add(name);
      this.nodes.push({ opType: 'Identity', name, input: [value], output: [name] });
    }
    this.outputs.push(valueInfo(name, dims));
  }

  /** One node with one output; `hint` (a module path) names the node and its output. */
  op(opType: string, inputs: readonly string[], attrs: Attrs = {}, hint = opType): string {
    const out = this.fresh(`${hint}/${opType}`);
    this.nodes.push({
      opType,
      name: out,
      input: [...inputs],
      output: [out],
      attribute: Object.entries(attrs).map(([k, a]) => attribute(k, a)),
    });
    return out;
  }

  private initializer(name: string, dims: readonly number[], dataType: number, rawData: Uint8Array): string {
    this.initializers.push({ name, dims: [...dims], dataType, rawData });
    return name;
  }

  /**
   * A stored tensor as an initializer named after it; with other `dims` (a
   * Linear applied as a 1x1 conv, a [C] affine broadcast over [C,1,1]) under
   * a derived name. F32 bytes are the file's own, not a copy.
   */
  param(t: Float32Bytes, dims: readonly number[] = t.shape): string {
    const name = dims.join() === t.shape.join() ? t.name : `${t.name}[${dims.join('x')}]`;
    const known = this.params.get(name);
    if (known !== undefined) return known;
    this.names.add(name);
    this.params.set(name, name);
    return this.initializer(name, dims, FLOAT, t.bytes);
  }

  /** Several stored [rows, n] tensors stacked along the rows into one initializer `name`. */
  stacked(name: string, tensors: readonly Float32Bytes[], dims: readonly number[]): string {
    const data = new Uint8Array(tensors.reduce((n, t) => n + t.bytes.length, 0));
    let at = 0;
    for (const t of tensors) {
      data.set(t.bytes, at);
      at += t.bytes.length;
    }
    this.names.add(name);
    return this.initializer(name, dims, FLOAT, data);
  }

  /** A small constant (shapes, pads, scalars), shared by every node that needs the same one. */
  constant(values: readonly (number | bigint)[], type: 'i64' | 'f32', dims: readonly number[] = [values.length]): string {
    const key = `const.${type}[${dims.join('x')}]{${values.join(',')}}`;
    const known = this.params.get(key);
    if (known !== undefined) return known;
    const name = this.fresh(key);
    const raw =
      type === 'i64'
        ? bytesOf(BigInt64Array.from(values, (v) => BigInt(v)))
        : bytesOf(Float32Array.from(values, (v) => Number(v)));
    this.params.set(key, name);
    return this.initializer(name, dims, type === 'i64' ? INT64 : FLOAT, raw);
  }

  encode(part: OnnxPart): Uint8Array {
    const model: onnx.IModelProto = {
      irVersion: ONNX_IR_VERSION,
      opsetImport: [{ domain: '', version: ONNX_OPSET }],
      producerName: 'fovea',
      producerVersion: version(),
      docString: `fovea ${part} of ${path.basename(this.weights.path)}`,
      graph: {
        name: `fovea-${part}`,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
      },
      metadataProps: [
        { key: 'fovea.part', value: part },
        { key: CONFIG_METADATA_KEY, value: this.weights.configJson },
      ],
    };
    return onnx.ModelProto.encode(model).finish();
  }
}

// ---------------------------------------------------------------------------
// Layers. Each reads its tensors under the module path `name` (NAMING.md) and
// checks them against the channels of its input.

type PadMode = 'zero' | 'symmetric';

interface ConvOptions {
  readonly stride?: number;
  readonly pad?: number;
  readonly padMode?: PadMode;
  readonly relu?: boolean;
}

const INT64_MIN = -(2n ** 63n);

/**
 * SymPad(p): numpy 'symmetric' padding (c b a | a b c d ...), the released
 * DeepMask's nn.SpatialSymmetricPadding. For p = 1 it is Pad 'edge'. For p > 1
 * ONNX has no such mode ('reflect' leaves the edge out), so each spatial axis
 * gets its first p and last p entries reversed (Slice with step −1) and
 * concatenated around it: only copies, so the result is exact.
 */
function symPad(g: GraphBuilder, x: string, p: number, hint: string): string {
  if (p === 0) return x;
  const c = (...v: (number | bigint)[]): string => g.constant(v, 'i64');
  if (p === 1) return g.op('Pad', [x, c(0, 0, 1, 1, 0, 0, 1, 1)], { mode: str('edge') }, hint);
  let y = x;
  for (const axis of [2, 3]) {
    const head = g.op('Slice', [y, c(p - 1), c(INT64_MIN), c(axis), c(-1)], {}, hint); // x[p-1 .. 0]
    const tail = g.op('Slice', [y, c(-1), c(-(p + 1)), c(axis), c(-1)], {}, hint); // x[n-1 .. n-p]
    y = g.op('Concat', [head, y, tail], { axis: int(axis) }, hint);
  }
  return y;
}

/** Conv k×k with bias (zero or symmetric padding), optionally followed by ReLU. */
function conv(g: GraphBuilder, x: Feature, name: string, k: number, o: ConvOptions = {}): Feature {
  const { stride = 1, pad = 0, padMode = 'zero', relu = false } = o;
  const w = g.weights.tensor(`${name}.weight`, [null, x.c, k, k]);
  const cout = w.shape[0]!;
  const b = g.weights.tensor(`${name}.bias`, [cout]);
  const input = padMode === 'symmetric' ? symPad(g, x.v, pad, name) : x.v;
  const zp = padMode === 'zero' ? pad : 0;
  let y = g.op(
    'Conv',
    [input, g.param(w), g.param(b)],
    { kernel_shape: ints(k, k), strides: ints(stride, stride), pads: ints(zp, zp, zp, zp) },
    name,
  );
  if (relu) y = g.op('Relu', [y], {}, name);
  return { v: y, c: cout };
}

/** A Linear [out, in] applied at every location of a map: a 1×1 conv (NAMING rule 4). */
function linearMap(g: GraphBuilder, x: Feature, name: string, relu = false): Feature {
  const w = g.weights.tensor(`${name}.weight`, [null, x.c]);
  const out = w.shape[0]!;
  const b = g.weights.tensor(`${name}.bias`, [out]);
  let y = g.op('Conv', [x.v, g.param(w, [out, x.c, 1, 1]), g.param(b)], { kernel_shape: ints(1, 1) }, name);
  if (relu) y = g.op('Relu', [y], {}, name);
  return { v: y, c: out };
}

/**
 * Linear layers on rows [K, in] → [K, Σ out]. Several layers that read the same
 * input (MultiPathNet's integral heads) are stacked into one Gemm.
 */
function linear(g: GraphBuilder, x: Feature, names: readonly string[]): Feature {
  const ws = names.map((n) => g.weights.tensor(`${n}.weight`, [null, x.c]));
  const bs = names.map((n, i) => g.weights.tensor(`${n}.bias`, [ws[i]!.shape[0]!]));
  const out = ws.reduce((n, w) => n + w.shape[0]!, 0);
  const [w, b] =
    names.length === 1
      ? [g.param(ws[0]!), g.param(bs[0]!)]
      : [g.stacked(`${names.join('+')}.weight`, ws, [out, x.c]), g.stacked(`${names.join('+')}.bias`, bs, [out])];
  return { v: g.op('Gemm', [x.v, w, b], { transB: int(1) }, names.join('+')), c: out };
}

/** `a + b`, optionally ReLU'd; the channels must agree (else the weights do not fit together). */
function add(g: GraphBuilder, a: Feature, b: Feature, hint: string, relu = false): Feature {
  if (a.c !== b.c) throw weightsError(`${g.weights.path}: ${hint}: sum of ${a.c} and ${b.c} channels`);
  const y = g.op('Add', [a.v, b.v], {}, hint);
  return { v: relu ? g.op('Relu', [y], {}, hint) : y, c: a.c };
}

function reshape(g: GraphBuilder, x: string, shape: readonly number[], hint: string): string {
  return g.op('Reshape', [x, g.constant(shape, 'i64')], {}, hint);
}

// ---------------------------------------------------------------------------
// ResNet trunks (tools/reference/resnet.py)

interface ResNetSpec {
  /** resnet50: 1×1, 3×3 (with the stride), 1×1; resnet18: 3×3 (with the stride), 3×3. */
  readonly bottleneck: boolean;
  readonly padMode: PadMode;
  /** Released ResNet-50 DeepMask: ReLU(post_affine(main + x)) after identity-shortcut sums. */
  readonly postAdd: boolean;
}

function resnetBlock(g: GraphBuilder, x: Feature, p: string, stride: number, s: ResNetSpec): Feature {
  const k3 = { pad: 1, padMode: s.padMode };
  let m: Feature;
  if (s.bottleneck) {
    m = conv(g, x, `${p}.conv1`, 1, { relu: true });
    m = conv(g, m, `${p}.conv2`, 3, { ...k3, stride, relu: true });
    m = conv(g, m, `${p}.conv3`, 1);
  } else {
    m = conv(g, x, `${p}.conv1`, 3, { ...k3, stride, relu: true });
    m = conv(g, m, `${p}.conv2`, 3, k3);
  }
  // Projection shortcut exactly where the shape changes; its affine, and a
  // post-add affine, are folded into the convs.
  if (x.c !== m.c || stride !== 1) return add(g, m, conv(g, x, `${p}.downsample`, 1, { stride }), p, true);
  const sum = add(g, m, x, p);
  if (!s.postAdd) return { v: g.op('Relu', [sum.v], {}, p), c: sum.c };
  // ReLU(scale·(main + x) + bias): the one affine that cannot be folded.
  const scale = g.weights.tensor(`${p}.post_affine.scale`, [sum.c]);
  const bias = g.weights.tensor(`${p}.post_affine.bias`, [sum.c]);
  const y = g.op('Mul', [sum.v, g.param(scale, [sum.c, 1, 1])], {}, `${p}.post_affine`);
  const z = g.op('Add', [y, g.param(bias, [sum.c, 1, 1])], {}, `${p}.post_affine`);
  return { v: g.op('Relu', [z], {}, p), c: sum.c };
}

function resnetLayer(g: GraphBuilder, x: Feature, prefix: string, blocks: number, stride: number, s: ResNetSpec): Feature {
  let y = x;
  for (let j = 0; j < blocks; j++) y = resnetBlock(g, y, `${prefix}.${j}`, j === 0 ? stride : 1, s);
  return y;
}

interface Taps {
  /** conv1 after its ReLU (stride 2), layer1 (4), layer2 (8), layer3 (16). */
  readonly conv1: Feature;
  readonly layer1: Feature;
  readonly layer2: Feature;
  readonly layer3: Feature;
}

/** conv1 7×7/2 + ReLU, max-pool 3×3/2 pad 1 (−inf padding, floor), layer1..layer3. */
function resnetTrunk(g: GraphBuilder, image: Feature, s: ResNetSpec): Taps {
  const conv1 = conv(g, image, 'trunk.conv1', 7, { stride: 2, pad: 3, padMode: s.padMode, relu: true });
  const pool = g.op('MaxPool', [conv1.v], { kernel_shape: ints(3, 3), strides: ints(2, 2), pads: ints(1, 1, 1, 1) }, 'trunk.maxpool');
  const counts = s.bottleneck ? [3, 4, 6] : [2, 2, 2];
  const layer1 = resnetLayer(g, { v: pool, c: conv1.c }, 'trunk.layer1', counts[0]!, 1, s);
  const layer2 = resnetLayer(g, layer1, 'trunk.layer2', counts[1]!, 2, s);
  const layer3 = resnetLayer(g, layer2, 'trunk.layer3', counts[2]!, 2, s);
  return { conv1, layer1, layer2, layer3 };
}

function imageInput(g: GraphBuilder): Feature {
  return { v: g.input('image', ['N', 3, 'H', 'W']), c: 3 };
}

// ---------------------------------------------------------------------------
// DeepMask (tools/reference/deepmask.py, native/models/deepmask.cc)

interface DeepMaskSpec {
  readonly resnet: ResNetSpec;
  readonly embedDim: number;
  readonly fSz: number;
  readonly oSz: number;
}

function deepMaskSpec(g: GraphBuilder, part: OnnxPart, architectures: readonly string[]): DeepMaskSpec {
  const w = g.weights;
  w.expectArchitecture(part, architectures);
  const trunk = w.string('trunk', ['resnet50', 'resnet18']);
  w.integer('trunk_layers', 3, 3);
  const layout = w.string('block_layout', trunk === 'resnet50' ? ['post_add', 'standard'] : ['standard']);
  w.string('pad_mode', ['symmetric']);
  w.string('head', ['C']);
  return {
    resnet: { bottleneck: trunk === 'resnet50', padMode: 'symmetric', postAdd: layout === 'post_add' },
    embedDim: w.integer('embed_dim'),
    fSz: w.integer('fSz', 1, 512),
    oSz: w.integer('oSz', 1, 1024),
  };
}

/** Fully convolutional embedding: layer3 (no crop) → proj 1×1 + ReLU → embed as an fSz×fSz conv. */
function deepMaskEmbedding(g: GraphBuilder, layer3: Feature, s: DeepMaskSpec): Feature {
  const proj = conv(g, layer3, 'trunk.proj', 1, { relu: true });
  const e = conv(g, proj, 'trunk.embed', s.fSz);
  if (e.c !== s.embedDim) throw weightsError(`${g.weights.path}: trunk.embed gives ${e.c} channels, embed_dim is ${s.embedDim}`);
  return e;
}

/** Dense objectness: score.fc1 (+ ReLU) and score.fc2 per location. */
function denseOutputs(g: GraphBuilder, embedding: Feature): void {
  const score = linearMap(g, linearMap(g, embedding, 'score.fc1', true), 'score.fc2');
  g.output(score.v, 'score_logits', ['N', 1, 'gh', 'gw']);
  g.output(embedding.v, 'embedding', ['N', embedding.c, 'gh', 'gw']);
}

function buildDeepMaskDense(g: GraphBuilder): void {
  const s = deepMaskSpec(g, 'deepmask-dense', ['deepmask', 'sharpmask']);
  const taps = resnetTrunk(g, imageInput(g), s.resnet);
  denseOutputs(g, deepMaskEmbedding(g, taps.layer3, s));
}

function buildDeepMaskMaskHead(g: GraphBuilder): void {
  const s = deepMaskSpec(g, 'deepmask-mask-head', ['deepmask', 'sharpmask']);
  const e = { v: g.input('embedding', ['K', s.embedDim]), c: s.embedDim };
  const logits = linear(g, e, ['mask.fc']);
  if (logits.c !== s.oSz * s.oSz) throw weightsError(`${g.weights.path}: mask.fc gives ${logits.c} logits, oSz² is ${s.oSz ** 2}`);
  g.output(reshape(g, logits.v, [-1, s.oSz, s.oSz], 'mask.fc'), 'mask_logits', ['K', s.oSz, s.oSz]);
}

// ---------------------------------------------------------------------------
// SharpMask (tools/reference/sharpmask.py, native/models/sharpmask.cc)

/** Refinement i = 1..4 reads these taps. */
const SKIP_TAPS = ['layer3', 'layer2', 'layer1', 'conv1'] as const;

interface SharpMaskSpec extends DeepMaskSpec {
  readonly km: number;
}

function sharpMaskSpec(g: GraphBuilder, part: OnnxPart): SharpMaskSpec {
  const s = deepMaskSpec(g, part, ['sharpmask']);
  const km = g.weights.integer('km', 16, 4096);
  if (km % 16 !== 0) throw weightsError(`${g.weights.path}: fovea.config "km" must be a multiple of 16, got ${km}`);
  if (g.weights.json('skip_taps') !== JSON.stringify(SKIP_TAPS)) {
    throw weightsError(`${g.weights.path}: fovea.config "skip_taps" must be ${JSON.stringify(SKIP_TAPS)} (the released refinement)`);
  }
  return { ...s, km };
}

/** SymPad(1) + 3×3 convs, ReLU between them, none after the last. */
function convChain(g: GraphBuilder, x: Feature, names: readonly string[]): Feature {
  let y = x;
  names.forEach((n, i) => {
    y = conv(g, y, n, 3, { pad: 1, padMode: 'symmetric', relu: i < names.length - 1 });
  });
  return y;
}

/** h_i on the whole tap maps (inference: no crop; SymPad at the map edges). */
function horizontalNets(g: GraphBuilder, taps: Taps): void {
  SKIP_TAPS.forEach((tap, i) => {
    const h = `refine.h${i + 1}`;
    const y = convChain(g, taps[tap], [`${h}.conv_a`, `${h}.conv_b`, `${h}.conv_c`]);
    g.output(y.v, `h${i + 1}`, ['N', y.c, `h${i + 1}_H`, `h${i + 1}_W`]);
  });
}

function buildSharpMaskH(g: GraphBuilder): void {
  const s = sharpMaskSpec(g, 'sharpmask-h');
  horizontalNets(g, resnetTrunk(g, imageInput(g), s.resnet));
}

function buildSharpMaskDense(g: GraphBuilder): void {
  const s = sharpMaskSpec(g, 'sharpmask-dense');
  const taps = resnetTrunk(g, imageInput(g), s.resnet);
  denseOutputs(g, deepMaskEmbedding(g, taps.layer3, s));
  horizontalNets(g, taps);
}

/**
 * SharpMask::top_down: M_1 = v0(e) viewed (km, fSz, fSz); M_{i+1} =
 * Up2_nearest(ReLU(h_i + v_i(M_i))); then the final 3×3 conv.
 */
function buildSharpMaskRefine(g: GraphBuilder): void {
  const s = sharpMaskSpec(g, 'sharpmask-refine');
  const f = s.fSz;
  const e = { v: g.input('embedding', ['K', s.embedDim]), c: s.embedDim };
  const hs = SKIP_TAPS.map((_, i) => {
    const k = s.km >> i;
    return { v: g.input(`h${i + 1}`, ['K', k / 2, f << i, f << i]), c: k / 2 };
  });
  const v0 = linear(g, e, ['refine.v0']);
  if (v0.c !== s.km * f * f) throw weightsError(`${g.weights.path}: refine.v0 gives ${v0.c} values, km·fSz² is ${s.km * f * f}`);
  let m: Feature = { v: reshape(g, v0.v, [-1, s.km, f, f], 'refine.v0'), c: s.km };
  // Nearest 2× upsampling: output pixel x reads input floor(x / 2).
  const up = {
    mode: str('nearest'),
    coordinate_transformation_mode: str('asymmetric'),
    nearest_mode: str('floor'),
  };
  hs.forEach((h, i) => {
    const v = `refine.v${i + 1}`;
    const sum = add(g, h, convChain(g, m, [`${v}.conv_a`, `${v}.conv_b`]), `refine.m${i + 2}`, true);
    m = { v: g.op('Resize', [sum.v, '', g.constant([1, 1, 2, 2], 'f32')], up, `refine.m${i + 2}`), c: sum.c };
  });
  const out = convChain(g, m, ['refine.final']);
  const side = 16 * f;
  g.output(reshape(g, out.v, [-1, side, side], 'refine.final'), 'mask_logits', ['K', side, side]);
}

// ---------------------------------------------------------------------------
// MultiPathNet, resnet18_integral (tools/reference/multipathnet.py)

/** C round(): halves away from zero. ONNX Round goes to even, so ties are moved away from zero. */
function cRound(g: GraphBuilder, v: string, hint: string): string {
  const r = g.op('Round', [v], {}, hint);
  const sign = g.op('Sign', [v], {}, hint);
  // v − r is exact in float32; it is ±0.5 only at a tie.
  const tie = g.op('Equal', [g.op('Mul', [g.op('Sub', [v, r], {}, hint), sign], {}, hint), g.constant([0.5], 'f32')], {}, hint);
  const fix = g.op('Mul', [g.op('Cast', [tie], { to: int(FLOAT) }, hint), sign], {}, hint);
  return g.op('Add', [r, fix], {}, hint);
}

/**
 * Bin edges [start, end) of inn.ROIPooling along one axis, [K, out] each, as
 * integer-valued floats, with the kernel's float32 arithmetic:
 * v2: s = round(lo·scale), e = round(hi·scale) − 1, r = max(e − s + 1, 1),
 * bins [round(p·r/out), round((p+1)·r/out)) + s; v1 (Caffe): e = round(hi·scale),
 * bins [floor(p·r/out), ceil((p+1)·r/out)) + s; both clamped to [0, size].
 */
function roiBinEdges(
  g: GraphBuilder,
  lo: string,
  hi: string,
  size: string,
  out: number,
  scale: number,
  v2: boolean,
  hint: string,
): { start: string; end: string } {
  const f = (...v: number[]): string => g.constant(v, 'f32');
  const i = (...v: number[]): string => g.constant(v, 'i64');
  const s = cRound(g, g.op('Mul', [lo, f(scale)], {}, hint), hint);
  let e = cRound(g, g.op('Mul', [hi, f(scale)], {}, hint), hint);
  if (v2) e = g.op('Sub', [e, f(1)], {}, hint);
  const r = g.op('Max', [g.op('Add', [g.op('Sub', [e, s], {}, hint), f(1)], {}, hint), f(1)], {}, hint);
  const bin = g.op('Div', [r, f(out)], {}, hint);
  const steps = g.constant(Array.from({ length: out + 1 }, (_, p) => p), 'f32', [1, out + 1]);
  const a = g.op('Mul', [steps, bin], {}, hint); // p·bin, p = 0..out: [K, out+1]
  const edge = (from: number, op: string): string => {
    const part = g.op('Slice', [a, i(from), i(from + out), i(1)], {}, hint);
    const rounded = op === 'cRound' ? cRound(g, part, hint) : g.op(op, [part], {}, hint);
    const shifted = g.op('Add', [rounded, s], {}, hint);
    return g.op('Min', [g.op('Max', [shifted, f(0)], {}, hint), size], {}, hint);
  };
  return { start: edge(0, v2 ? 'cRound' : 'Floor'), end: edge(1, v2 ? 'cRound' : 'Ceil') };
}

/**
 * inn.ROIPooling (v2, or v1 = Caffe) exactly. ONNX MaxRoiPool has Caffe's bins,
 * not v2's, so the bins are computed here (roiBinEdges) and each one becomes
 * its own ROI (batch, x_start, y_start, x_end − 1, y_end − 1) for a one-bin
 * MaxRoiPool at scale 1: on integer coordinates that pools exactly the
 * rectangle [y_start, y_end) × [x_start, x_end). Empty bins, which MaxRoiPool
 * would stretch to one cell, are set to 0 as the kernel does.
 */
function roiPool(
  g: GraphBuilder,
  x: Feature,
  rois: string,
  o: { readonly outH: number; readonly outW: number; readonly scale: number; readonly v2: boolean },
): Feature {
  const hint = 'roi_pool';
  const i = (...v: number[]): string => g.constant(v, 'i64');
  const col = (j: number): string => g.op('Slice', [rois, i(j), i(j + 1), i(1)], {}, hint); // [K, 1]
  const side = (axis: number): string =>
    g.op('Cast', [g.op('Shape', [x.v], { start: int(axis), end: int(axis + 1) }, hint)], { to: int(FLOAT) }, hint);
  const ys = roiBinEdges(g, col(2), col(4), side(2), o.outH, o.scale, o.v2, `${hint}.y`);
  const xs = roiBinEdges(g, col(1), col(3), side(3), o.outW, o.scale, o.v2, `${hint}.x`);
  const one = g.constant([1], 'f32');
  const along = (v: string, shape: number[]): string =>
    g.op('Expand', [reshape(g, v, shape, hint), g.constant([1, o.outH, o.outW, 1], 'i64')], {}, hint);
  const rowShape = [-1, o.outH, 1, 1];
  const colShape = [-1, 1, o.outW, 1];
  const bins = g.op(
    'Concat',
    [
      along(col(0), [-1, 1, 1, 1]),
      along(xs.start, colShape),
      along(ys.start, rowShape),
      along(g.op('Sub', [xs.end, one], {}, hint), colShape),
      along(g.op('Sub', [ys.end, one], {}, hint), rowShape),
    ],
    { axis: int(3) },
    hint,
  );
  const pooled = g.op(
    'MaxRoiPool',
    [x.v, reshape(g, bins, [-1, 5], hint)],
    { pooled_shape: ints(1, 1), spatial_scale: float(1) },
    hint,
  );
  const nchw = g.op('Transpose', [reshape(g, pooled, [-1, o.outH, o.outW, x.c], hint)], { perm: ints(0, 3, 1, 2) }, hint);
  const emptyRow = reshape(g, g.op('LessOrEqual', [ys.end, ys.start], {}, hint), [-1, 1, o.outH, 1], hint);
  const emptyCol = reshape(g, g.op('LessOrEqual', [xs.end, xs.start], {}, hint), [-1, 1, 1, o.outW], hint);
  const empty = g.op('Or', [emptyRow, emptyCol], {}, hint);
  return { v: g.op('Where', [empty, g.constant([0], 'f32'), nchw], {}, hint), c: x.c };
}

function buildMultiPathNet(g: GraphBuilder): void {
  const w = g.weights;
  w.expectArchitecture('multipathnet', ['multipathnet']);
  w.string('variant', ['resnet18_integral']);
  const [outH, outW] = w.integers('roi_pool', 2) as [number, number];
  // Layer4 halves the pooled map; the 7×7 average pool then leaves one vector per ROI.
  if ((outH + 1) >> 1 !== 7 || (outW + 1) >> 1 !== 7) {
    throw weightsError(`${w.path}: fovea.config "roi_pool" must be 13 or 14 on each side, got [${outH}, ${outW}]`);
  }
  const v2 = w.integer('roi_pool_version', 1, 2) === 2;
  const scale = w.positive('roi_scale');
  const classes = w.integer('num_classes');
  const heads = w.integer('integral_heads', 1, 64);

  const spec: ResNetSpec = { bottleneck: false, padMode: 'zero', postAdd: false };
  const image = imageInput(g);
  const rois = g.input('rois', ['K', 5]);
  const layer3 = resnetTrunk(g, image, spec).layer3;
  const pooled = roiPool(g, layer3, rois, { outH, outW, scale, v2 });
  const l4 = resnetLayer(g, pooled, 'tower.layer4', 2, 2, spec);
  const avg = g.op('AveragePool', [l4.v], { kernel_shape: ints(7, 7) }, 'tower.avgpool');
  const feature = { v: g.op('Flatten', [avg], { axis: int(1) }, 'tower.avgpool'), c: l4.c };

  // prob = mean over the integral heads of softmax(cls_k): one Gemm for all heads.
  const names = Array.from({ length: heads }, (_, k) => `cls.${k}`);
  const logits = linear(g, feature, names);
  if (logits.c !== heads * classes) throw weightsError(`${w.path}: cls.* give ${logits.c} logits, expected ${heads}×${classes}`);
  const soft = g.op('Softmax', [reshape(g, logits.v, [-1, heads, classes], 'cls')], { axis: int(2) }, 'cls');
  g.output(g.op('ReduceMean', [soft], { axes: ints(1), keepdims: int(0) }, 'cls'), 'cls_prob', ['K', classes]);

  // BBoxNorm: every group of 4 deltas d·std + mean.
  const raw = linear(g, feature, ['bbox']);
  if (raw.c !== 4 * classes) throw weightsError(`${w.path}: bbox gives ${raw.c} values, expected 4×${classes}`);
  const std = g.param(w.tensor('bbox_norm.std', [4]));
  const mean = g.param(w.tensor('bbox_norm.mean', [4]));
  const d = g.op('Mul', [reshape(g, raw.v, [-1, classes, 4], 'bbox_norm'), std], {}, 'bbox_norm');
  const deltas = reshape(g, g.op('Add', [d, mean], {}, 'bbox_norm'), [-1, 4 * classes], 'bbox_norm');
  g.output(deltas, 'bbox_deltas', ['K', 4 * classes]);
}

const BUILDERS: Readonly<Record<OnnxPart, (g: GraphBuilder) => void>> = {
  'deepmask-dense': buildDeepMaskDense,
  'deepmask-mask-head': buildDeepMaskMaskHead,
  'sharpmask-h': buildSharpMaskH,
  'sharpmask-dense': buildSharpMaskDense,
  'sharpmask-refine': buildSharpMaskRefine,
  multipathnet: buildMultiPathNet,
};
