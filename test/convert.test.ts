import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { convertFile, convertT7 } from '../lib/convert';
import { describeT7Prefix } from '../lib/convert';
import { inspectModel } from '../lib/model';
import { FoveaError } from '../lib/errors';
import { CONFIG_METADATA_KEY, readSafetensors } from '../lib/safetensors';
import { itShared } from './shared-fixtures';
import { W7Tensor, W7Torch, writeT7, type W7Value } from './t7-writer';

// Deterministic pseudo-random numbers (the tests must not depend on Math.random).
let seed = 1;
function rand(): number {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed / 2 ** 31;
}
function randn(n: number, scale = 0.5): Float32Array {
  return Float32Array.from({ length: n }, () => (rand() - 0.5) * 2 * scale);
}
const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

const mod = (typename: string, fields: Record<string, W7Value> = {}): W7Torch => new W7Torch(typename, fields);
const seq = (...modules: W7Torch[]): W7Torch => mod('nn.Sequential', { modules });
const t = (shape: number[], data = randn(numel(shape))): W7Tensor => W7Tensor.of(shape, data, 'torch.CudaTensor');

function conv(cout: number, cin: number, k: number, bias = true): W7Torch {
  return mod('cudnn.SpatialConvolution', {
    nInputPlane: cin,
    nOutputPlane: cout,
    kW: k,
    kH: k,
    weight: t([cout, cin, k, k]),
    bias: bias ? t([cout]) : null,
    gradWeight: t([cout, cin, k, k]),
  });
}
function bn(c: number): W7Torch {
  return mod('nn.SpatialBatchNormalization', {
    running_mean: t([c]),
    running_var: t([c], Float32Array.from(randn(c), (x) => 0.5 + Math.abs(x))),
    weight: t([c]),
    bias: t([c]),
    eps: 1e-5,
  });
}
// inn.ConstAffine, the BN-turned-fixed module of the current modelUtils.lua.
const affine = (c: number): W7Torch => mod('inn.ConstAffine', { a: t([c]), b: t([c]) });
const relu = (): W7Torch => mod('cudnn.ReLU');
const symPad = (p: number): W7Torch => mod('nn.SpatialSymmetricPadding', { pad_l: p, pad_r: p, pad_t: p, pad_b: p });
const linear = (out: number, cin: number): W7Torch => mod('nn.Linear', { weight: t([out, cin]), bias: t([out]) });

/** Released post_add bottleneck (spec §1.1): affine after the sum, bare projection conv. */
function bottleneck(cin: number, w: number, first: boolean): W7Torch {
  const main = seq(conv(w, cin, 1, false), affine(w), relu(), symPad(1), conv(w, w, 3, false), bn(w), relu(), conv(4 * w, w, 1, false));
  const shortcut = first ? conv(4 * w, cin, 1, false) : mod('nn.Identity');
  return seq(mod('nn.ConcatTable', { modules: [main, shortcut] }), mod('nn.CAddTable'), affine(4 * w), relu());
}

/** DeepMask ResNet-50 trunk of §1.1 (12 modules) at base width w. */
function trunk(w: number, P: number, D: number): W7Torch {
  let cin = w;
  const layers = [3, 4, 6].map((n, l) => {
    const wl = w * 2 ** l;
    const blocks = Array.from({ length: n }, (_, j) => bottleneck(j === 0 ? cin : 4 * wl, wl, j === 0));
    cin = 4 * wl;
    return seq(...blocks);
  });
  return seq(
    seq(symPad(3), conv(w, 3, 7)),
    bn(w),
    relu(),
    mod('nn.SpatialMaxPooling', { kW: 3, kH: 3, dW: 2, dH: 2 }),
    ...layers,
    mod('nn.SpatialZeroPadding', { pad_l: -1, pad_r: -1, pad_t: -1, pad_b: -1 }),
    conv(P, cin, 1),
    relu(),
    mod('nn.View'),
    linear(D, P * 100),
  );
}

// Reduced widths of the d16 goldens (NAMING.md, `export.py tests/fixtures/golden/deepmask-resnet50-d16.safetensors`).
const W = 4;
const P = 8;
const D = 16;
const H = 64;
const TRAIN_CONFIG = { iSz: 160, oSz: 56, gSz: 112, km: 32, ks: 32, batch: 32 };

