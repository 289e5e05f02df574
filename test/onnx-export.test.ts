/**
 * ONNX export: every part of every golden model is exported, loaded by
 * onnxruntime-node (CPU execution provider) and run on the golden inputs; the
 * outputs must match the PyTorch goldens with the tolerance of the native
 * model tests (test/fixtures/golden/README.md, "Comparison rule").
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { onnx } from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { exportOnnx, exportOnnxFile, ONNX_OPSET, type OnnxPart } from '../lib/onnx-export';
import { readSafetensors, writeSafetensors, type SafetensorsWriteTensor } from '../lib/safetensors';
import { expectFoveaError } from './expect-error';

const golden = path.join(__dirname, 'fixtures', 'golden');
const model = (name: string): string => path.join(golden, `${name}.safetensors`);

/** The io file of a golden model: F16 inputs widened exactly, I64 as numbers. */
function readIo(name: string): { f32(key: string): Float32Array; i64(key: string): number[]; shape(key: string): number[] } {
  const file = readSafetensors(fs.readFileSync(path.join(golden, `${name}-io.safetensors`)));
  const get = (key: string) => {
    const t = file.tensors.get(key);
    if (!t) throw new Error(`${name}-io has no ${key}`);
    return t;
  };
  return {
    f32: (key) => get(key).toFloat32(),
    i64: (key) => Array.from(get(key).toTypedArray() as BigInt64Array, Number),
    shape: (key) => [...get(key).shape],
  };
}

// 2 CPU cores are shared with other work: one thread per session.
const sessionOptions: ort.InferenceSession.SessionOptions = {
  executionProviders: ['cpu'],
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
};

async function run(
  bytes: Uint8Array,
  feeds: Record<string, ort.Tensor>,
  options: ort.InferenceSession.SessionOptions = {},
): Promise<Record<string, ort.Tensor>> {
  const session = await ort.InferenceSession.create(bytes, { ...sessionOptions, ...options });
  try {
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}

const tensor = (data: Float32Array, dims: readonly number[]): ort.Tensor => new ort.Tensor('float32', data, dims);
const data = (t: ort.Tensor | undefined): Float32Array => t!.data as Float32Array;

// Max error per (model, part, output), printed at the end.
const report: string[] = [];
const sizes = new Map<string, number>();

/** README rule: max|ours − golden| ≤ 1e-4 · max(1, max|golden|); returns that relative error. */
function expectClose(what: string, got: Float32Array, want: Float32Array): void {
  expect(got.length, `${what}: element count`).toBe(want.length);
  let diff = 0;
  let scale = 1;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(got[i]! - want[i]!));
    scale = Math.max(scale, Math.abs(want[i]!));
  }
  const rel = diff / scale;
  report.push(`${what}: max rel ${rel.toExponential(2)}`);
  expect(rel, what).toBeLessThanOrEqual(1e-4);
}

/** README rule for probabilities: |ours − golden| ≤ 1e-4 · golden + 1e-7 elementwise. */
function expectCloseProb(what: string, got: Float32Array, want: Float32Array): void {
  expect(got.length).toBe(want.length);
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i]! - want[i]!);
    worst = Math.max(worst, d / (1e-4 * want[i]! + 1e-7));
  }
  report.push(`${what}: max |d| / (1e-4·golden + 1e-7) = ${worst.toFixed(3)}`);
  expect(worst, what).toBeLessThanOrEqual(1);
}

function exported(name: string, part: OnnxPart): Uint8Array {
  const bytes = exportOnnx(model(name), { part });
  sizes.set(`${name} ${part}`, bytes.length);
  return bytes;
}

/** Rows of a [1, D, gh, gw] map at grid cells (image, row, col) → [K, D]. */
function cellsOf(map: Float32Array, d: number, gh: number, gw: number, cells: number[]): Float32Array {
  const k = cells.length / 3;
  const out = new Float32Array(k * d);
  for (let q = 0; q < k; q++) {
    const [n, r, c] = [cells[3 * q]!, cells[3 * q + 1]!, cells[3 * q + 2]!];
    for (let j = 0; j < d; j++) out[q * d + j] = map[((n * d + j) * gh + r) * gw + c]!;
  }
  return out;
}

