/**
 * Runs one ONNX node as fovea runOp calls. Each mapper states every attribute
 * it understands: an attribute outside that list fails the case instead of
 * being ignored, so a pass never hides a semantics we did not map.
 */
import type { NativeTensor } from '../../lib/native';
import type { AttrValue, OnnxModel, OnnxNode, OnnxTensor } from './loader';

export type RunOp = (
  name: string,
  inputs: Array<NativeTensor | null>,
  attrs: Record<string, unknown>,
) => Promise<unknown>;

interface Ctx {
  node: OnnxNode;
  opset: number;
  /** The node's inputs in order; null where an optional input is omitted. */
  inputs: Array<OnnxTensor | null>;
  runOp: RunOp;
}

type Mapper = (ctx: Ctx) => Promise<OnnxTensor[]>;

class Attrs {
  private readonly values: Map<string, AttrValue>;

  constructor(node: OnnxNode, private readonly known: readonly string[]) {
    for (const name of node.attrs.keys()) {
      if (!known.includes(name)) throw new Error(`${node.opType}: attribute '${name}' is not mapped`);
    }
    this.values = node.attrs;
  }

  private get(name: string): AttrValue | undefined {
    if (!this.known.includes(name)) throw new Error(`mapper reads undeclared attribute '${name}'`);
    return this.values.get(name);
  }

  int(name: string, fallback: number): number {
    const v = this.get(name) ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v)) throw new Error(`attribute '${name}' must be an int`);
    return v;
  }

  float(name: string, fallback: number): number {
    const v = this.get(name) ?? fallback;
    if (typeof v !== 'number') throw new Error(`attribute '${name}' must be a float`);
    return v;
  }

  string(name: string, fallback: string): string {
    const v = this.get(name) ?? fallback;
    if (typeof v !== 'string') throw new Error(`attribute '${name}' must be a string`);
    return v;
  }

  ints(name: string, fallback: number[]): number[] {
    const v = this.get(name) ?? fallback;
    if (!Array.isArray(v)) throw new Error(`attribute '${name}' must be ints`);
    return v;
  }
}

function need(t: OnnxTensor | null | undefined, what: string): OnnxTensor {
  if (!t) throw new Error(`input ${what} is missing`);
  return t;
}

function float32(t: OnnxTensor, what: string): Float32Array {
  if (t.dtype !== 'float32') throw new Error(`${what} must be float32, got ${t.dtype}`);
  return t.data;
}

function int64Values(t: OnnxTensor, what: string): number[] {
  if (t.dtype !== 'int64') throw new Error(`${what} must be int64, got ${t.dtype}`);
  return Array.from(t.data, Number);
}

function toNative(t: OnnxTensor | null): NativeTensor | null {
  return t && { data: t.data, shape: t.dims };
}

async function run(ctx: Ctx, name: string, inputs: Array<OnnxTensor | null>, attrs: Record<string, unknown>) {
  const out = (await ctx.runOp(name, inputs.map(toNative), attrs)) as { data: Float32Array; shape: number[] };
  return { dtype: 'float32', dims: out.shape, data: out.data } satisfies OnnxTensor;
}

function needRank(t: OnnxTensor, rank: number, what: string): void {
  if (t.dims.length !== rank) throw new Error(`${what} must be ${rank}-D, got [${t.dims}]`);
}

function onlyOutput(ctx: Ctx): void {
  if (ctx.node.outputs.filter((o) => o !== '').length !== 1) {
    throw new Error(`${ctx.node.opType}: only the first output is a fovea op result`);
  }
}

/**
 * Explicit [top, left, bottom, right] pads for a 2-D window. SAME_* keeps
 * ceil(in / stride) outputs; SAME_UPPER puts the odd pad at the end.
 */
function windowPads(a: Attrs, inHW: number[], kernel: number[], strides: number[], dilations: number[]): number[] {
  const autoPad = a.string('auto_pad', 'NOTSET');
  if (autoPad === 'NOTSET') return a.ints('pads', [0, 0, 0, 0]);
  if (autoPad === 'VALID') return [0, 0, 0, 0];
  if (autoPad !== 'SAME_UPPER' && autoPad !== 'SAME_LOWER') throw new Error(`auto_pad '${autoPad}' is not mapped`);
  const begin: number[] = [];
  const end: number[] = [];
  for (let d = 0; d < 2; d++) {
    const out = Math.ceil(inHW[d]! / strides[d]!);
    const span = (kernel[d]! - 1) * dilations[d]! + 1;
    const total = Math.max(0, (out - 1) * strides[d]! + span - inHW[d]!);
    const small = Math.floor(total / 2);
    begin.push(autoPad === 'SAME_UPPER' ? small : total - small);
    end.push(autoPad === 'SAME_UPPER' ? total - small : small);
  }
  return [...begin, ...end];
}