function deepmask(): { tree: W7Value; trunk: W7Torch } {
  const tr = trunk(W, P, D);
  const model = mod('nn.DeepMask', {
    trunk: tr,
    maskBranch: seq(seq(linear(56 * 56, D)), seq(mod('nn.Copy'), mod('nn.View'), mod('nn.SpatialReSamplingEx'))),
    scoreBranch: seq(mod('nn.Dropout'), linear(H, D), mod('nn.Threshold'), mod('nn.Dropout'), linear(1, H)),
    fSz: 10,
  });
  return { tree: { config: TRAIN_CONFIG, model }, trunk: tr };
}

function sharpmask(): W7Value {
  const { tree } = deepmask();
  const dm = (tree as { model: W7Torch }).model.fields as Record<string, W7Value>;
  const km = 32;
  const nhu2 = [64, 64, 64, 32];
  const taps = [16 * W, 8 * W, 4 * W, W];
  const neths: W7Torch[] = [];
  const netvs = new Map<W7Value, W7Value>([[0, seq(linear(km * 100, D), mod('nn.View'))]]);
  const refs = new Map<W7Value, W7Value>([[0, netvs.get(0)!]]);
  for (let i = 1; i <= 4; i++) {
    const k = km / 2 ** (i - 1);
    const crop = mod('nn.SpatialZeroPadding', { pad_l: -2 });
    const h = seq(crop, symPad(1), conv(nhu2[i - 1]!, taps[i - 1]!, 3), relu(), symPad(1), conv(k, nhu2[i - 1]!, 3), relu(), symPad(1), conv(k / 2, k, 3));
    const v = seq(symPad(1), conv(k, k, 3), relu(), symPad(1), conv(k / 2, k, 3));
    neths.push(h);
    netvs.set(i, v);
    const tail = i === 4 ? [symPad(1), conv(1, 2, 3), mod('nn.View')] : [];
    refs.set(i, seq(mod('nn.ParallelTable', { modules: [h, v] }), mod('nn.CAddTable'), relu(), mod('nn.SpatialUpSamplingNearest'), ...tail));
  }
  const model = mod('nn.SharpMask', {
    trunk: dm['trunk']!,
    scoreBranch: dm['scoreBranch']!,
    maskBranchDM: dm['maskBranch']!,
    refs,
    neths,
    netvs,
    fSz: 10,
    km,
    ks: km,
  });
  return { config: TRAIN_CONFIG, model };
}

/** Name → shape for the d16 configs, as printed by `python3 tools/reference/export.py --describe`. */
function contractShapes(sharp: boolean): Map<string, number[]> {
  const file = path.join(__dirname, 'fixtures', 'golden', `${sharp ? 'sharpmask' : 'deepmask'}-resnet50-d16.safetensors`);
  const st = readSafetensors(fs.readFileSync(file));
  return new Map([...st.tensors].map(([k, v]) => [k, [...v.shape]]));
}

function expectWeightsError(fn: () => unknown, pattern: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(FoveaError);
  expect((err as FoveaError).code).toBe('ERR_WEIGHTS');
  expect((err as FoveaError).message).toMatch(pattern);
}

describe('convert: truncated real checkpoint', () => {
  itShared('fails with ERR_WEIGHTS naming where the file ends', 't7/deepmask-truncated/model.t7', (file) => {
    const size = fs.statSync(file).size;
    expectWeightsError(() => convertT7(file), new RegExp(`file ends at byte ${size}\\b.*torch\\.CudaStorage declares 526337 elements.*at byte 1300`));
  });
});

