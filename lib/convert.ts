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
 * MultiPathNet (facebookresearch/multipathnet `resnet18_integral_coco.t7`, the
 * only released COCO model): see "MultiPathNet" below (multipathnet spec §1.2, §7.3).
 *
 * Not handled (ERR_WEIGHTS "unknown layout"): MultiPath VGG-16 checkpoints,
 * VGG-A DeepMask trunks, ResNet-18 DeepMask trunks.
 */
import * as fs from 'node:fs';
import { FoveaError } from './errors';
import { CONFIG_METADATA_KEY, writeSafetensors, type SafetensorsWriteDType } from './safetensors';
import { readT7, T7Object, T7Tensor, type T7Value } from './t7';
import { readT7Prefix } from './t7';

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
 * `nConvs` convs on the main path: 3 (bottleneck), 2 (basic block, ResNet-18).
 */
function emitBlock(emit: Emit, name: string, block: T7Object, path: string, nConvs = 3): void {
  const mods = children(block, path);
  const concat = mods[0];
  if (concat?.typename !== 'nn.ConcatTable' || mods[1]?.typename !== 'nn.CAddTable') {
    throw weightsError(path, 'not a residual block Sequential{ConcatTable, CAddTable, …}');
  }
  const [main, shortcut] = children(concat, `${path}[1]`);
  if (main === undefined || shortcut === undefined) throw weightsError(`${path}[1]`, 'ConcatTable without two branches');
  const convs = chainOf(main, `${path}[1][1]`, nConvs);
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
  | 'lastConv'
  /** A Sequential of ResNet basic blocks (two 3×3 convs each; MultiPathNet ResNet-18). */
  | 'basicLayer'
  /** An nn.ConcatTable of Linears, named `<name>.{k}` (k from 0): the integral classifiers. */
  | 'linearList'
  /** nn.BBoxNorm: its `mean` and `std` (1×4) as `<name>.mean`, `<name>.std` ([4]). */
  | 'bboxNorm';

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
    case 'basicLayer':
      return children(m, row.path).forEach((b, j) => emitBlock(emit, `${row.name}.${j}`, b, `${row.path}[${j + 1}]`, 2));
    case 'linearList': {
      if (m.typename !== 'nn.ConcatTable') throw weightsError(row.path, `expected the nn.ConcatTable of integral classifiers, found ${m.typename}`);
      const heads = children(m, row.path);
      const n = RELEASED_MULTIPATHNET.integral_heads;
      if (heads.length !== n) throw weightsError(row.path, `expected ${n} integral classifier Linears, found ${heads.length}`);
      return heads.forEach((h, k) => emitLayer(emit, `${row.name}.${k}`, chainOf(h, `${row.path}[${k + 1}]`, 1)[0]!));
    }
    case 'bboxNorm':
      for (const key of ['mean', 'std']) {
        const v = tensor(m, key, row.path).toFloat32();
        if (v.length !== 4) throw weightsError(row.path, `nn.BBoxNorm.${key} has ${v.length} elements, expected 4`);
        emit(`${row.name}.${key}`, { shape: [4], data: v }, row.path);
      }
      return;
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
// MultiPathNet, variant resnet18_integral (multipathnet spec §1.2, §3, §7.3;
// NAMING.md §MultiPathNet)
//
// Provenance of the layout below. No real `resnet18_integral_coco.t7` is
// available to us: the module tree is the one the spec (§7.3) derives from
// multipathnet models/resnet.lua, models/model_utils.lua (makeDataParallel,
// disableFeatureBackprop, classAndBBoxLinear, integral, addBBoxNorm),
// modules/NoBackprop.lua, modules/BBoxNorm.lua and imagine-nn utils
// (foldBatchNorm removes the BN it folds; BNtoFixed puts inn.ConstAffine
// {a, b} in place of every other BN), all of which we read, and it is tested
// only on synthetic trees built to that description. From the spec only
// (no checkpoint seen): that the file holds the bare nn.Sequential (a
// {model = …} table is accepted too); the optional single-child Sequential
// around `features` / `classifier` (train_nGPU = 1); the `v2` field of
// inn.ROIPooling (absent → v1 kernel); nn.BBoxNorm mean/std stored as 1×4
// tensors; convs with or without bias. The walk is therefore tolerant where
// the spec is unsure: Sequential and nn.NoBackprop wrappers (v2 `modules[1]`
// or v1 `.inner`) are looked through, a BatchNorm left after conv1 or in
// any block is folded like a ConstAffine, and positions are found by module
// class (inn.ROIPooling, the residual layers, nn.BBoxNorm) rather than fixed
// indices. Paths in errors are relative to the top-level nn.Sequential
// (`[1][1]` = features).
//
//   [1] nn.ParallelTable{ features, nn.Identity }
//       features = Sequential{ NoBackprop{ Sequential[conv1, ReLU, MaxPool, layer1] }, layer2, layer3 }
//   [2] inn.ROIPooling(14, 14, 1/16)
//   [3] classifier = Sequential{ layer4, SpatialAveragePooling(7, 7, 1, 1), View(512) }
//   [4] nn.ConcatTable{ nn.ConcatTable{ 6 × Linear(512 → 81) }, Linear(512 → 324) }
//   [5] nn.ModeSwitch (softmax averaging; no parameters)
//   [6] nn.ParallelTable{ nn.Identity, nn.BBoxNorm{ mean, std } }

const MPN_GLUE = new Set([...GLUE, 'cudnn.SpatialAveragePooling', 'nn.SpatialAveragePooling']);

// prettier-ignore
const COCO_CLASS_NAMES = [
  'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat', 'traffic light',
  'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow', 'elephant',
  'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard',
  'sports ball', 'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket', 'bottle',
  'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich', 'orange', 'broccoli',
  'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant', 'bed', 'dining table', 'toilet',
  'tv', 'laptop', 'mouse', 'remote', 'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink',
  'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush',
];
// prettier-ignore
const COCO_CATEGORY_IDS = [
  1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35,
  36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65,
  67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
];

/**
 * Released settings not stored in the checkpoint (the model file holds the net only): the
 * reference recipe tools/reference/multipathnet.py (class names and COCO ids = spec §7.4,
 * input transform = models/model_utils.lua ImagenetTransformer, eval settings =
 * scripts/eval_coco.sh). roi_pool*, bbox_norm_* and the widths are overwritten from the file.
 */
const RELEASED_MULTIPATHNET = {
  variant: 'resnet18_integral',
  trunk: 'resnet18',
  block_layout: 'standard',
  pad_mode: 'zero',
  num_classes: 81,
  class_names: ['__background__', ...COCO_CLASS_NAMES],
  coco_category_ids: COCO_CATEGORY_IDS,
  integral_heads: 6,
  integral_thresholds: [0.5, 0.55, 0.6, 0.65, 0.7, 0.75],
  roi_pool: [14, 14],
  roi_pool_version: 2,
  roi_scale: 1 / 16,
  roi_coordinates: '0-based (Lua 1-based minus one), network-input pixels',
  mean: [0.48462227599918, 0.45624044862054, 0.40588363755159],
  std: [0.22889466674951, 0.22446679341259, 0.22495548344775],
  input_transform: 'imagenet: RGB in [0,1], (x - mean) / std',
  test_scale: 800,
  test_max_size: 1000,
  nms_threshold: 0.3,
  max_detections: 100,
};

function isResBlock(m: T7Object): boolean {
  const mods = m.get('modules');
  return m.typename === 'nn.Sequential' && Array.isArray(mods) && isModule(mods[0]) && mods[0].typename === 'nn.ConcatTable';
}

/** A Sequential whose children are all residual blocks (fb.resnet.torch `layerN`). */
function isResLayer(m: T7Object): boolean {
  const mods = m.get('modules');
  return m.typename === 'nn.Sequential' && Array.isArray(mods) && mods.length > 0 && mods.every((c) => isModule(c) && isResBlock(c));
}

interface Stage {
  readonly m: T7Object;
  readonly path: string;
}

/** The modules of `m` in forward order, looking through Sequentials (except residual layers) and NoBackprop. */
function stages(m: T7Object, path: string, out: Stage[] = []): Stage[] {
  if (m.typename === 'nn.NoBackprop') {
    // Version 2 keeps the inner module in modules[1]; version 1 saved it as `.inner` (NoBackprop.lua __read).
    if (Array.isArray(m.get('modules'))) children(m, path).forEach((c, i) => stages(c, `${path}[${i + 1}]`, out));
    else if (isModule(m.get('inner'))) stages(m.get('inner') as T7Object, `${path}.inner`, out);
    else throw weightsError(path, 'nn.NoBackprop without an inner module');
  } else if (m.typename === 'nn.Sequential' && !isResLayer(m)) {
    children(m, path).forEach((c, i) => stages(c, `${path}[${i + 1}]`, out));
  } else {
    out.push({ m, path });
  }
  return out;
}

function hasAffine(m: T7Object): boolean {
  if (AFFINES.has(m.typename)) return true;
  const mods = m.get('modules');
  return Array.isArray(mods) && mods.some((c) => isModule(c) && hasAffine(c));
}

function firstConv(m: T7Object): T7Object | undefined {
  if (CONVS.has(m.typename)) return m;
  const mods = m.get('modules');
  if (!Array.isArray(mods)) return undefined;
  for (const c of mods) {
    const f = isModule(c) ? firstConv(c) : undefined;
    if (f !== undefined) return f;
  }
  return undefined;
}

interface MultiPathLayout {
  readonly rows: Row[];
  /** The inn.ROIPooling module. */
  readonly roiPool: T7Object;
  /** Facts of the checkpoint's form (informative config keys of the reference recipe). */
  readonly form: { conv_bias: boolean; shortcut_affine: boolean; prefold_layer1: boolean };
}

/** Top-level Sequential with an inn.ROIPooling child: the ResNet-18 integral MultiPathNet. */
function isMultiPathNet(model: T7Object): boolean {
  const mods = model.get('modules');
  return model.typename === 'nn.Sequential' && Array.isArray(mods) && mods.some((c) => isModule(c) && c.typename === 'inn.ROIPooling');
}

/** Finds the module paths of the released ResNet-18 integral tree and returns its table. */
function layoutMultiPathNet(model: T7Object): MultiPathLayout {
  const top = children(model, 'model');
  const r = top.findIndex((c) => c.typename === 'inn.ROIPooling') + 1;
  const at = (i: number): string => `[${i}]`;
  const split = top[r - 2];
  if (split?.typename !== 'nn.ParallelTable') {
    throw weightsError(r > 1 ? at(r - 1) : at(r), `expected nn.ParallelTable{features, nn.Identity} before inn.ROIPooling, found ${split?.typename ?? 'nothing'}`);
  }

  // features: conv1 (+ its affine, if not folded at build time), glue, layer1..layer3.
  const featuresPath = `${at(r - 1)}[1]`;
  const feats = stages(resolve(model, featuresPath), featuresPath);
  const rows: Row[] = [];
  const layers: Stage[] = [];
  let conv1 = -1;
  feats.forEach((s, i) => {
    if (isResLayer(s.m)) layers.push(s);
    else if (CONVS.has(s.m.typename) && conv1 < 0 && layers.length === 0) conv1 = i;
    else if (AFFINES.has(s.m.typename) && i === conv1 + 1 && conv1 >= 0) return;
    else if (!MPN_GLUE.has(s.m.typename)) throw weightsError(s.path, `unexpected module ${s.m.typename} in the features`);
  });
  if (conv1 < 0) throw weightsError(featuresPath, 'no conv1 before layer1');
  if (layers.length !== 3) throw weightsError(featuresPath, `expected 3 residual layers (layer1..layer3), found ${layers.length}`);
  const c1 = feats[conv1]!;
  const bn1 = feats[conv1 + 1];
  const bn1Next = bn1 !== undefined && AFFINES.has(bn1.m.typename);
  // convThenAffine folds the module at the next index: only when the affine is really the next sibling.
  if (bn1Next && bn1.path !== c1.path.replace(/\[(\d+)\]$/, (_, i: string) => `[${Number(i) + 1}]`)) {
    throw weightsError(bn1.path, `affine after conv1 ${c1.path} is not its next sibling`);
  }
  rows.push({ path: c1.path, name: 'trunk.conv1', kind: bn1Next ? 'convThenAffine' : 'layer' });
  layers.forEach((s, l) => rows.push({ path: s.path, name: `trunk.layer${l + 1}`, kind: 'basicLayer' }));

  // classifier: layer4, average pool, View.
  const classifierPath = at(r + 1);
  if (top[r] === undefined) throw weightsError(classifierPath, 'missing module (the classifier: layer4, average pool, View)');
  const cls = stages(top[r]!, classifierPath);
  const l4 = cls.filter((s) => isResLayer(s.m));
  for (const s of cls) if (!isResLayer(s.m) && !MPN_GLUE.has(s.m.typename)) throw weightsError(s.path, `unexpected module ${s.m.typename} in the classifier`);
  if (l4.length !== 1) throw weightsError(classifierPath, `expected 1 residual layer (layer4), found ${l4.length}`);
  rows.push({ path: l4[0]!.path, name: 'tower.layer4', kind: 'basicLayer' });

  // heads: ConcatTable{ ConcatTable{6 × Linear}, Linear } (utils.classAndBBoxLinear + utils.integral).
  const headsPath = at(r + 2);
  const heads = top[r + 1];
  if (heads === undefined) throw weightsError(headsPath, 'missing module (the class and box heads)');
  if (heads.typename !== 'nn.ConcatTable' && heads.typename !== 'nn.ParallelTable') {
    throw weightsError(headsPath, `expected nn.ConcatTable{integral classifiers, box Linear}, found ${heads.typename}`);
  }
  rows.push({ path: `${headsPath}[1]`, name: 'cls', kind: 'linearList' });
  rows.push({ path: `${headsPath}[2]`, name: 'bbox', kind: 'layer' });

  // BBoxNorm: ParallelTable{Identity, BBoxNorm} after the heads (utils.addBBoxNorm).
  let norm: string | undefined;
  top.forEach((c, i) => {
    if (i <= r + 1 || c.typename !== 'nn.ParallelTable' || norm !== undefined) return;
    const j = children(c, at(i + 1)).findIndex((x) => x.typename === 'nn.BBoxNorm');
    if (j >= 0) norm = `${at(i + 1)}[${j + 1}]`;
  });
  if (norm === undefined) {
    throw weightsError(at(r + 3), 'no nn.BBoxNorm after the heads: the box deltas cannot be de-normalised (utils.addBBoxNorm)');
  }
  rows.push({ path: norm, name: 'bbox_norm', kind: 'bboxNorm' });

  // Informative form facts (reference recipe keys); the exported tensors do not depend on them.
  const early = feats.slice(0, feats.indexOf(layers[0]!) + 1);
  const block0 = children(layers[1]!.m, layers[1]!.path)[0]!;
  const shortcut = children(children(block0, `${layers[1]!.path}[1]`)[0]!, `${layers[1]!.path}[1][1]`)[1];
  const conv = firstConv(layers[1]!.m);
  return {
    rows,
    roiPool: top[r - 1]!,
    form: {
      conv_bias: conv !== undefined && conv.get('bias') instanceof T7Tensor,
      shortcut_affine: shortcut !== undefined && hasAffine(shortcut),
      prefold_layer1: !early.some((s) => hasAffine(s.m)),
    },
  };
}

/** NAMING.md §MultiPathNet resnet18_integral at base width w. */
function expectedShapesMultiPathNet(w: number): Map<string, number[]> {
  const t = new Map<string, number[]>();
  const layer = (name: string, out: number, cin: number, k?: number): void => {
    t.set(`${name}.weight`, k === undefined ? [out, cin] : [out, cin, k, k]);
    t.set(`${name}.bias`, [out]);
  };
  layer('trunk.conv1', w, 3, 7);
  let cin = w;
  for (let l = 1; l <= 4; l++) {
    const wl = w * 2 ** (l - 1);
    for (let j = 0; j < 2; j++) {
      const b = `${l === 4 ? 'tower.layer4' : `trunk.layer${l}`}.${j}`;
      layer(`${b}.conv1`, wl, cin, 3);
      layer(`${b}.conv2`, wl, wl, 3);
      if (cin !== wl) layer(`${b}.downsample`, wl, cin, 1);
      cin = wl;
    }
  }
  const { num_classes: c, integral_heads: n } = RELEASED_MULTIPATHNET;
  for (let k = 0; k < n; k++) layer(`cls.${k}`, c, cin);
  layer('bbox', 4 * c, cin);
  t.set('bbox_norm.mean', [4]);
  t.set('bbox_norm.std', [4]);
  return t;
}

function convertMultiPathNet(model: T7Object, source: string): ConvertResult {
  const { rows, roiPool, form } = layoutMultiPathNet(model);
  const tensors = new Map<string, Tensor>();
  const sources = new Map<string, string>();
  const emit: Emit = (name, t, path) => {
    tensors.set(name, t);
    sources.set(name, path);
  };
  for (const row of rows) emitRow(emit, model, row, {});
  const w = tensors.get('trunk.conv1.bias')!.shape[0]!;
  checkShapes(tensors, sources, expectedShapesMultiPathNet(w));
  // inn.ROIPooling(W, H, spatial_scale); `v2` absent = a module saved before the v2 kernel (spec §4.3).
  const roi = numbers(roiPool, ['W', 'H', 'spatial_scale']);
  const v2 = roiPool.get('v2');
  const config: Record<string, unknown> = {
    ...RELEASED_MULTIPATHNET,
    ...form,
    architecture: 'multipathnet',
    base_width: w,
    feature_dim: 8 * w,
    width_div: 64 / w,
    roi_pool: [roi['H'] ?? RELEASED_MULTIPATHNET.roi_pool[0], roi['W'] ?? RELEASED_MULTIPATHNET.roi_pool[1]],
    roi_scale: roi['spatial_scale'] ?? RELEASED_MULTIPATHNET.roi_scale,
    roi_pool_version: v2 === true ? 2 : 1,
    bbox_norm_mean: [...tensors.get('bbox_norm.mean')!.data],
    bbox_norm_std: [...tensors.get('bbox_norm.std')!.data],
    format_version: 1,
    source: `converted by fovea from ${source}`,
    licence: 'Weights: facebookresearch/multipathnet, BSD-3-Clause + PATENTS',
  };
  return { tensors, config };
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
  if (!isModule(model)) {
    throw weightsError(source, 'unknown top-level layout: expected {model = nn.DeepMask | nn.SharpMask, config = …} or a MultiPathNet nn.Sequential');
  }
  return { model, config: top instanceof Map ? (top.get('config') ?? null) : null };
}

/** Converts a DeepMask, SharpMask or MultiPathNet (ResNet-18 integral) Torch7 checkpoint to contract tensors and config. */
export function convertT7(input: Uint8Array | string, options: ConvertOptions = {}): ConvertResult {
  const source = options.source ?? (typeof input === 'string' ? input : 'checkpoint');
  const bytes = typeof input === 'string' ? fs.readFileSync(input) : input;
  const { model, config: trainConfig } = readCheckpoint(bytes, source);
  if (isMultiPathNet(model)) return convertMultiPathNet(model, source);
  const sharp = model.typename === 'nn.SharpMask';
  if (!sharp && model.typename !== 'nn.DeepMask') {
    throw weightsError(
      source,
      `unknown model class ${model.typename} (converted: nn.DeepMask, nn.SharpMask, MultiPathNet ResNet-18 = nn.Sequential with inn.ROIPooling)`,
    );
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

// ---------------------------------------------------------------------------
// What a checkpoint that ends early still holds (readT7Prefix), mapped through
// the same layout table as convertT7. Reports tensor headers only: no data is
// converted, and a tensor whose storage the file cut off is reported as such.

/** One tensor field of a module, as far as its header was read. */
export interface PrefixTensor {
  /** The module's field, e.g. 'weight', 'bias', 'gradBias'. */
  readonly field: string;
  /** `<contract name>.weight` / `.bias` for those two fields of a mapped conv/Linear, else null. */
  readonly contractName: string | null;
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  /** 0-based element offset into the storage. */
  readonly offset: number;
  /** True only when all of the storage's elements were in the file. */
  readonly dataRead: boolean;
  /** Elements the storage declares (null: the file ended before the count). */
  readonly storageDeclaredLength: number | null;
}

/** A conv/Linear/fixed affine reached before the end of the file. */
export interface PrefixModule {
  /** Path in the checkpoint, in the layout table's notation (`scoreBranch[2]`). */
  readonly torchPath: string;
  readonly typename: string;
  /** Contract layer name from the layout table (`score.fc1`); null when no row covers the module. */
  readonly contractName: string | null;
  /** False when the end of the file cut the module's fields short. */
  readonly complete: boolean;
  /** Its tensor fields that were reached, in file order. */
  readonly tensors: readonly PrefixTensor[];
  /** `<contractName>.weight` / `.bias` whose data was not read (header missing or storage cut). */
  readonly missing: readonly string[];
}

export interface PrefixDescription {
  readonly source: string;
  /** Where the file ends (its length in bytes). */
  readonly endOffset: number;
  readonly complete: boolean;
  /** When not complete: the ERR_WEIGHTS the strict reader gives (what the file ends in, and where). */
  readonly error?: FoveaError;
  /** The model's class, or null when it was not reached. */
  readonly model: string | null;
  /** The checkpoint's `config` table when it was read completely, else null. */
  readonly config: Record<string, T7Value> | null;
  /** Mapped modules in layout-table order, then unmapped parameterised ones in file order. */
  readonly modules: readonly PrefixModule[];
}

/** `.modules` of a container as far as it was read (no errors: the tree may be cut). */
function prefixChildren(m: T7Value | undefined): T7Object[] {
  const mods = isModule(m) ? m.get('modules') : undefined;
  return Array.isArray(mods) ? mods.filter(isModule) : [];
}

/** The convs/Linears of a module in order, nested Sequentials flattened (as chain() does). */
function prefixLayers(m: T7Object | undefined, path: string, out: Array<[T7Object, string]> = []): Array<[T7Object, string]> {
  if (m === undefined) return out;
  if (CONVS.has(m.typename) || LINEARS.has(m.typename)) out.push([m, path]);
  else if (m.typename === 'nn.Sequential') prefixChildren(m).forEach((c, i) => prefixLayers(c, `${path}[${i + 1}]`, out));
  return out;
}

/** Contract layer names of the convs/Linears one layout row covers, as far as the tree was read. */
function prefixRowLayers(m: T7Object, row: Row, complete: (o: object) => boolean): Array<[T7Object, string, string]> {
  const named = (layers: Array<[T7Object, string]>, name: (i: number) => string): Array<[T7Object, string, string]> =>
    layers.map(([l, p], i) => [l, p, name(i)]);
  switch (row.kind) {
    case 'layer':
    case 'linearAsConv':
    case 'convThenAffine':
      return named(prefixLayers(m, row.path).slice(0, 1), () => row.name);
    case 'refineNet':
      return named(prefixLayers(m, row.path), (i) => `${row.name}.conv_${'abc'[i] ?? i}`);
    case 'resLayer':
      return prefixChildren(m).flatMap((block, j) => {
        const at = `${row.path}[${j + 1}]`;
        const concat = prefixChildren(block)[0];
        const [main, shortcut] = prefixChildren(concat);
        return [
          ...named(prefixLayers(main, `${at}[1][1]`), (i) => `${row.name}.${j}.conv${i + 1}`),
          ...named(prefixLayers(shortcut, `${at}[1][2]`).slice(0, 1), () => `${row.name}.${j}.downsample`),
        ];
      });
    case 'lastConv': {
      // The last conv is only known when the whole list was read.
      const mods = m.get('modules');
      if (!Array.isArray(mods) || !complete(mods)) return [];
      const kids = prefixChildren(m);
      const at = kids.map((c) => CONVS.has(c.typename)).lastIndexOf(true);
      return at < 0 ? [] : [[kids[at]!, `${row.path}[${at + 1}]`, row.name]];
    }
    default:
      return [];
  }
}

/** Resolves a layout path, or undefined when the file ended before it. */
function prefixResolve(root: T7Object, path: string): T7Object | undefined {
  try {
    return resolve(root, path);
  } catch (err) {
    if (err instanceof FoveaError) return undefined;
    throw err;
  }
}

/**
 * What a Torch7 checkpoint that may end early holds, mapped onto the naming
 * contract: for every conv/Linear/fixed affine reached, its Torch module path,
 * the contract layer it maps to (through the same layout table as convertT7;
 * DeepMask and SharpMask), and the headers of the tensors read. A tensor whose
 * storage the file cut off is reported with dataRead false, and a weight or
 * bias never reached is listed in `missing`: nothing is claimed that the file
 * does not hold. A complete file is described too. A malformed (not merely
 * truncated) file still throws ERR_WEIGHTS.
 */
export function describeT7Prefix(input: Uint8Array | string, options: ConvertOptions = {}): PrefixDescription {
  const source = options.source ?? (typeof input === 'string' ? input : 'checkpoint');
  const bytes = typeof input === 'string' ? fs.readFileSync(input) : input;
  const read = readT7Prefix(bytes, { longSize: 'auto' });
  const complete = (o: object): boolean => !read.incomplete.has(o);
  const top = read.value;
  const modelValue = top instanceof Map ? top.get('model') : top;
  const model = isModule(modelValue) ? modelValue : null;
  const configValue = top instanceof Map ? top.get('config') : undefined;
  const config =
    configValue instanceof Map && complete(configValue)
      ? Object.fromEntries([...configValue].filter(([k]) => typeof k === 'string'))
      : null;

  const modules: PrefixModule[] = [];
  const seen = new Set<T7Object>();
  const describe = (m: T7Object, torchPath: string, contractName: string | null): void => {
    seen.add(m);
    const tensors: PrefixTensor[] = [];
    if (m.fields instanceof Map) {
      for (const [key, v] of m.fields) {
        if (typeof key !== 'string' || !(v instanceof T7Tensor)) continue;
        const named = contractName !== null && (key === 'weight' || key === 'bias') && !AFFINES.has(m.typename);
        tensors.push({
          field: key,
          contractName: named ? `${contractName}.${key}` : null,
          shape: [...v.shape],
          strides: [...v.strides],
          offset: v.offset,
          dataRead: v.storage === null ? v.numel === 0 : !v.storage.truncated,
          storageDeclaredLength: v.storage === null ? 0 : v.storage.declaredLength,
        });
      }
    }
    const missing =
      contractName === null || AFFINES.has(m.typename)
        ? []
        : ['weight', 'bias']
            .filter((k) => !tensors.some((t) => t.field === k && t.dataRead))
            // A bias-less conv in a complete module: the converter emits zeros, nothing is missing.
            .filter((k) => !(k === 'bias' && complete(m) && m.get('bias') === null))
            .map((k) => `${contractName}.${k}`);
    modules.push({ torchPath, typename: m.typename, contractName, complete: complete(m), tensors, missing });
  };

  if (model !== null) {
    const layout = model.typename === 'nn.DeepMask' ? LAYOUT_DEEPMASK : model.typename === 'nn.SharpMask' ? LAYOUT_SHARPMASK : [];
    for (const row of layout) {
      const m = prefixResolve(model, row.path);
      if (m === undefined) continue;
      for (const [layer, path, name] of prefixRowLayers(m, row, complete)) if (!seen.has(layer)) describe(layer, path, name);
    }
    // Anything else with parameters that was reached: reported, not mapped.
    const visited = new Set<object>();
    const walk = (v: T7Value | undefined, path: string): void => {
      if (v === null || v === undefined || typeof v !== 'object' || v instanceof Uint8Array || visited.has(v)) return;
      visited.add(v);
      if (v instanceof T7Object) {
        const params = CONVS.has(v.typename) || LINEARS.has(v.typename) || AFFINES.has(v.typename);
        if (params && !seen.has(v)) describe(v, path, null);
        if (v.fields instanceof Map) for (const [k, x] of v.fields) walk(x, k === 'modules' ? path : `${path}.${String(k)}`);
        else walk(v.fields, path);
      } else if (Array.isArray(v)) {
        v.forEach((x, i) => walk(x, `${path}[${i + 1}]`));
      } else if (v instanceof Map) {
        for (const [k, x] of v) walk(x, `${path}{${String(k)}}`);
      }
    };
    if (model.fields instanceof Map) for (const [k, x] of model.fields) walk(x, String(k));
  }
  return {
    source,
    endOffset: read.endOffset,
    complete: read.complete,
    ...(read.error !== undefined ? { error: read.error } : {}),
    model: model?.typename ?? null,
    config,
    modules,
  };
}