const conv: Mapper = async (ctx) => {
  const a = new Attrs(ctx.node, ['auto_pad', 'dilations', 'group', 'kernel_shape', 'pads', 'strides']);
  onlyOutput(ctx);
  const x = need(ctx.inputs[0], 'X');
  const w = need(ctx.inputs[1], 'W');
  needRank(x, 4, 'Conv X (2-D convolution)');
  const kernel = a.ints('kernel_shape', w.dims.slice(2));
  if (kernel.join() !== w.dims.slice(2).join()) throw new Error(`kernel_shape [${kernel}] differs from W [${w.dims}]`);
  const strides = a.ints('strides', [1, 1]);
  const dilations = a.ints('dilations', [1, 1]);
  const pads = windowPads(a, x.dims.slice(2), kernel, strides, dilations);
  const attrs = { strides, dilations, pads, groups: a.int('group', 1) };
  return [await run(ctx, 'conv2d', [x, w, ctx.inputs[2] ?? null], attrs)];
};

function pool(opName: 'max_pool2d' | 'avg_pool2d', known: string[]): Mapper {
  return async (ctx) => {
    const a = new Attrs(ctx.node, ['auto_pad', 'ceil_mode', 'kernel_shape', 'pads', 'strides', ...known]);
    onlyOutput(ctx);
    const x = need(ctx.inputs[0], 'X');
    needRank(x, 4, `${ctx.node.opType} X (2-D pooling)`);
    const kernel = a.ints('kernel_shape', []);
    const strides = a.ints('strides', [1, 1]);
    // Dilations exist on MaxPool only (opset 10+); AveragePool has none.
    const dilations = known.includes('dilations') ? a.ints('dilations', [1, 1]) : [1, 1];
    const attrs: Record<string, unknown> = {
      kernel,
      strides,
      dilations,
      pads: windowPads(a, x.dims.slice(2), kernel, strides, dilations),
      ceilMode: a.int('ceil_mode', 0) === 1,
    };
    if (known.includes('count_include_pad')) attrs['countIncludePad'] = a.int('count_include_pad', 0) === 1;
    return [await run(ctx, opName, [x], attrs)];
  };
}

const gemm: Mapper = async (ctx) => {
  // `broadcast` (opset < 7) only permits the C broadcasting gemm always does.
  const a = new Attrs(ctx.node, ['alpha', 'beta', 'broadcast', 'transA', 'transB']);
  const attrs = {
    transA: a.int('transA', 0) === 1,
    transB: a.int('transB', 0) === 1,
    alpha: a.float('alpha', 1),
    beta: a.float('beta', 1),
  };
  return [await run(ctx, 'gemm', [need(ctx.inputs[0], 'A'), need(ctx.inputs[1], 'B'), ctx.inputs[2] ?? null], attrs)];
};

function unary(opName: 'relu' | 'sigmoid'): Mapper {
  return async (ctx) => {
    new Attrs(ctx.node, []);
    return [await run(ctx, opName, [need(ctx.inputs[0], 'X')], {})];
  };
}

// Opset 13 made Softmax act on one axis (default -1). Before it, the input
// was flattened to 2-D at `axis` (default 1) and normalised over the whole
// trailing block: that is a softmax over the last axis of that 2-D view.
const softmax: Mapper = async (ctx) => {
  const a = new Attrs(ctx.node, ['axis']);
  const x = need(ctx.inputs[0], 'input');
  if (ctx.opset >= 13) return [await run(ctx, 'softmax', [x], { axis: a.int('axis', -1) })];
  const rank = x.dims.length;
  const axis = a.int('axis', 1);
  const from = axis < 0 ? axis + rank : axis;
  const outer = x.dims.slice(0, from).reduce((p, d) => p * d, 1);
  const inner = x.dims.slice(from).reduce((p, d) => p * d, 1);
  const flat = await run(ctx, 'softmax', [{ ...x, dims: [outer, inner] }], { axis: -1 });
  return [{ ...flat, dims: x.dims }];
};

const RESIZE_COORDS = ['align_corners', 'half_pixel', 'pytorch_half_pixel', 'asymmetric'];