describe('convert: what the truncated real checkpoint still holds (describeT7Prefix)', () => {
  itShared('its readable module tree maps onto our DeepMask: scoreBranch[2] is score.fc1, shapes agree with the contract', 't7/deepmask-truncated/model.t7', (file) => {
    const d = describeT7Prefix(file);
    expect(d.complete).toBe(false);
    expect(d.endOffset).toBe(748165);
    expect(d.error?.code).toBe('ERR_WEIGHTS');
    expect(d.error?.message).toMatch(/torch\.CudaStorage declares 526337 elements .* \(at byte 1300\)/);
    expect(d.model).toBe('nn.DeepMask');
    expect(d.config).toMatchObject({ iSz: 160, oSz: 56, gSz: 112, km: 32, ks: 32 });
    // Only one parameterised module is reached (the Dropout before it has no parameters).
    expect(d.modules).toHaveLength(1);
    const [fc1] = d.modules;
    expect(fc1).toMatchObject({ torchPath: 'scoreBranch[2]', typename: 'nn.Linear', contractName: 'score.fc1', complete: false });
    // The file ends inside the Linear's FIRST field, gradBias: its header is read, its data is not,
    // and weight/bias come after the cut, so nothing is claimed for them.
    expect(fc1!.tensors).toEqual([
      { field: 'gradBias', contractName: null, shape: [1024], strides: [1], offset: 524288, dataRead: false, storageDeclaredLength: 526337 },
    ]);
    expect(fc1!.missing).toEqual(['score.fc1.weight', 'score.fc1.bias']);

    // Released contract shapes, from `python3 tools/reference/export.py --describe deepmask-resnet50`
    // (NAMING.md: score.fc1 is [H, D], score.fc2 is [1, H], H = score_hidden = 1024, D = embed_dim = 512):
    //   score.fc1.weight [1024, 512], score.fc1.bias [1024], score.fc2.weight [1, 1024], score.fc2.bias [1].
    const H = 1024;
    const D = 512;
    // nn.Linear's gradBias has the bias's shape: the Linear has H outputs, as score.fc1.bias [1024].
    expect(fc1!.tensors[0]!.shape).toEqual([H]);
    // The storage is the score branch's flattened gradParameters (torch getParameters): gradBias sits
    // after score.fc1's [1024, 512] gradWeight, and the storage holds exactly the contract's score.fc1
    // and score.fc2 element counts. So the [1024, 512] weight is consistent with the file, though its
    // header is never read (it is not reported as read above).
    expect(fc1!.tensors[0]!.offset).toBe(H * D);
    expect(fc1!.tensors[0]!.storageDeclaredLength).toBe(H * D + H + 1 * H + 1);
  });

  itShared('the strict convert still refuses it with ERR_WEIGHTS naming where the file ends', 't7/deepmask-truncated/model.t7', (file) => {
    expectWeightsError(() => convertT7(file), /\(file ends at byte 748165\) cannot be read: .*at byte 1300/);
  });

  it('a synthetic DeepMask cut inside score.fc1: fc1 header-only, what precedes the cut fully read, nothing after it', () => {
    const { tree } = deepmask();
    const bytes = writeT7(tree);
    const full = describeT7Prefix(bytes);
    expect(full.complete).toBe(true);
    const contract = contractShapes(false);
    // Complete file: every mapped weight/bias is read and has the contract's shape.
    const named = full.modules.flatMap((m) => m.tensors.filter((t) => t.contractName !== null));
    for (const t of named) expect(t.shape, t.contractName!).toEqual(t.contractName!.startsWith('trunk.embed.weight') ? [D, P * 100] : contract.get(t.contractName!));
    expect(full.modules.flatMap((m) => m.missing)).toEqual([]);
    const names = new Set(named.map((t) => t.contractName));
    for (const n of ['trunk.conv1.weight', 'trunk.layer3.5.conv3.weight', 'trunk.layer1.0.downsample.weight', 'mask.fc.bias', 'score.fc1.weight', 'score.fc2.bias']) {
      expect(names.has(n), n).toBe(true);
    }
    // Cut in the middle of score.fc1's weight data, given values no other tensor has so that its bytes can be found.
    const scoreBranch = ((tree as { model: W7Torch }).model.fields as Record<string, W7Torch>)['scoreBranch']!;
    const fc1 = (scoreBranch.fields as { modules: W7Torch[] }).modules[1]!;
    const data = Float32Array.from({ length: H * D }, (_, i) => 1000 + i);
    (fc1.fields as Record<string, W7Value>)['weight'] = W7Tensor.of([H, D], data, 'torch.CudaTensor');
    const cutBytes = writeT7(tree);
    const at = Buffer.from(cutBytes).indexOf(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    expect(at).toBeGreaterThan(0);
    const cut = describeT7Prefix(cutBytes.subarray(0, at + 8));
    expect(cut.complete).toBe(false);
    expect(cut.endOffset).toBe(at + 8);
    const fc1Desc = cut.modules.find((m) => m.contractName === 'score.fc1')!;
    expect(fc1Desc.tensors.find((t) => t.field === 'weight')).toMatchObject({ contractName: 'score.fc1.weight', shape: [H, D], dataRead: false });
    expect(fc1Desc.missing).toEqual(['score.fc1.weight', 'score.fc1.bias']);
    expect(cut.modules.some((m) => m.contractName === 'score.fc2')).toBe(false);
    // Everything mapped before the cut (the trunk, mask.fc) is there, fully read.
    const before = (d: typeof full): Array<[string | null, readonly string[]]> =>
      d.modules.filter((m) => m.contractName !== null && !m.contractName.startsWith('score.')).map((m) => [m.contractName, m.missing]);
    expect(before(cut)).toEqual(before(full).map(([n]) => [n, []]));
    expect(before(cut).length).toBeGreaterThan(40);
  });
});

describe('convert: synthetic checkpoints (d16 widths, released structure)', () => {
  it('DeepMask: every name and shape matches the contract, and the config is filled in', () => {
    const { tensors, config } = convertT7(writeT7(deepmask().tree));
    const want = contractShapes(false);
    expect(new Map([...tensors].map(([k, v]) => [k, [...v.shape]]))).toEqual(want);
    expect(config).toMatchObject({ architecture: 'deepmask', base_width: W, embed_dim: D, oSz: 56, iSz: 160, width_div: 16 });
  });

  it('SharpMask: every name and shape matches the contract', () => {
    const { tensors, config } = convertT7(writeT7(sharpmask()));
    expect(new Map([...tensors].map(([k, v]) => [k, [...v.shape]]))).toEqual(contractShapes(true));
    expect(config).toMatchObject({ architecture: 'sharpmask', km: 32, ks: 32 });
  });

  it('folds BN into conv1 exactly: folded conv == BN(conv(x))', () => {
    const { tree, trunk: tr } = deepmask();
    const { tensors } = convertT7(writeT7(tree));
    const mods = (tr.fields as { modules: W7Torch[] }).modules;
    const c = ((mods[0]!.fields as { modules: W7Torch[] }).modules[1]!.fields) as Record<string, W7Tensor>;
    const b = mods[1]!.fields as Record<string, W7Tensor | number>;
    const x = randn(3 * 7 * 7);
    const dot = (w: Float32Array, o: number): number => x.reduce((s, xi, i) => s + xi * w[o * x.length + i]!, 0);
    for (let o = 0; o < W; o++) {
      const y = dot(c['weight']!.storage.data, o) + c['bias']!.storage.data[o]!;
      const get = (k: string): number => (b[k] as W7Tensor).storage.data[o]!;
      const ref = ((y - get('running_mean')) / Math.sqrt(get('running_var') + 1e-5)) * get('weight') + get('bias');
      const folded = dot(tensors.get('trunk.conv1.weight')!.data, o) + tensors.get('trunk.conv1.bias')!.data[o]!;
      expect(folded).toBeCloseTo(ref, 5);
    }
  });

  it('post-add affine: folded into conv3 and the projection (shift once), kept on identity blocks', () => {
    const { tree, trunk: tr } = deepmask();
    const { tensors } = convertT7(writeT7(tree));
    const block = (tr.fields as { modules: W7Torch[] }).modules[4]!.fields as { modules: W7Torch[] };
    const b0 = block.modules[0]!.fields as { modules: W7Torch[] };
    const post = b0.modules[2]!.fields as Record<string, W7Tensor>;
    const [main, proj] = (b0.modules[0]!.fields as { modules: W7Torch[] }).modules;
    const conv3 = ((main!.fields as { modules: W7Torch[] }).modules[7]!.fields as Record<string, W7Tensor>)['weight']!;
    const projW = (proj!.fields as Record<string, W7Tensor>)['weight']!;
    const a = post['a']!.storage.data;
    const shift = post['b']!.storage.data;
    const per = 4; // conv3 is [16, 4, 1, 1], the projection [16, 4, 1, 1]
    for (let o = 0; o < 4 * W; o++) {
      expect(tensors.get('trunk.layer1.0.conv3.weight')!.data[o * per]).toBeCloseTo(a[o]! * conv3.storage.data[o * per]!, 6);
      expect(tensors.get('trunk.layer1.0.downsample.weight')!.data[o * per]).toBeCloseTo(a[o]! * projW.storage.data[o * per]!, 6);
      // No checkpoint bias: the shift goes once, on the main path.
      expect(tensors.get('trunk.layer1.0.conv3.bias')!.data[o]).toBeCloseTo(shift[o]!, 6);
      expect(tensors.get('trunk.layer1.0.downsample.bias')!.data[o]).toBe(0);
    }
    const b1 = (block.modules[1]!.fields as { modules: W7Torch[] }).modules[2]!.fields as Record<string, W7Tensor>;
    expect([...tensors.get('trunk.layer1.1.post_affine.scale')!.data]).toEqual([...b1['a']!.storage.data]);
  });

  it('convertFile writes a safetensors file with the config in its metadata (f16 too)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fovea-convert-'));
    const input = path.join(dir, 'model.t7');
    fs.writeFileSync(input, writeT7(deepmask().tree));
    for (const dtype of ['F32', 'F16'] as const) {
      const out = path.join(dir, `out-${dtype}.safetensors`);
      convertFile(input, out, { dtype });
      const st = readSafetensors(fs.readFileSync(out));
      expect(st.tensors.get('trunk.embed.weight')!.shape).toEqual([D, P, 10, 10]);
      expect(st.tensors.get('trunk.embed.weight')!.dtype).toBe(dtype);
      expect(JSON.parse(st.metadata[CONFIG_METADATA_KEY]!)).toMatchObject({ architecture: 'deepmask', format_version: 1 });
    }
    fs.rmSync(dir, { recursive: true });
  });
});