/** The SharpMask h window of a [1, C, H, W] map at top-left (r, c), side s, zero-filled past the map. */
function windowsOf(map: ort.Tensor, cells: number[], t: number, side: number): ort.Tensor {
  const [, ch, h, w] = map.dims as number[];
  const src = data(map);
  const k = cells.length / 3;
  const out = new Float32Array(k * ch! * side * side);
  for (let q = 0; q < k; q++) {
    const r0 = cells[3 * q + 1]! * t;
    const c0 = cells[3 * q + 2]! * t;
    for (let c = 0; c < ch!; c++) {
      for (let y = 0; y < side && r0 + y < h!; y++) {
        for (let x = 0; x < side && c0 + x < w!; x++) {
          out[((q * ch! + c) * side + y) * side + x] = src[(c * h! + r0 + y) * w! + c0 + x]!;
        }
      }
    }
  }
  return tensor(out, [k, ch!, side, side]);
}

afterAll(() => {
  console.log(`ONNX export vs PyTorch goldens:\n  ${report.join('\n  ')}\nexported sizes:\n  ${[...sizes].map(([k, n]) => `${k}: ${n} bytes`).join('\n  ')}`);
});

const DENSE_MODELS = ['deepmask-resnet50-d16', 'deepmask-resnet18-d16', 'sharpmask-resnet50-d16', 'sharpmask-resnet18-d16'];

describe.each(DENSE_MODELS)('%s', (name) => {
  const io = readIo(name);
  const embedDim = io.shape('output.patch.embedding')[1]!;

  it('deepmask-dense + deepmask-mask-head on the whole image match the goldens', async () => {
    const dense = await run(exported(name, 'deepmask-dense'), {
      image: tensor(io.f32('input.image'), io.shape('input.image')),
    });
    expect(dense['score_logits']!.dims).toEqual([1, 1, 3, 4]);
    expect(dense['embedding']!.dims).toEqual([1, embedDim, 3, 4]);
    expectClose(`${name} deepmask-dense score_logits`, data(dense['score_logits']), io.f32('output.image.score_logits'));
    expectClose(`${name} deepmask-dense embedding`, data(dense['embedding']), io.f32('output.image.embedding'));

    const cells = io.i64('input.locations');
    const e = cellsOf(data(dense['embedding']), embedDim, 3, 4, cells);
    const heads = await run(exported(name, 'deepmask-mask-head'), { embedding: tensor(e, [cells.length / 3, embedDim]) });
    const key = name.startsWith('sharpmask') ? 'output.image.dm_masks' : 'output.image.masks';
    expectClose(`${name} deepmask-mask-head masks`, data(heads['mask_logits']), io.f32(key));
  });

  it('the dense form on 192×192 patches gives the patch outputs at grid cell (1, 1)', async () => {
    // Patch mode crops layer3 12×12 → 10×10 before the 10×10 embed conv; the
    // dense form's 3×3 grid has that same window at its centre. This is also
    // the test of conv1's SymPad(3): the golden image is framed by 80 px of
    // constant grey, where every padding mode gives the same values, but the
    // patches are not (Pad 'reflect' instead fails here by up to 0.4).
    const shape = io.shape('input.patch');
    const n = shape[0]!;
    const dense = await run(exported(name, 'deepmask-dense'), { image: tensor(io.f32('input.patch'), shape) });
    const centre = Array.from({ length: n }, (_, i) => [i, 1, 1]).flat();
    expectClose(`${name} patch score_logits`, cellsOf(data(dense['score_logits']), 1, 3, 3, centre), io.f32('output.patch.score_logits'));
    const e = cellsOf(data(dense['embedding']), embedDim, 3, 3, centre);
    expectClose(`${name} patch embedding`, e, io.f32('output.patch.embedding'));
    const heads = await run(exported(name, 'deepmask-mask-head'), { embedding: tensor(e, [n, embedDim]) });
    const key = name.startsWith('sharpmask') ? 'output.patch.dm_mask_logits' : 'output.patch.mask_logits';
    expectClose(`${name} patch mask_logits`, data(heads['mask_logits']), io.f32(key));
  });
});