// Output size and explicit scales from either `scales` or `sizes`; an empty
// tensor counts as omitted (opset 11-12 required a placeholder).
function resizeTarget(x: OnnxTensor, scales: OnnxTensor | null, sizes: OnnxTensor | null) {
  if (scales && scales.data.length > 0) {
    const s = Array.from(float32(scales, 'scales'));
    if (s.length !== 4 || s[0] !== 1 || s[1] !== 1) throw new Error(`scales [${s}]: only H and W may be resized`);
    const size = [Math.floor(x.dims[2]! * s[2]!), Math.floor(x.dims[3]! * s[3]!)];
    return { size, scaleH: s[2]!, scaleW: s[3]! };
  }
  if (!sizes) throw new Error('Resize needs scales or sizes');
  const s = int64Values(sizes, 'sizes');
  if (s.length !== 4 || s[0] !== x.dims[0] || s[1] !== x.dims[1]) {
    throw new Error(`sizes [${s}]: only H and W may be resized`);
  }
  return { size: [s[2]!, s[3]!] };
}

const resize: Mapper = async (ctx) => {
  // cubic_coeff_a, exclude_outside and nearest_mode only affect the cubic and
  // nearest modes, extrapolation_value only tf_crop_and_resize: none of them
  // can change a linear resize, so they are accepted and have no effect.
  const a = new Attrs(ctx.node, [
    'coordinate_transformation_mode', 'cubic_coeff_a', 'exclude_outside', 'extrapolation_value', 'mode', 'nearest_mode',
  ]);
  const mode = a.string('mode', 'nearest');
  if (mode !== 'linear') throw new Error(`Resize mode '${mode}' is not mapped (linear only)`);
  // Opset 10 Resize had no coordinate mode: it sampled at dst / scale.
  const coord = a.string('coordinate_transformation_mode', ctx.opset >= 11 ? 'half_pixel' : 'asymmetric');
  if (!RESIZE_COORDS.includes(coord)) throw new Error(`coordinate_transformation_mode '${coord}' is not mapped`);
  const x = need(ctx.inputs[0], 'X');
  needRank(x, 4, 'Resize X');
  // Opset 10: (X, scales). Opset 11+: (X, roi, scales, sizes); roi only serves tf_crop_and_resize.
  const target = ctx.opset >= 11
    ? resizeTarget(x, ctx.inputs[2] ?? null, ctx.inputs[3] ?? null)
    : resizeTarget(x, need(ctx.inputs[1], 'scales'), null);
  return [await run(ctx, 'resize_bilinear', [x], { ...target, coord })];
};

const concat: Mapper = async (ctx) => {
  const a = new Attrs(ctx.node, ['axis']);
  // Opset 1 defaulted axis to 1; it is required since opset 4.
  const inputs = ctx.inputs.map((t, i) => need(t, `${i}`));
  return [await run(ctx, 'concat', inputs, { axis: a.int('axis', 1) })];
};

const add: Mapper = async (ctx) => {
  // Opset < 7 spelled broadcasting with these; equal shapes make them moot.
  new Attrs(ctx.node, ['axis', 'broadcast']);
  const x = need(ctx.inputs[0], 'A');
  const y = need(ctx.inputs[1], 'B');
  if (x.dims.join() !== y.dims.join()) {
    throw new Error(`Add of [${x.dims}] and [${y.dims}]: fovea add takes equal shapes`);
  }
  return [await run(ctx, 'add', [x, y], {})];
};

const batchNorm: Mapper = async (ctx) => {
  // momentum only updates running statistics, which inference leaves alone.
  const a = new Attrs(ctx.node, ['epsilon', 'is_test', 'momentum', 'spatial', 'training_mode']);
  onlyOutput(ctx);
  if (a.int('training_mode', 0) !== 0 || a.int('is_test', 1) !== 1) throw new Error('training-mode BatchNormalization');
  if (a.int('spatial', 1) !== 1) throw new Error('BatchNormalization spatial=0 (per-activation statistics)');
  const inputs = [0, 1, 2, 3, 4].map((i) => need(ctx.inputs[i], `${i}`));
  return [await run(ctx, 'batch_norm', inputs, { epsilon: a.float('epsilon', 1e-5) })];
};

const roiAlign: Mapper = async (ctx) => {
  const a = new Attrs(ctx.node, [
    'coordinate_transformation_mode', 'mode', 'output_height', 'output_width', 'sampling_ratio', 'spatial_scale',
  ]);
  // Before opset 16 there was no choice: ROIs were used without the -0.5 shift.
  const coord = a.string('coordinate_transformation_mode', ctx.opset >= 16 ? 'half_pixel' : 'output_half_pixel');
  if (coord !== 'half_pixel' && coord !== 'output_half_pixel') {
    throw new Error(`coordinate_transformation_mode '${coord}' is not mapped`);
  }
  const attrs = {
    size: [a.int('output_height', 1), a.int('output_width', 1)],
    spatialScale: a.float('spatial_scale', 1),
    samplingRatio: a.int('sampling_ratio', 0),
    aligned: coord === 'half_pixel',
    mode: a.string('mode', 'avg'),
  };
  const inputs = [0, 1, 2].map((i) => need(ctx.inputs[i], `${i}`));
  return [await run(ctx, 'roi_align', inputs, attrs)];
};

