/**
 * `fovea convert`: official Torch7 checkpoints (facebookresearch/deepmask
 * `model.t7`, DeepMask and SharpMask) → safetensors following the naming
 * contract of tools/reference/NAMING.md.
 *
 * The Torch tree is walked through a table (LAYOUT_*): each row names a module
 * path in the checkpoint (`trunk[5]` = 5th module of `.trunk`, 1-based as in
 * Lua; `refs{1}` = key 1 of a table keyed from 0) and the contract name it
 * becomes. Inside a row, parameter-free glue (padding, ReLU, Dropout, View…)
 * is skipped by class, and every fixed affine (BatchNorm, inn.ConstAffine,
 * nn.SpatialConstDiagonal) is folded into the conv before it with foldAffine().
 * Every emitted shape is then checked against the contract's table for the
 * config found (expectedShapes()); any difference is an ERR_WEIGHTS naming
 * the Torch module path.
 *
 * Not handled (ERR_WEIGHTS "unknown layout"): MultiPathNet checkpoints,
 * VGG-A DeepMask trunks, ResNet-18 DeepMask trunks.
 */
import * as fs from 'node:fs';
import { FoveaError } from './errors';
import { CONFIG_METADATA_KEY, writeSafetensors, type SafetensorsWriteDType } from './safetensors';
import { readT7, T7Object, T7Tensor, type T7Value } from './t7';