describe.each(['sharpmask-resnet50-d16', 'sharpmask-resnet18-d16'])('%s', (name) => {
  const io = readIo(name);

  it('sharpmask-dense, sharpmask-h and sharpmask-refine match the goldens', async () => {
    const image = tensor(io.f32('input.image'), io.shape('input.image'));
    const dense = await run(exported(name, 'sharpmask-dense'), { image });
    const onlyH = await run(exported(name, 'sharpmask-h'), { image });
    expectClose(`${name} sharpmask-dense score_logits`, data(dense['score_logits']), io.f32('output.image.score_logits'));
    expectClose(`${name} sharpmask-dense embedding`, data(dense['embedding']), io.f32('output.image.embedding'));
    for (let i = 1; i <= 4; i++) {
      // Same graph, same kernels: the two parts agree bit for bit.
      expect(data(onlyH[`h${i}`])).toEqual(data(dense[`h${i}`]));
      if (i <= 3) {
        expect(dense[`h${i}`]!.dims).toEqual(io.shape(`output.image.h${i}_map`));
        expectClose(`${name} sharpmask-h h${i}`, data(dense[`h${i}`]), io.f32(`output.image.h${i}_map`));
      }
    }

    const cells = io.i64('input.locations');
    const k = cells.length / 3;
    const d = dense['embedding']!.dims[1]!;
    const feeds: Record<string, ort.Tensor> = {
      embedding: tensor(cellsOf(data(dense['embedding']), d, 3, 4, cells), [k, d]),
    };
    for (let i = 1; i <= 4; i++) feeds[`h${i}`] = windowsOf(dense[`h${i}`]!, cells, 1 << (i - 1), 10 << (i - 1));
    const refined = await run(exported(name, 'sharpmask-refine'), feeds);
    expect(refined['mask_logits']!.dims).toEqual([k, 160, 160]);
    expectClose(`${name} sharpmask-refine mask_logits`, data(refined['mask_logits']), io.f32('output.image.masks'));
  });
});