function scalar(t: OnnxTensor | null): number | undefined {
  if (!t || t.data.length === 0) return undefined;
  if (t.data.length !== 1) throw new Error(`expected one value, got [${t.dims}]`);
  return Number(t.data[0]);
}

// ONNX NMS works on [B, N, 4] boxes and [B, C, N] scores; fovea's nms is one
// class of one image, so run it per (batch, class) and emit (b, c, index) rows.
const nonMaxSuppression: Mapper = async (ctx) => {
  const a = new Attrs(ctx.node, ['center_point_box']);
  const boxes = need(ctx.inputs[0], 'boxes');
  const scores = need(ctx.inputs[1], 'scores');
  needRank(boxes, 3, 'boxes');
  needRank(scores, 3, 'scores');
  const [batches, numBoxes] = boxes.dims as [number, number, number];
  const classes = scores.dims[1]!;
  if (scores.dims[0] !== batches || scores.dims[2] !== numBoxes) {
    throw new Error(`scores [${scores.dims}] do not match boxes [${boxes.dims}]`);
  }
  // An omitted or zero max_output_boxes_per_class selects nothing (the spec's
  // default), which fovea spells as "no call" rather than as a limit.
  const maxOutput = scalar(ctx.inputs[2] ?? null) ?? 0;
  const scoreThreshold = scalar(ctx.inputs[4] ?? null);
  const attrs = {
    iouThreshold: scalar(ctx.inputs[3] ?? null) ?? 0,
    ...(scoreThreshold === undefined ? {} : { scoreThreshold }),
    maxOutput,
    centerPointBox: a.int('center_point_box', 0) === 1,
  };
  const boxData = float32(boxes, 'boxes');
  const scoreData = float32(scores, 'scores');
  const rows: bigint[] = [];
  for (let b = 0; b < batches && maxOutput > 0; b++) {
    const bData = boxData.subarray(b * numBoxes * 4, (b + 1) * numBoxes * 4);
    const bBoxes: OnnxTensor = { dtype: 'float32', dims: [numBoxes, 4], data: bData };
    for (let c = 0; c < classes; c++) {
      const start = (b * classes + c) * numBoxes;
      const cData = scoreData.subarray(start, start + numBoxes);
      const cScores: OnnxTensor = { dtype: 'float32', dims: [numBoxes], data: cData };
      const kept = (await ctx.runOp('nms', [toNative(bBoxes), toNative(cScores)], attrs)) as number[];
      for (const i of kept) rows.push(BigInt(b), BigInt(c), BigInt(i));
    }
  }
  return [{ dtype: 'int64', dims: [rows.length / 3, 3], data: BigInt64Array.from(rows) }];
};

const MAPPERS: Record<string, Mapper> = {
  Conv: conv,
  // storage_order only lays out the Indices output, which onlyOutput() rules out.
  MaxPool: pool('max_pool2d', ['dilations', 'storage_order']),
  AveragePool: pool('avg_pool2d', ['count_include_pad']),
  Gemm: gemm,
  Relu: unary('relu'),
  Sigmoid: unary('sigmoid'),
  Softmax: softmax,
  Resize: resize,
  Concat: concat,
  Add: add,
  BatchNormalization: batchNorm,
  RoiAlign: roiAlign,
  NonMaxSuppression: nonMaxSuppression,
};

export const MAPPED_OPS = Object.keys(MAPPERS);

/** Runs the model's node on `values` (graph input and initializer tensors by name). */
export function runNode(model: OnnxModel, values: Map<string, OnnxTensor>, runOp: RunOp): Promise<OnnxTensor[]> {
  const mapper = MAPPERS[model.node.opType];
  if (!mapper) throw new Error(`op ${model.node.opType} is not mapped`);
  const inputs = model.node.inputs.map((name) => {
    if (name === '') return null;
    const t = values.get(name);
    if (!t) throw new Error(`node input '${name}' is neither a graph input nor an initializer`);
    return t;
  });
  return mapper({ node: model.node, opset: model.opset, inputs, runOp });
}