describe('convert: the native loaders accept what it writes', () => {
  it.each([
    ['deepmask', () => deepmask().tree],
    ['sharpmask', () => sharpmask()],
  ])('%s: converted file loads and validates in the C++ model', async (arch, tree) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fovea-convert-'));
    try {
      const input = path.join(dir, 'model.t7');
      const out = path.join(dir, 'model.safetensors');
      fs.writeFileSync(input, writeT7(tree()));
      convertFile(input, out, { dtype: 'F32' });
      const summary = await inspectModel(out);
      expect(summary.architecture).toBe(arch);
      expect(summary.trunk).toBe('resnet50');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('convert: hostile and mismatched trees', () => {
  it('a wrong weight shape names the module path', () => {
    const { tree, trunk: tr } = deepmask();
    (tr.fields as { modules: W7Torch[] }).modules[0] = seq(symPad(3), conv(W, 3, 5));
    expectWeightsError(() => convertT7(writeT7(tree)), /^convert: trunk\[1\]\[2\]: trunk\.conv1\.weight has shape \[4, 3, 5, 5\], the contract wants \[4, 3, 7, 7\]$/);
  });

  it('a conv whose input channels do not chain names the block', () => {
    const { tree, trunk: tr } = deepmask();
    const layer2 = (tr.fields as { modules: W7Torch[] }).modules[5]!.fields as { modules: W7Torch[] };
    layer2.modules[1] = bottleneck(4 * 8 * W, 8 * W, false);
    expectWeightsError(() => convertT7(writeT7(tree)), /trunk\[6\]\[2\]\[1\]\[1\]\[1\]: trunk\.layer2\.1\.conv1\.weight has shape/);
  });

  it('a missing module names its path', () => {
    const { tree, trunk: tr } = deepmask();
    (tr.fields as { modules: W7Torch[] }).modules.length = 10;
    expectWeightsError(() => convertT7(writeT7(tree)), /trunk\[12\]: missing module/);
  });

  it('an affine with the wrong channel count names the affine', () => {
    const { tree, trunk: tr } = deepmask();
    (tr.fields as { modules: W7Torch[] }).modules[1] = bn(W + 1);
    expectWeightsError(() => convertT7(writeT7(tree)), /trunk\[2\]: affine of 5 channels after trunk\[1\]\[2\]/);
  });

  it('an unknown top-level layout or model class is refused', () => {
    expectWeightsError(() => convertT7(writeT7({ weights: [1, 2] })), /unknown top-level layout/);
    expectWeightsError(() => convertT7(writeT7({ model: mod('nn.Sequential', { modules: [] }) })), /unknown model class nn\.Sequential/);
  });

  it('an unexpected module with parameters inside a block is refused', () => {
    const { tree, trunk: tr } = deepmask();
    (tr.fields as { modules: W7Torch[] }).modules[0] = seq(symPad(3), conv(W, 3, 7), mod('nn.SpatialFullConvolution'));
    expectWeightsError(() => convertT7(writeT7(tree)), /trunk\[1\]\[3\]: unexpected module nn\.SpatialFullConvolution/);
  });
});

// ---------------------------------------------------------------------------
// MultiPathNet ResNet-18 integral (resnet18_integral_coco.t7). The tree follows
// the multipathnet spec §7.3 (derived there from models/resnet.lua and
// models/model_utils.lua); no real checkpoint is available, so these trees are
// the only check of the module layout.

const MW = 4; // base width of the golden multipathnet-resnet18-d16 (64 / 16)

/** fb.resnet.torch BasicBlock after BNtoFixed: ConstAffine after each conv and on the projection shortcut. */
function basicBlock(cin: number, w: number, norm: () => W7Torch = () => affine(w)): W7Torch {
  const main = seq(conv(w, cin, 3, false), norm(), relu(), conv(w, w, 3, false), norm());
  const shortcut = cin !== w ? seq(conv(w, cin, 1, false), norm()) : mod('nn.Identity');
  return seq(mod('nn.ConcatTable', { modules: [main, shortcut] }), mod('nn.CAddTable'), relu());
}

/** layer1 block inside NoBackprop: BN folded into the convs at build time (foldBatchNorm removed it). */
function foldedBlock(w: number): W7Torch {
  const main = seq(conv(w, w, 3, true), relu(), conv(w, w, 3, true));
  return seq(mod('nn.ConcatTable', { modules: [main, mod('nn.Identity')] }), mod('nn.CAddTable'), relu());
}

interface MpnParts {
  root: W7Torch;
  early: W7Torch;
  features: W7Torch;
  layer4: W7Torch;
  heads: W7Torch;
  bboxNorm: W7Torch;
}

function multipathnet(): MpnParts {
  const w = MW;
  const early = seq(conv(w, 3, 7, true), relu(), mod('nn.SpatialMaxPooling', { kW: 3, kH: 3, dW: 2, dH: 2, padW: 1, padH: 1 }), seq(foldedBlock(w), foldedBlock(w)));
  const features = seq(mod('nn.NoBackprop', { modules: [early] }), seq(basicBlock(w, 2 * w), basicBlock(2 * w, 2 * w)), seq(basicBlock(2 * w, 4 * w), basicBlock(4 * w, 4 * w)));
  const layer4 = seq(basicBlock(4 * w, 8 * w), basicBlock(8 * w, 8 * w));
  const classifier = seq(layer4, mod('cudnn.SpatialAveragePooling', { kW: 7, kH: 7, dW: 1, dH: 1 }), mod('nn.View', { size: [8 * w] }));
  const heads = mod('nn.ConcatTable', {
    modules: [mod('nn.ConcatTable', { modules: Array.from({ length: 6 }, () => linear(81, 8 * w)) }), linear(324, 8 * w)],
  });
  const softmaxes = mod('nn.ParallelTable', { modules: Array.from({ length: 6 }, () => seq(mod('nn.SoftMax'), mod('nn.View'))) });
  const modeSwitch = mod('nn.ModeSwitch', {
    modules: [
      mod('nn.ParallelTable', { modules: [mod('nn.SelectTable', { index: 1 }), mod('nn.Identity')] }),
      seq(mod('nn.ParallelTable', { modules: [seq(softmaxes, mod('nn.JoinTable'), mod('nn.Mean')), mod('nn.Identity')] })),
    ],
  });
  const bboxNorm = mod('nn.BBoxNorm', { mean: t([1, 4], Float32Array.of(0.01, -0.02, 0.03, -0.04)), std: t([1, 4], Float32Array.of(0.1, 0.11, 0.2, 0.21)) });
  const root = mod('nn.Sequential', {
    modules: [
      // utils.makeDataParallel with train_nGPU = 1 wraps features and classifier in a Sequential.
      mod('nn.ParallelTable', { modules: [seq(features), mod('nn.Identity')] }),
      mod('inn.ROIPooling', { W: 14, H: 14, spatial_scale: 1 / 16, v2: true }),
      seq(classifier),
      heads,
      modeSwitch,
      mod('nn.ParallelTable', { modules: [mod('nn.Identity'), bboxNorm] }),
    ],
    noSoftMax: true,
  });
  return { root, early, features, layer4, heads, bboxNorm };
}

function goldenMultiPathNet(): { shapes: Map<string, number[]>; config: Record<string, unknown> } {
  const st = readSafetensors(fs.readFileSync(path.join(__dirname, 'fixtures', 'golden', 'multipathnet-resnet18-d16.safetensors')));
  return {
    shapes: new Map([...st.tensors].map(([k, v]) => [k, [...v.shape]])),
    config: JSON.parse(st.metadata[CONFIG_METADATA_KEY]!) as Record<string, unknown>,
  };
}

const shapesOf = (tensors: Map<string, { shape: readonly number[] }>): Map<string, number[]> =>
  new Map([...tensors].map(([k, v]) => [k, [...v.shape]]));
const modulesOf = (m: W7Torch): W7Torch[] => (m.fields as { modules: W7Torch[] }).modules;
const fieldsOf = (m: W7Torch): Record<string, W7Tensor> => m.fields as Record<string, W7Tensor>;

describe('convert: MultiPathNet ResNet-18 integral (synthetic, d16 widths, spec §7.3 structure)', () => {
  it('every name and shape matches the golden, in its order, and the config agrees with it', () => {
    const { tensors, config } = convertT7(writeT7(multipathnet().root));
    const golden = goldenMultiPathNet();
    expect(shapesOf(tensors)).toEqual(golden.shapes);
    expect([...tensors.keys()]).toEqual([...golden.shapes.keys()]);
    const keys = [
      'architecture', 'variant', 'trunk', 'base_width', 'feature_dim', 'width_div', 'num_classes', 'class_names',
      'coco_category_ids', 'integral_heads', 'integral_thresholds', 'roi_pool', 'roi_pool_version', 'roi_scale',
      'mean', 'std', 'pad_mode', 'block_layout', 'conv_bias', 'shortcut_affine', 'prefold_layer1',
      'test_scale', 'test_max_size', 'nms_threshold', 'max_detections', 'format_version',
    ];
    for (const k of keys) expect([k, config[k]]).toEqual([k, golden.config[k]]);
    // BBoxNorm mean/std come from the checkpoint (as tensors and in the config).
    expect(config['bbox_norm_mean']).toEqual([...Float32Array.of(0.01, -0.02, 0.03, -0.04)]);
    expect([...tensors.get('bbox_norm.std')!.data]).toEqual([...Float32Array.of(0.1, 0.11, 0.2, 0.21)]);
  });

  it('reads roi_pool, roi_scale and the v2 flag from inn.ROIPooling (no v2 field: v1 kernel)', () => {
    const { root } = multipathnet();
    modulesOf(root)[1] = mod('inn.ROIPooling', { W: 13, H: 14, spatial_scale: 0.125 });
    const { config } = convertT7(writeT7({ model: root }));
    expect(config).toMatchObject({ roi_pool: [14, 13], roi_scale: 0.125, roi_pool_version: 1 });
  });

  it('folds a ConstAffine into its conv, and a BatchNorm left after conv1, exactly', () => {
    const parts = multipathnet();
    // An un-surgered conv1: bias-free conv followed by a real BN (foldBatchNorm not applied).
    const bn1 = bn(MW);
    const c1 = conv(MW, 3, 7, false);
    modulesOf(parts.early).splice(0, 1, c1, bn1);
    const { tensors, config } = convertT7(writeT7(parts.root));
    expect(config['prefold_layer1']).toBe(false);
    const check = (cw: W7Torch, aff: (o: number, y: number) => number, name: string, n: number, cout: number): void => {
      const x = randn(n);
      const w = fieldsOf(cw)['weight']!.storage.data;
      const b = fieldsOf(cw)['bias'];
      for (let o = 0; o < cout; o++) {
        const y = x.reduce((s, xi, i) => s + xi * w[o * n + i]!, 0) + (b ? b.storage.data[o]! : 0);
        const folded = x.reduce((s, xi, i) => s + xi * tensors.get(`${name}.weight`)!.data[o * n + i]!, 0) + tensors.get(`${name}.bias`)!.data[o]!;
        expect(folded).toBeCloseTo(aff(o, y), 5);
      }
    };
    const g = (m: W7Torch, k: string, o: number): number => fieldsOf(m)[k]!.storage.data[o]!;
    check(c1, (o, y) => ((y - g(bn1, 'running_mean', o)) / Math.sqrt(g(bn1, 'running_var', o) + 1e-5)) * g(bn1, 'weight', o) + g(bn1, 'bias', o), 'trunk.conv1', 3 * 49, MW);
    // layer2.0 main path: conv, ConstAffine (y = a·x + b).
    const main = modulesOf(modulesOf(modulesOf(modulesOf(parts.features)[1]!)[0]!)[0]!)[0]!;
    const [conv2, aff2] = modulesOf(main);
    check(conv2!, (o, y) => g(aff2!, 'a', o) * y + g(aff2!, 'b', o), 'trunk.layer2.0.conv1', MW * 9, 2 * MW);
    // layer1 (pre-folded at build time) is copied as is.
    const l1conv = modulesOf(modulesOf(modulesOf(modulesOf(modulesOf(parts.early)[4]!)[0]!)[0]!)[0]!)[0]!;
    expect([...tensors.get('trunk.layer1.0.conv1.bias')!.data]).toEqual([...fieldsOf(l1conv)['bias']!.storage.data]);
  });

  it('the native loader accepts the converted file as a multipathnet', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fovea-convert-'));
    try {
      const input = path.join(dir, 'model.t7');
      const out = path.join(dir, 'model.safetensors');
      fs.writeFileSync(input, writeT7(multipathnet().root));
      convertFile(input, out, { dtype: 'F32' });
      const summary = await inspectModel(out);
      expect(summary.architecture).toBe('multipathnet');
      expect(summary.trunk).toBe('resnet18');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('looks through NoBackprop v1 (`.inner`) and unwrapped features/classifier', () => {
    const parts = multipathnet();
    modulesOf(parts.features)[0] = mod('nn.NoBackprop', { inner: parts.early });
    const top = modulesOf(parts.root);
    modulesOf(top[0]!)[0] = parts.features;
    top[2] = modulesOf(top[2]!)[0]!;
    expect(shapesOf(convertT7(writeT7(parts.root)).tensors)).toEqual(goldenMultiPathNet().shapes);
  });
});

describe('convert: MultiPathNet mismatches name the module path', () => {
  it('a wrong conv shape in layer4', () => {
    const parts = multipathnet();
    modulesOf(parts.layer4)[0] = basicBlock(4 * MW, 8 * MW + 1);
    expectWeightsError(() => convertT7(writeT7(parts.root)), /^convert: \[3\]\[1\]\[1\]\[1\]\[1\]\[1\]\[1\]: tower\.layer4\.0\.conv1\.weight has shape \[33, 16, 3, 3\], the contract wants \[32, 16, 3, 3\]$/);
  });

  it('a missing integral head', () => {
    const parts = multipathnet();
    modulesOf(modulesOf(parts.heads)[0]!).pop();
    expectWeightsError(() => convertT7(writeT7(parts.root)), /^convert: \[4\]\[1\]: expected 6 integral classifier Linears, found 5$/);
  });

  it('a classifier with the wrong class count (VOC: 21)', () => {
    const parts = multipathnet();
    modulesOf(modulesOf(parts.heads)[0]!)[2] = linear(21, 8 * MW);
    expectWeightsError(() => convertT7(writeT7(parts.root)), /^convert: \[4\]\[1\]\[3\]: cls\.2\.weight has shape \[21, 32\], the contract wants \[81, 32\]$/);
  });

  it('a missing box head, BBoxNorm, or a malformed BBoxNorm', () => {
    let parts = multipathnet();
    modulesOf(parts.heads).pop();
    expectWeightsError(() => convertT7(writeT7(parts.root)), /^convert: \[4\]\[2\]: missing module$/);
    parts = multipathnet();
    modulesOf(parts.root).pop();
    expectWeightsError(() => convertT7(writeT7(parts.root)), /^convert: \[5\]: no nn\.BBoxNorm after the heads/);
    parts = multipathnet();
    (parts.bboxNorm.fields as Record<string, W7Value>)['std'] = t([1, 81 * 4]);
    expectWeightsError(() => convertT7(writeT7(parts.root)), /^convert: \[6\]\[2\]: nn\.BBoxNorm\.std has 324 elements, expected 4$/);
  });

  it('a missing residual layer in the features', () => {
    const parts = multipathnet();
    modulesOf(parts.features).pop();
    expectWeightsError(() => convertT7(writeT7(parts.root)), /^convert: \[1\]\[1\]: expected 3 residual layers \(layer1\.\.layer3\), found 2$/);
  });
});