describe('multipathnet-resnet18-d16', () => {
  const name = 'multipathnet-resnet18-d16';
  const io = readIo(name);

  it('multipathnet (ROI pooling v2 included) matches the goldens', async () => {
    const out = await run(exported(name, 'multipathnet'), {
      image: tensor(io.f32('input.image'), io.shape('input.image')),
      rois: tensor(io.f32('input.rois'), io.shape('input.rois')),
    });
    expect(out['cls_prob']!.dims).toEqual([8, 81]);
    expect(out['bbox_deltas']!.dims).toEqual([8, 324]);
    expectCloseProb(`${name} multipathnet cls_prob`, data(out['cls_prob']), io.f32('output.cls_prob'));
    expectClose(`${name} multipathnet bbox_deltas`, data(out['bbox_deltas']), io.f32('output.bbox_deltas'));
  });

  it('needs the v2 bins: with Caffe bins (= plain ONNX MaxRoiPool) the golden ROIs come out different', async () => {
    // Same weights, config roi_pool_version 1: the exporter then builds the
    // Caffe/ONNX MaxRoiPool bins. The golden ROIs (exact halves, malformed and
    // partly outside boxes) must show the difference, or the test above would
    // not be checking the v2 rounding at all.
    const file = readSafetensors(fs.readFileSync(model(name)));
    const config = JSON.parse(file.metadata['fovea.config']!) as Record<string, unknown>;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fovea-onnx-'));
    try {
      const v1 = path.join(dir, 'v1.safetensors');
      const tensors = [...file.tensors].map(([n, t]) => [n, { data: t.toFloat32(), shape: t.shape }] as const);
      fs.writeFileSync(v1, writeSafetensors(tensors, { metadata: { 'fovea.config': JSON.stringify({ ...config, roi_pool_version: 1 }) } }));
      const out = await run(exportOnnx(v1, { part: 'multipathnet' }), {
        image: tensor(io.f32('input.image'), io.shape('input.image')),
        rois: tensor(io.f32('input.rois'), io.shape('input.rois')),
      });
      const want = io.f32('output.bbox_deltas');
      const got = data(out['bbox_deltas']);
      let diff = 0;
      for (let i = 0; i < want.length; i++) diff = Math.max(diff, Math.abs(got[i]! - want[i]!));
      report.push(`${name} with v1 (MaxRoiPool) bins instead of v2: bbox_deltas max |d| ${diff.toExponential(2)}`);
      expect(diff).toBeGreaterThan(1e-2);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('runs with no ROIs (and the K-batched parts with K = 0)', async () => {
    // ORT's level-'all' NCHWc layout pass inserts a Reshape that fails on an
    // empty batch in layer4; 'extended' (and the native runtime) handle it.
    const extended = { graphOptimizationLevel: 'extended' } as const;
    const out = await run(
      exported(name, 'multipathnet'),
      { image: tensor(io.f32('input.image'), io.shape('input.image')), rois: tensor(new Float32Array(0), [0, 5]) },
      extended,
    );
    expect(out['cls_prob']!.dims).toEqual([0, 81]);
    expect(out['bbox_deltas']!.dims).toEqual([0, 324]);
    const sm = 'sharpmask-resnet18-d16';
    const empty = (...dims: number[]): ort.Tensor => tensor(new Float32Array(0), dims);
    const head = await run(exported(sm, 'deepmask-mask-head'), { embedding: empty(0, 16) });
    expect(head['mask_logits']!.dims).toEqual([0, 56, 56]);
    const refined = await run(exported(sm, 'sharpmask-refine'), {
      embedding: empty(0, 16),
      h1: empty(0, 16, 10, 10),
      h2: empty(0, 8, 20, 20),
      h3: empty(0, 4, 40, 40),
      h4: empty(0, 2, 80, 80),
    });
    expect(refined['mask_logits']!.dims).toEqual([0, 160, 160]);
  });
});

describe('half-precision weights (the embedded model is F16)', () => {
  it('exports the F16 weights as their float32 values, as the native loader reads them', async () => {
    const file = path.join(__dirname, '..', 'weights', 'sharpmask.safetensors');
    const st = readSafetensors(new Uint8Array(fs.readFileSync(file)));
    const conv1 = st.tensors.get('trunk.conv1.weight')!;
    expect(conv1.dtype).toBe('F16');
    const m = onnx.ModelProto.decode(exportOnnx(file, { part: 'sharpmask-dense' }));
    const init = (m.graph as onnx.GraphProto).initializer.find((t) => t.name === 'trunk.conv1.weight')!;
    const raw = init.rawData as Uint8Array;
    expect(new Float32Array(Uint8Array.from(raw).buffer)).toEqual(conv1.toFloat32());
    const out = await run(exportOnnx(file, { part: 'sharpmask-refine' }), {
      embedding: tensor(new Float32Array(2 * 128).fill(0.1), [2, 128]),
      h1: tensor(new Float32Array(2 * 16 * 10 * 10).fill(0.1), [2, 16, 10, 10]),
      h2: tensor(new Float32Array(2 * 8 * 20 * 20).fill(0.1), [2, 8, 20, 20]),
      h3: tensor(new Float32Array(2 * 4 * 40 * 40).fill(0.1), [2, 4, 40, 40]),
      h4: tensor(new Float32Array(2 * 2 * 80 * 80).fill(0.1), [2, 2, 80, 80]),
    });
    expect(out['mask_logits']!.dims).toEqual([2, 160, 160]);
    expect(data(out['mask_logits']).every(Number.isFinite)).toBe(true);
  });
});

describe('the exported file', () => {
  it('is an opset-17 model with the documented inputs and outputs, written by exportOnnxFile', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fovea-onnx-'));
    try {
      const out = path.join(dir, 'refine.onnx');
      const n = exportOnnxFile(model('sharpmask-resnet18-d16'), out, { part: 'sharpmask-refine' });
      const bytes = fs.readFileSync(out);
      expect(bytes.length).toBe(n);
      const m = onnx.ModelProto.decode(bytes);
      expect(m.opsetImport.map((o) => [o.domain, Number(o.version)])).toEqual([['', ONNX_OPSET]]);
      // Decoded messages are the generated classes, whose repeated fields are arrays.
      const graph = m.graph as onnx.GraphProto;
      expect(graph.input.map((v) => v.name)).toEqual(['embedding', 'h1', 'h2', 'h3', 'h4']);
      expect(graph.output.map((v) => v.name)).toEqual(['mask_logits']);
      const nodeNames = graph.node.map((x) => x.name);
      expect(new Set(nodeNames).size).toBe(nodeNames.length);
      expect(m.metadataProps.find((p) => p.key === 'fovea.part')?.value).toBe('sharpmask-refine');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('stores the weights once, as the file has them', () => {
    // Every tensor of the DeepMask part of the file appears as an initializer.
    const m = onnx.ModelProto.decode(exportOnnx(model('deepmask-resnet50-d16'), { part: 'deepmask-dense' }));
    const init = new Map((m.graph as onnx.GraphProto).initializer.map((t) => [t.name!, t as onnx.TensorProto]));
    const file = readSafetensors(fs.readFileSync(model('deepmask-resnet50-d16')));
    for (const [key, t] of file.tensors) {
      if (key.startsWith('mask.')) continue; // the mask head is its own part
      const found = init.get(key) ?? [...init.values()].find((x) => x.name.startsWith(`${key}[`));
      expect(found, key).toBeDefined();
      expect(Buffer.from(found!.rawData).equals(Buffer.from(t.bytes)), key).toBe(true);
    }
  });
});

describe('errors', () => {
  const dm = model('deepmask-resnet18-d16');

  it('an unknown or missing part is ERR_OPTIONS', () => {
    expectFoveaError(() => exportOnnx(dm, { part: 'trunk' as OnnxPart }), 'ERR_OPTIONS', /options\.part must be one of/);
    expectFoveaError(() => exportOnnx(dm, undefined as unknown as { part: OnnxPart }), 'ERR_OPTIONS');
    expectFoveaError(() => exportOnnx('', { part: 'deepmask-dense' }), 'ERR_OPTIONS');
  });

  it('a part of another architecture is ERR_WEIGHTS', () => {
    expectFoveaError(() => exportOnnx(dm, { part: 'multipathnet' }), 'ERR_WEIGHTS', /needs a multipathnet model/);
    expectFoveaError(() => exportOnnx(dm, { part: 'sharpmask-refine' }), 'ERR_WEIGHTS', /needs a sharpmask model/);
    expectFoveaError(
      () => exportOnnx(model('multipathnet-resnet18-d16'), { part: 'deepmask-dense' }),
      'ERR_WEIGHTS',
      /needs a deepmask or sharpmask model/,
    );
  });

  it('an unsupported variant, a missing file and a broken tensor table are ERR_WEIGHTS', () => {
    expectFoveaError(
      () => exportOnnx(model('multipathnet-vgg16-d16'), { part: 'multipathnet' }),
      'ERR_WEIGHTS',
      /"variant" is "vgg16_multipath"; the ONNX export supports resnet18_integral/,
    );
    expectFoveaError(() => exportOnnx(path.join(golden, 'nope.safetensors'), { part: 'deepmask-dense' }), 'ERR_WEIGHTS');

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fovea-onnx-'));
    try {
      const file = readSafetensors(fs.readFileSync(dm));
      const rewrite = (edit: (name: string, t: SafetensorsWriteTensor) => SafetensorsWriteTensor | null): string => {
        const tensors: Array<[string, SafetensorsWriteTensor]> = [];
        for (const [n, t] of file.tensors) {
          const e = edit(n, { data: t.toFloat32(), shape: t.shape });
          if (e) tensors.push([n, e]);
        }
        const out = path.join(dir, `${tensors.length}-${Math.random().toString(36).slice(2)}.safetensors`);
        fs.writeFileSync(out, writeSafetensors(tensors, { metadata: { ...file.metadata } }));
        return out;
      };
      const missing = rewrite((n, t) => (n === 'trunk.layer2.0.downsample.weight' ? null : t));
      expectFoveaError(() => exportOnnx(missing, { part: 'deepmask-dense' }), 'ERR_WEIGHTS', /missing tensor "trunk\.layer2\.0\.downsample\.weight"/);
      const reshaped = rewrite((n, t) => (n === 'trunk.proj.weight' ? { data: t.data, shape: [t.shape[0]!, 1, t.shape[1]!, 1] } : t));
      expectFoveaError(() => exportOnnx(reshaped, { part: 'deepmask-dense' }), 'ERR_WEIGHTS', /"trunk\.proj\.weight" has shape/);
      const noConfig = path.join(dir, 'no-config.safetensors');
      fs.writeFileSync(noConfig, writeSafetensors([['x', { data: new Float32Array(1), shape: [1] }]]));
      expectFoveaError(() => exportOnnx(noConfig, { part: 'deepmask-dense' }), 'ERR_WEIGHTS', /not a fovea model/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