export interface Tensor {
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

export interface ConvertResult {
  /** Contract name → tensor, in module order. */
  readonly tensors: Map<string, Tensor>;
  /** The fovea config (`__metadata__["fovea.config"]`). */
  readonly config: Record<string, unknown>;
}

function weightsError(path: string, what: string): FoveaError {
  return new FoveaError('ERR_WEIGHTS', `convert: ${path}: ${what}`);
}

// ---------------------------------------------------------------------------
// Tree access

function isModule(v: T7Value | undefined): v is T7Object {
  return v instanceof T7Object;
}

function field(m: T7Object, key: string, path: string): T7Value {
  const v = m.get(key);
  if (v === undefined) throw weightsError(path, `${m.typename} has no field "${key}"`);
  return v;
}

/** `.modules` of a container, 1-based in Torch, as a JS array. */
function children(m: T7Object, path: string): T7Object[] {
  const mods = field(m, 'modules', path);
  if (!Array.isArray(mods)) throw weightsError(path, `${m.typename}.modules is not a list`);
  return mods.map((c, i) => {
    if (!isModule(c)) throw weightsError(`${path}[${i + 1}]`, 'not a torch module');
    return c;
  });
}

/** Resolves `a.b[3]{0}` from a root object: `.x` field, `[i]` 1-based child, `{k}` table key. */
function resolve(root: T7Object, path: string): T7Object {
  let cur: T7Value = root;
  for (const m of path.matchAll(/\.?([A-Za-z_]\w*)|\[(\d+)\]|\{(\d+)\}/g)) {
    const where = path.slice(0, m.index! + m[0].length);
    if (m[1] !== undefined) cur = isModule(cur) ? (cur.get(m[1]) ?? null) : null;
    // A container's modules, or a plain Lua list (`neths` is keyed 1..4).
    else if (m[2] !== undefined) cur = (isModule(cur) ? children(cur, where) : Array.isArray(cur) ? cur : [])[Number(m[2]) - 1] ?? null;
    else cur = cur instanceof Map ? (cur.get(Number(m[3])) ?? null) : null;
    if (cur === null) throw weightsError(where, 'missing module');
  }
  if (!isModule(cur)) throw weightsError(path, 'missing module');
  return cur;
}

function tensor(m: T7Object, key: string, path: string): T7Tensor {
  const v = field(m, key, path);
  if (!(v instanceof T7Tensor)) throw weightsError(path, `${m.typename}.${key} is not a tensor`);
  return v;
}

// ---------------------------------------------------------------------------
// Layers and folding

/** A conv or Linear with its bias (zeros where the checkpoint had none). */
interface Layer {
  weight: Float32Array;
  shape: number[];
  bias: Float32Array;
  readonly path: string;
}

/** A per-channel fixed affine y = a·x + b. */
interface Affine {
  readonly a: Float32Array;
  readonly b: Float32Array;
  readonly path: string;
}

const CONVS = new Set(['nn.SpatialConvolution', 'cudnn.SpatialConvolution', 'nn.SpatialConvolutionMM']);
const LINEARS = new Set(['nn.Linear']);
const AFFINES = new Set([
  'nn.SpatialBatchNormalization',
  'cudnn.SpatialBatchNormalization',
  'nn.BatchNormalization',
  'inn.ConstAffine',
  'nn.SpatialConstDiagonal',
]);
// Modules with no tensors to export: padding/crop (config gives them), activations,
// pools, reshapes, dropout (identity at inference), the training-only upsamplers.
const GLUE = new Set([
  'nn.SpatialSymmetricPadding',
  'nn.SpatialZeroPadding',
  'nn.ReLU',
  'cudnn.ReLU',
  'nn.Threshold',
  'nn.SpatialMaxPooling',
  'cudnn.SpatialMaxPooling',
  'nn.View',
  'nn.Reshape',
  'nn.Copy',
  'nn.Dropout',
  'nn.Identity',
  'nn.SpatialReSamplingEx',
  'nn.SpatialUpSamplingNearest',
]);

function readLayer(m: T7Object, path: string): Layer {
  const w = tensor(m, 'weight', path);
  let shape = [...w.shape];
  if (CONVS.has(m.typename)) {
    // SpatialConvolutionMM (and some cudnn saves) keep the weight 2-D [out, in·kh·kw].
    const kH = m.get('kH');
    const kW = m.get('kW');
    const nIn = m.get('nInputPlane');
    if (shape.length === 2 && typeof kH === 'number' && typeof kW === 'number' && typeof nIn === 'number') {
      if (shape[1] !== nIn * kH * kW) throw weightsError(path, `2-D weight [${shape.join(', ')}] does not hold ${nIn}×${kH}×${kW}`);
      shape = [shape[0]!, nIn, kH, kW];
    }
    if (shape.length !== 4) throw weightsError(path, `conv weight has shape [${shape.join(', ')}], expected 4-D`);
  } else if (shape.length !== 2) {
    throw weightsError(path, `Linear weight has shape [${shape.join(', ')}], expected 2-D`);
  }
  const b = m.get('bias');
  const bias = b instanceof T7Tensor ? b.toFloat32() : new Float32Array(shape[0]!);
  if (bias.length !== shape[0]) throw weightsError(path, `bias has ${bias.length} elements for ${shape[0]} outputs`);
  return { weight: w.toFloat32(), shape, bias, path };
}

function readAffine(m: T7Object, path: string): Affine {
  if (m.typename.endsWith('BatchNormalization')) {
    const mean = tensor(m, 'running_mean', path).toFloat32();
    const gamma = m.get('weight') instanceof T7Tensor ? tensor(m, 'weight', path).toFloat32() : new Float32Array(mean.length).fill(1);
    const beta = m.get('bias') instanceof T7Tensor ? tensor(m, 'bias', path).toFloat32() : new Float32Array(mean.length);
    // Old nn stored running_std = 1/√(var+ε); current nn stores running_var and eps.
    const std = m.get('running_std');
    const inv =
      std instanceof T7Tensor
        ? std.toFloat32()
        : tensor(m, 'running_var', path)
            .toFloat32()
            .map((v) => 1 / Math.sqrt(v + Number(m.get('eps') ?? 1e-5)));
    const a = gamma.map((g, i) => g * inv[i]!);
    return { a, b: beta.map((bt, i) => bt - mean[i]! * a[i]!), path };
  }
  // inn.ConstAffine: a, b of shape [C]; nn.SpatialConstDiagonal: [1, C, 1, 1].
  return { a: tensor(m, 'a', path).toFloat32(), b: tensor(m, 'b', path).toFloat32(), path };
}

/**
 * Folds y = a·(W x + bias) + shift into the layer: W'[o] = a[o]·W[o],
 * b'[o] = a[o]·bias[o] + shift[o]. `withShift` false applies only the scale
 * (the projection shortcut of a post-add affine: the shift is added once, on the main path).
 */
export function foldAffine(layer: Layer, affine: Affine, withShift = true): void {
  const out = layer.shape[0]!;
  if (affine.a.length !== out || affine.b.length !== out) {
    throw weightsError(affine.path, `affine of ${affine.a.length} channels after ${layer.path} with ${out} outputs`);
  }
  const per = layer.weight.length / out;
  for (let o = 0; o < out; o++) {
    const a = affine.a[o]!;
    for (let i = o * per; i < (o + 1) * per; i++) layer.weight[i]! *= a;
    layer.bias[o] = a * layer.bias[o]! + (withShift ? affine.b[o]! : 0);
  }
}

/**
 * The convs/Linears of a chain of modules, in order, each with the fixed
 * affines that directly follow it folded in. Nested Sequentials are flattened
 * (`Sequential{SymPad, conv}`); anything else with parameters is an error.
 */
function chain(m: T7Object, path: string, out: Layer[] = []): Layer[] {
  if (CONVS.has(m.typename) || LINEARS.has(m.typename)) {
    out.push(readLayer(m, path));
  } else if (AFFINES.has(m.typename)) {
    const last = out[out.length - 1];
    if (last === undefined) throw weightsError(path, `${m.typename} follows no conv`);
    foldAffine(last, readAffine(m, path));
  } else if (m.typename === 'nn.Sequential') {
    children(m, path).forEach((c, i) => chain(c, `${path}[${i + 1}]`, out));
  } else if (!GLUE.has(m.typename)) {
    throw weightsError(path, `unexpected module ${m.typename}`);
  }
  return out;
}

function chainOf(m: T7Object, path: string, count: number): Layer[] {
  const layers = chain(m, path);
  if (layers.length !== count) throw weightsError(path, `expected ${count} conv/Linear layers, found ${layers.length}`);
  return layers;
}

// ---------------------------------------------------------------------------
// Emitters: one per kind of table row

type Emit = (name: string, t: Tensor, path: string) => void;

function emitLayer(emit: Emit, name: string, layer: Layer, shape: number[] = layer.shape): void {
  emit(`${name}.weight`, { shape, data: layer.weight }, layer.path);
  emit(`${name}.bias`, { shape: [shape[0]!], data: layer.bias }, layer.path);
}

/**
 * A ResNet block: Sequential{ ConcatTable{main, shortcut}, CAddTable, [affine], ReLU }.
 * The shortcut is nn.Identity, a bare conv, or Sequential{conv, affine}.
 */
function emitBlock(emit: Emit, name: string, block: T7Object, path: string): void {
  const mods = children(block, path);
  const concat = mods[0];
  if (concat?.typename !== 'nn.ConcatTable' || mods[1]?.typename !== 'nn.CAddTable') {
    throw weightsError(path, 'not a residual block Sequential{ConcatTable, CAddTable, …}');
  }
  const [main, shortcut] = children(concat, `${path}[1]`);
  if (main === undefined || shortcut === undefined) throw weightsError(`${path}[1]`, 'ConcatTable without two branches');
  const convs = chainOf(main, `${path}[1][1]`, 3);
  const proj = shortcut.typename === 'nn.Identity' ? undefined : chainOf(shortcut, `${path}[1][2]`, 1)[0];
  let post: Affine | undefined;
  for (let i = 2; i < mods.length; i++) {
    const m = mods[i]!;
    const at = `${path}[${i + 1}]`;
    if (AFFINES.has(m.typename)) post = readAffine(m, at);
    else if (!GLUE.has(m.typename)) throw weightsError(at, `unexpected module ${m.typename} after the residual sum`);
  }
  if (post !== undefined && proj !== undefined) {
    foldAffine(convs[2]!, post);
    foldAffine(proj, post, false);
  }
  convs.forEach((c, i) => emitLayer(emit, `${name}.conv${i + 1}`, c));
  if (proj !== undefined) emitLayer(emit, `${name}.downsample`, proj);
  if (post !== undefined && proj === undefined) {
    emit(`${name}.post_affine.scale`, { shape: [post.a.length], data: post.a }, post.path);
    emit(`${name}.post_affine.bias`, { shape: [post.b.length], data: post.b }, post.path);
  }
}

type RowKind =
  /** One conv/Linear (glue and following affines inside the module allowed). */
  | 'layer'
  /** A Linear reading a flattened C×k×k map, stored as a k×k conv (NAMING rule 4). */
  | 'linearAsConv'
  /** A Sequential of ResNet blocks. */
  | 'resLayer'
  /** A conv with the fixed affine at the next trunk index folded in. */
  | 'convThenAffine'
  /** SharpMask horizontal/vertical net: convs named conv_a, conv_b, conv_c. */
  | 'refineNet'
  /** The last module of refs[4] that has weights: the final 2→1 conv. */
  | 'lastConv';

interface Row {
  readonly path: string;
  readonly name: string;
  readonly kind: RowKind;
}

function emitRow(emit: Emit, root: T7Object, row: Row, cfg: Record<string, number>): void {
  const m = resolve(root, row.path);
  switch (row.kind) {
    case 'layer':
      return emitLayer(emit, row.name, chainOf(m, row.path, 1)[0]!);
    case 'linearAsConv': {
      const l = chainOf(m, row.path, 1)[0]!;
      const f = cfg['fSz']!;
      const cin = l.shape[1]! / (f * f);
      if (!Number.isInteger(cin)) throw weightsError(row.path, `Linear input ${l.shape[1]} is not C×${f}×${f}`);
      return emitLayer(emit, row.name, l, [l.shape[0]!, cin, f, f]);
    }
    case 'convThenAffine': {
      const l = chainOf(m, row.path, 1)[0]!;
      const next = row.path.replace(/\[(\d+)\]$/, (_, i: string) => `[${Number(i) + 1}]`);
      const a = resolve(root, next);
      if (!AFFINES.has(a.typename)) throw weightsError(next, `expected a fixed affine, found ${a.typename}`);
      foldAffine(l, readAffine(a, next));
      return emitLayer(emit, row.name, l);
    }
    case 'resLayer':
      return children(m, row.path).forEach((b, j) => emitBlock(emit, `${row.name}.${j}`, b, `${row.path}[${j + 1}]`));
    case 'refineNet':
      return chain(m, row.path).forEach((l, i) => emitLayer(emit, `${row.name}.conv_${'abc'[i] ?? i}`, l));
    case 'lastConv': {
      const mods = children(m, row.path);
      let at = mods.length - 1;
      while (at >= 0 && !CONVS.has(mods[at]!.typename)) at--;
      if (at < 0) throw weightsError(row.path, 'no final conv');
      return emitLayer(emit, row.name, readLayer(mods[at]!, `${row.path}[${at + 1}]`));
    }
  }
}

// ---------------------------------------------------------------------------
// Layouts (Torch module path → contract name), deepmask spec §1.1, §2, §3, §7.2

const TRUNK_RESNET50: Row[] = [
  { path: 'trunk[1]', name: 'trunk.conv1', kind: 'convThenAffine' },
  { path: 'trunk[5]', name: 'trunk.layer1', kind: 'resLayer' },
  { path: 'trunk[6]', name: 'trunk.layer2', kind: 'resLayer' },
  { path: 'trunk[7]', name: 'trunk.layer3', kind: 'resLayer' },
  { path: 'trunk[9]', name: 'trunk.proj', kind: 'layer' },
  { path: 'trunk[12]', name: 'trunk.embed', kind: 'linearAsConv' },
];

const LAYOUT_DEEPMASK: Row[] = [
  ...TRUNK_RESNET50,
  { path: 'maskBranch[1]', name: 'mask.fc', kind: 'layer' },
  { path: 'scoreBranch[2]', name: 'score.fc1', kind: 'layer' },
  { path: 'scoreBranch[5]', name: 'score.fc2', kind: 'layer' },
];

const LAYOUT_SHARPMASK: Row[] = [
  ...TRUNK_RESNET50,
  { path: 'maskBranchDM[1]', name: 'mask.fc', kind: 'layer' },
  { path: 'scoreBranch[2]', name: 'score.fc1', kind: 'layer' },
  { path: 'scoreBranch[5]', name: 'score.fc2', kind: 'layer' },
  { path: 'refs{0}[1]', name: 'refine.v0', kind: 'layer' },
  ...[1, 2, 3, 4].flatMap((i): Row[] => [
    { path: `neths[${i}]`, name: `refine.h${i}`, kind: 'refineNet' },
    { path: `netvs{${i}}`, name: `refine.v${i}`, kind: 'refineNet' },
  ]),
  { path: 'refs{4}', name: 'refine.final', kind: 'lastConv' },
];

// ---------------------------------------------------------------------------
// Expected shapes (NAMING.md, DeepMask/SharpMask with the ResNet-50 post_add trunk)

const RESNET50_BLOCKS = [3, 4, 6];

function expectedShapes(cfg: Record<string, number>, sharp: boolean): Map<string, number[]> {
  const { base_width: w, proj_channels: P, embed_dim: D, score_hidden: H, fSz: f, oSz: o } = cfg as Record<string, number>;
  const t = new Map<string, number[]>();
  const layer = (name: string, out: number, cin: number, k?: number): void => {
    t.set(`${name}.weight`, k === undefined ? [out, cin] : [out, cin, k, k]);
    t.set(`${name}.bias`, [out]);
  };
  layer('trunk.conv1', w!, 3, 7);
  let cin = w!;
  RESNET50_BLOCKS.forEach((n, l) => {
    const wl = w! * 2 ** l;
    for (let j = 0; j < n; j++) {
      const b = `trunk.layer${l + 1}.${j}`;
      layer(`${b}.conv1`, wl, cin, 1);
      layer(`${b}.conv2`, wl, wl, 3);
      layer(`${b}.conv3`, 4 * wl, wl, 1);
      if (j === 0) layer(`${b}.downsample`, 4 * wl, cin, 1);
      else ['scale', 'bias'].forEach((k) => t.set(`${b}.post_affine.${k}`, [4 * wl]));
      cin = 4 * wl;
    }
  });
  layer('trunk.proj', P!, cin, 1);
  layer('trunk.embed', D!, P!, f);
  layer('mask.fc', o! * o!, D!);
  layer('score.fc1', H!, D!);
  layer('score.fc2', 1, H!);
  if (!sharp) return t;
  const km = cfg['km']!;
  const nhu2 = RELEASED_SHARPMASK.nhu2;
  const taps = [cin, w! * 8, w! * 4, w!];
  layer('refine.v0', km * f! * f!, D!);
  for (let i = 1; i <= 4; i++) {
    const k = km / 2 ** (i - 1);
    layer(`refine.h${i}.conv_a`, nhu2[i - 1]!, taps[i - 1]!, 3);
    layer(`refine.h${i}.conv_b`, k, nhu2[i - 1]!, 3);
    layer(`refine.h${i}.conv_c`, k / 2, k, 3);
    layer(`refine.v${i}.conv_a`, k, k, 3);
    layer(`refine.v${i}.conv_b`, k / 2, k, 3);
  }
  layer('refine.final', 1, 2, 3);
  return t;
}

// ---------------------------------------------------------------------------
// Config

const RELEASED_DEEPMASK = {
  trunk: 'resnet50',
  trunk_layers: 3,
  block_layout: 'post_add',
  pad_mode: 'symmetric',
  wSz: 192,
  iSz: 160,
  fSz: 10,
  oSz: 56,
  gSz: 112,
  trunk_crop: 1,
  stride: 16,
  head: 'C',
  mean: [0.485, 0.456, 0.406],
  std: [0.229, 0.224, 0.225],
  scales: [-2.5, -2, -1.5, -1, -0.5, 0, 0.5].map((e) => 2 ** e),
  image_pad: 80,
  image_pad_value: 0.5,
  mask_threshold: 0.2,
};

// Refinement settings of SharpMask.lua: not stored in the checkpoint.
const RELEASED_SHARPMASK = {
  nhu2: [64, 64, 64, 32],
  skpos: [8, 6, 5, 3],
  skip_taps: ['layer3', 'layer2', 'layer1', 'conv1'],
  skip_crops: [0, 2, 4, 8],
};

/** Numbers of the checkpoint's `config` table (train.lua options) and of the model object. */
function numbers(v: T7Value | undefined, keys: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of keys) {
    const x = v instanceof Map ? v.get(k) : v instanceof T7Object ? v.get(k) : undefined;
    if (typeof x === 'number') out[k] = x;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Entry points

export interface ConvertOptions {
  /** Shown in error messages instead of "checkpoint". */
  readonly source?: string;
}

function readCheckpoint(bytes: Uint8Array, source: string): { model: T7Object; config: T7Value } {
  let top: T7Value;
  try {
    top = readT7(bytes, { longSize: 'auto' });
  } catch (err) {
    if (!(err instanceof FoveaError)) throw err;
    throw new FoveaError('ERR_WEIGHTS', `convert: ${source} (file ends at byte ${bytes.length}) cannot be read: ${err.message}`, {
      cause: err,
    });
  }
  const model = top instanceof Map ? top.get('model') : top;
  if (!isModule(model)) throw weightsError(source, 'unknown top-level layout: expected {model = nn.DeepMask | nn.SharpMask, config = …}');
  return { model, config: top instanceof Map ? (top.get('config') ?? null) : null };
}

/** Converts a DeepMask or SharpMask Torch7 checkpoint to contract tensors and config. */
export function convertT7(input: Uint8Array | string, options: ConvertOptions = {}): ConvertResult {
  const source = options.source ?? (typeof input === 'string' ? input : 'checkpoint');
  const bytes = typeof input === 'string' ? fs.readFileSync(input) : input;
  const { model, config: trainConfig } = readCheckpoint(bytes, source);
  const sharp = model.typename === 'nn.SharpMask';
  if (!sharp && model.typename !== 'nn.DeepMask') {
    throw weightsError(source, `unknown model class ${model.typename} (converted: nn.DeepMask, nn.SharpMask)`);
  }
  const cfg: Record<string, number> = {
    fSz: 10,
    oSz: 56,
    km: 32,
    ks: 32,
    ...numbers(trainConfig, ['iSz', 'oSz', 'gSz', 'km', 'ks']),
    ...numbers(model, ['fSz', 'km', 'ks']),
  };
  const tensors = new Map<string, Tensor>();
  const sources = new Map<string, string>();
  const emit: Emit = (name, t, path) => {
    tensors.set(name, t);
    sources.set(name, path);
  };
  for (const row of sharp ? LAYOUT_SHARPMASK : LAYOUT_DEEPMASK) emitRow(emit, model, row, cfg);
  // Widths come from the tensors (reduced-width models convert too); the table then checks them all.
  const dims = {
    base_width: tensors.get('trunk.conv1.bias')!.shape[0]!,
    proj_channels: tensors.get('trunk.proj.bias')!.shape[0]!,
    embed_dim: tensors.get('trunk.embed.bias')!.shape[0]!,
    score_hidden: tensors.get('score.fc1.bias')!.shape[0]!,
  };
  checkShapes(tensors, sources, expectedShapes({ ...cfg, ...dims }, sharp));
  const config: Record<string, unknown> = {
    ...RELEASED_DEEPMASK,
    ...cfg,
    ...dims,
    architecture: sharp ? 'sharpmask' : 'deepmask',
    width_div: 64 / dims.base_width,
    format_version: 1,
    source: `converted by fovea from ${source}`,
    licence: 'Weights: facebookresearch/deepmask, BSD-3-Clause + PATENTS',
  };
  if (sharp) Object.assign(config, { ...RELEASED_SHARPMASK, gSz: cfg['iSz'] ?? 160 });
  return { tensors, config };
}

function checkShapes(tensors: Map<string, Tensor>, sources: Map<string, string>, expected: Map<string, number[]>): void {
  for (const [name, t] of tensors) {
    const want = expected.get(name);
    const path = sources.get(name)!;
    if (want === undefined) throw weightsError(path, `gives ${name}, which the naming contract does not have`);
    if (want.join() !== t.shape.join()) {
      throw weightsError(path, `${name} has shape [${t.shape.join(', ')}], the contract wants [${want.join(', ')}]`);
    }
  }
  for (const name of expected.keys()) {
    if (!tensors.has(name)) throw weightsError(name, 'missing from the checkpoint');
  }
}

/** `fovea convert`: reads a .t7 checkpoint, writes the contract's safetensors file. */
export function convertFile(inPath: string, outPath: string, options: { dtype?: SafetensorsWriteDType } = {}): ConvertResult {
  const result = convertT7(inPath);
  const bytes = writeSafetensors(result.tensors, {
    dtype: options.dtype ?? 'F32',
    metadata: { [CONFIG_METADATA_KEY]: JSON.stringify(result.config) },
  });
  fs.writeFileSync(outPath, bytes);
  return result;
}
