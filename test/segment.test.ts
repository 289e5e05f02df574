// The segment() API end to end on the committed golden weights (small,
// deterministic random weights: these tests check the plumbing, options,
// queueing, streaming, cancellation and result format; the pipeline's numbers
// are checked against the PyTorch reference in native/test/test_pipeline.cc).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline as pipe } from 'node:stream/promises';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FoveaError } from '../lib/errors';
import { info } from '../lib/info';
import type { RawImage } from '../lib/image';
import { DEFAULT_MODEL } from '../lib/options';
import { decodeMask, maskToBox } from '../lib/rle';
import { createSegmenter, segment, type SegmentResult, type Segmenter } from '../lib/segment';
import { expectFoveaRejection } from './expect-error';
import { SHARED_FIXTURES, itShared } from './shared-fixtures';

const golden = path.join(__dirname, 'fixtures', 'golden');
const sharpmaskFile = path.join(golden, 'sharpmask-resnet18-d16.safetensors');
const deepmaskFile = path.join(golden, 'deepmask-resnet18-d16.safetensors');
const classifierFile = path.join(golden, 'multipathnet-resnet18-d16.safetensors');

// A deterministic picture with some structure (rectangles on a gradient).
function picture(width: number, height: number, seed = 1): RawImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      const inside = (x * 7 + seed * 13) % width < width / 3 && (y * 5 + seed * 3) % height < height / 2;
      data[i] = inside ? 220 : (x * 255) / width;
      data[i + 1] = inside ? 40 : (y * 255) / height;
      data[i + 2] = (seed * 50 + x + y) % 256;
    }
  }
  return { data, width, height, channels: 3 };
}

const small = { scales: [0.5, 1], maxProposals: 10 };

let seg: Segmenter;
beforeAll(async () => {
  seg = await createSegmenter({ model: sharpmaskFile, classifier: classifierFile });
});
afterAll(async () => {
  await seg.close();
});

function checkResult(r: SegmentResult, width: number, height: number): void {
  expect(r.width).toBe(width);
  expect(r.height).toBe(height);
  expect(r.device).toBe('cpu');
  expect(r.timings.total).toBeGreaterThan(0);
  expect(r.timings.trunk).toBeGreaterThan(0);
  for (const inst of r.instances) {
    expect(inst.mask.size).toEqual([height, width]);
    const bitmap = decodeMask(inst.mask);
    let area = 0;
    for (const v of bitmap.data) area += v;
    expect(area).toBe(inst.area);
    expect(inst.score).toBeGreaterThanOrEqual(0);
    expect(inst.score).toBeLessThanOrEqual(1);
  }
}

describe('segment()', () => {
  it('proposals mode: class-agnostic proposals by objectness, boxes are the masks’ boxes', async () => {
    const img = picture(97, 61);
    const r = await seg.segment(img, { ...small, mode: 'proposals', scoreThreshold: 0, nmsThreshold: 1 });
    checkResult(r, 97, 61);
    expect(r.instances.length).toBe(10);
    for (let i = 1; i < r.instances.length; i++) {
      expect(r.instances[i - 1]!.score).toBeGreaterThanOrEqual(r.instances[i]!.score);
    }
    for (const inst of r.instances) {
      expect(inst.label).toBe('object');
      expect(inst.categoryId).toBe(1);
      expect(inst.score).toBe(inst.objectness);
      if (inst.area > 0) expect(inst.box).toEqual(maskToBox(inst.mask));
    }
  });

  it('instances mode: classes from the classifier, scores above the threshold, at most maxDetections', async () => {
    const img = picture(120, 90, 2);
    const r = await seg.segment(img, { ...small, scoreThreshold: 0.01, maxDetections: 7 });
    checkResult(r, 120, 90);
    expect(r.instances.length).toBe(7);
    expect(r.timings.classify).toBeGreaterThan(0);
    for (const inst of r.instances) {
      expect(inst.score).toBeGreaterThanOrEqual(0.01);
      expect(seg.classNames).toContain(inst.label);
      expect(inst.label).not.toBe('background');
    }
  });

  it('gives the same result for the same image however it arrives (raw, PNG bytes, file path, sharp instance)', async () => {
    const img = picture(64, 48, 3);
    const png = await sharp(Buffer.from(img.data), { raw: { width: 64, height: 48, channels: 3 } }).png().toBuffer();
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fovea-')), 'x.png');
    fs.writeFileSync(file, png);
    const opts = { ...small, mode: 'proposals' as const };
    const results = await Promise.all([
      seg.segment(img, opts),
      seg.segment(png, opts),
      seg.segment(file, opts),
      seg.segment(sharp(png), opts),
    ]);
    const strip = (r: SegmentResult) => r.instances;
    for (const r of results.slice(1)) expect(strip(r)).toEqual(strip(results[0]!));
  });

  it('queues many concurrent calls on one Segmenter; each equals its result alone', async () => {
    const inputs = [0, 1, 2, 3, 4, 5].map((s) => picture(50 + s * 3, 40 + s, s));
    const alone: SegmentResult[] = [];
    for (const img of inputs) alone.push(await seg.segment(img, small));
    const together = await Promise.all(inputs.map((img) => seg.segment(img, small)));
    together.forEach((r, i) => expect(r.instances).toEqual(alone[i]!.instances));
  });

  it('keeps the event loop free during a long call (timers fire throughout)', async () => {
    // Big enough (no work-image shrink) that one call stays long as the kernels get faster.
    const img = picture(960, 720, 4);
    let ticks = 0;
    let worstGap = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      worstGap = Math.max(worstGap, now - last);
      last = now;
      ticks++;
    }, 5);
    const start = performance.now();
    await seg.segment(img, { mode: 'proposals', maxProposals: 50, maxSide: 0 });
    const elapsed = performance.now() - start;
    clearInterval(timer);
    // The call must be long enough for the check to mean something.
    expect(elapsed).toBeGreaterThan(100);
    expect(ticks).toBeGreaterThan(elapsed / 5 / 4);
    expect(worstGap).toBeLessThan(Math.max(100, elapsed / 3));
  });

  it('reports progress by stage, and a throwing onProgress does not break the call', async () => {
    const stages = new Set<string>();
    const r = await seg.segment(picture(60, 50), {
      ...small,
      scoreThreshold: 0,
      onProgress: (e) => {
        stages.add(e.stage);
        expect(e.fraction).toBeGreaterThanOrEqual(0);
        expect(e.fraction).toBeLessThanOrEqual(1);
        throw new Error('ignored');
      },
    });
    expect(r.instances.length).toBeGreaterThan(0);
    for (const s of ['decode', 'trunk', 'paste', 'classify']) expect(stages).toContain(s);
  });

  it('a DeepMask-only model gives proposals; asking it for instances is ERR_OPTIONS', async () => {
    const dm = await createSegmenter({ model: deepmaskFile });
    try {
      expect(dm.hasClassifier).toBe(false);
      const r = await dm.segment(picture(70, 50), { ...small, scoreThreshold: 0, nmsThreshold: 1 });
      checkResult(r, 70, 50);
      expect(r.instances.length).toBe(10);
      await expectFoveaRejection(dm.segment(picture(70, 50), { mode: 'instances' }), 'ERR_OPTIONS', /classifier/);
    } finally {
      await dm.close();
    }
  });

  it('one-shot segment() caches its Segmenter and validates options', async () => {
    const a = await segment(picture(40, 40), { model: sharpmaskFile, classifier: null, ...small });
    const b = await segment(picture(40, 40), { model: sharpmaskFile, classifier: null, ...small });
    expect(b.instances).toEqual(a.instances);
    await expectFoveaRejection(segment(picture(40, 40), { model: sharpmaskFile, maxProposals: 0 }), 'ERR_OPTIONS', /maxProposals/);
  });
});

describe('options and errors', () => {
  it('rejects bad options before any native work, naming the option', async () => {
    const img = picture(20, 20);
    const cases: Array<[unknown, RegExp]> = [
      [{ mode: 'everything' }, /mode/],
      [{ maxDetections: 1.5 }, /maxDetections/],
      [{ scoreThreshold: 2 }, /scoreThreshold/],
      [{ nmsThreshold: -0.1 }, /nmsThreshold/],
      [{ maskThreshold: 1 }, /maskThreshold/],
      [{ scales: [] }, /scales/],
      [{ scales: [0.5, -1] }, /scales\[1\]/],
      [{ maxSide: -1 }, /maxSide/],
      [{ signal: {} }, /signal/],
      [{ onProgress: 3 }, /onProgress/],
      [{ maxProposal: 5 }, /unknown option 'maxProposal'/],
    ];
    for (const [opts, re] of cases) await expectFoveaRejection(seg.segment(img, opts as never), 'ERR_OPTIONS', re);
    await expectFoveaRejection(createSegmenter({ device: 'gpu' as never }), 'ERR_OPTIONS', /device/);
    await expectFoveaRejection(createSegmenter({ model: sharpmaskFile, mode: 'instances' }), 'ERR_OPTIONS', /classifier/);
  });

  it('bad weights are ERR_WEIGHTS; a classifier file as the proposal model is ERR_OPTIONS', async () => {
    await expectFoveaRejection(createSegmenter({ model: path.join(golden, 'no-such.safetensors') }), 'ERR_WEIGHTS');
    await expectFoveaRejection(createSegmenter({ model: classifierFile }), 'ERR_OPTIONS', /proposal model/);
  });

  it('cuda without a usable CUDA pipeline is ERR_DEVICE with the reason, never a silent CPU run', async () => {
    // Where this binary has a usable device, the first index past the last one has none.
    const cuda = info().cuda;
    const device = cuda.available ? (`cuda:${cuda.devices.length}` as const) : 'cuda';
    await expectFoveaRejection(createSegmenter({ model: sharpmaskFile, device }), 'ERR_DEVICE', /cuda/i);
  });

  it("device 'auto' (the default) is the GPU where this binary finds one, else the CPU", async () => {
    const s = await createSegmenter({ model: sharpmaskFile });
    try {
      const usable = info().cuda.devices.find((d) => d.supported);
      expect(s.device).toBe(info().cuda.available && usable ? `cuda:${usable.index}` : 'cpu');
    } finally {
      await s.close();
    }
  });

  it('bad images are ERR_INPUT and the queue goes on', async () => {
    const bad = [Buffer.alloc(0), Buffer.from('not an image'), { data: new Uint8Array(5), width: 2, height: 2, channels: 3 }];
    const runs = [...bad.map((b) => seg.segment(b as never, small)), seg.segment(picture(30, 30), small)];
    const settled = await Promise.allSettled(runs);
    for (const s of settled.slice(0, 3)) {
      expect(s.status).toBe('rejected');
      expect((s as PromiseRejectedResult).reason).toBeInstanceOf(FoveaError);
      expect(((s as PromiseRejectedResult).reason as FoveaError).code).toBe('ERR_INPUT');
    }
    expect(settled[3]!.status).toBe('fulfilled');
  });

  it('handles 1x1 and 1xN images', async () => {
    for (const [w, h] of [
      [1, 1],
      [1, 37],
      [53, 1],
    ] as const) {
      const r = await seg.segment(picture(w, h), { ...small, mode: 'proposals' });
      checkResult(r, w, h);
    }
  });

  it('without embedded weights, the default model is a clear ERR_WEIGHTS (with them, it segments)', async () => {
    if (fs.existsSync(DEFAULT_MODEL)) {
      const r = await segment(picture(64, 64), { mode: 'proposals', maxProposals: 5 });
      checkResult(r, 64, 64);
    } else {
      await expectFoveaRejection(createSegmenter(), 'ERR_WEIGHTS', /embedded default model/);
    }
  });
});

describe('odd and broken image files', () => {
  // Each gives a result (decodable oddities) or ERR_INPUT (broken or over the
  // pixel limit), never a crash; the Segmenter keeps working afterwards.
  const expected: Record<string, 'ok' | 'ERR_INPUT'> = {
    'pillow/hopper_gray.jpg': 'ok',
    'sharp/65536-uint32-limit.png': 'ERR_INPUT',
    'sharp/Channel_digital_image_CMYK_color_no_profile.jpg': 'ok',
    'sharp/bggn4a16.png': 'ok',
    'sharp/corrupt-header.jpg': 'ERR_INPUT',
    'sharp/rotating-squares.gif': 'ok',
    'sharp/tbgn2c16.png': 'ok',
    'sharp/truncated.jpg': 'ERR_INPUT',
    'sharp/with-alpha.png': 'ok',
    'torch-image/corrupt-ihdr.png': 'ERR_INPUT',
    'torch-image/gray16-1x2.png': 'ok',
    'torch-image/gray3x1.png': 'ok',
    'torch-image/rgb16-2x1.png': 'ok',
    'torch-image/rgb2x1.png': 'ok',
  };
  for (const [rel, outcome] of Object.entries(expected)) {
    itShared(`${rel}: ${outcome}`, path.join('images', 'odd', rel), async (file) => {
      const run = seg.segment(file, { ...small, mode: 'proposals', maxSide: 200 });
      if (outcome === 'ok') {
        const r = await run;
        const meta = await sharp(file).rotate().metadata();
        expect([r.width, r.height]).toEqual([meta.autoOrient?.width ?? meta.width, meta.autoOrient?.height ?? meta.height]);
      } else {
        await expectFoveaRejection(run, 'ERR_INPUT');
      }
    });
  }
  it('covers every file of the odd-images folder', () => {
    const dir = path.join(SHARED_FIXTURES, 'images', 'odd');
    if (!fs.existsSync(dir)) return;
    const all = fs.readdirSync(dir).flatMap((d) => fs.readdirSync(path.join(dir, d)).map((f) => `${d}/${f}`));
    expect(all.sort()).toEqual(Object.keys(expected).sort());
  });
});

describe('abort', () => {
  it('an already-aborted signal rejects at once with ERR_ABORTED', async () => {
    await expectFoveaRejection(seg.segment(picture(30, 30), { signal: AbortSignal.abort() }), 'ERR_ABORTED');
  });

  it('aborting during the run or while queued rejects with ERR_ABORTED; others complete', async () => {
    const controllers = [0, 1, 2, 3].map(() => new AbortController());
    const runs = controllers.map((c, i) => seg.segment(picture(300, 200, i), { mode: 'proposals', signal: c.signal }));
    controllers[0]!.abort(); // first: probably running already
    controllers[2]!.abort(); // third: queued
    const settled = await Promise.allSettled(runs);
    for (const i of [0, 2]) {
      expect(settled[i]!.status).toBe('rejected');
      expect(((settled[i] as PromiseRejectedResult).reason as FoveaError).code).toBe('ERR_ABORTED');
    }
    for (const i of [1, 3]) expect(settled[i]!.status).toBe('fulfilled');
  });

  it('a signal fired mid-run cancels between stages', async () => {
    const c = new AbortController();
    let seen = false;
    const run = seg.segment(picture(300, 200), {
      mode: 'proposals',
      signal: c.signal,
      onProgress: (e) => {
        if (e.stage === 'trunk' && !seen) {
          seen = true;
          c.abort();
        }
      },
    });
    await expectFoveaRejection(run, 'ERR_ABORTED');
    expect(seen).toBe(true);
  });
});

describe('streaming', () => {
  const inputs = [0, 1, 2, 3, 4].map((s) => picture(40 + s * 7, 30 + s * 5, s));

  it('stream() yields results in input order from an async iterable, with bounded read-ahead', async () => {
    let pulled = 0;
    let maxAhead = 0;
    let yielded = 0;
    async function* source() {
      for (const img of inputs) {
        pulled++;
        maxAhead = Math.max(maxAhead, pulled - yielded);
        yield img;
      }
    }
    const sizes: number[] = [];
    for await (const r of seg.stream(source(), { ...small, concurrency: 2 })) {
      yielded++;
      sizes.push(r.width);
    }
    expect(sizes).toEqual(inputs.map((i) => i.width));
    expect(maxAhead).toBeLessThanOrEqual(3);
  });

  it('stream() reports failures through onError and goes on, or throws without it', async () => {
    const mixed = [inputs[0]!, Buffer.from('junk'), inputs[1]!];
    const errors: Array<[string, number]> = [];
    const widths: number[] = [];
    for await (const r of seg.stream(mixed, { ...small, onError: (e, i) => errors.push([e.code, i]) })) {
      widths.push(r.width);
    }
    expect(widths).toEqual([inputs[0]!.width, inputs[1]!.width]);
    expect(errors).toEqual([['ERR_INPUT', 1]]);
    const consume = async () => {
      for await (const r of seg.stream(mixed, small)) void r;
    };
    await expectFoveaRejection(consume(), 'ERR_INPUT');
  });

  it('createStream() is an object-mode Transform that keeps input order', async () => {
    const out: number[] = [];
    await pipe(
      Readable.from(inputs),
      seg.createStream({ ...small, concurrency: 3 }),
      new Writable({
        objectMode: true,
        write(r: SegmentResult, _e, cb) {
          out.push(r.width);
          cb();
        },
      }),
    );
    expect(out).toEqual(inputs.map((i) => i.width));
  });

  it('createStream() fails the pipeline on a bad input', async () => {
    const run = pipe(
      Readable.from([inputs[0]!, Buffer.from('junk')]),
      seg.createStream(small),
      new Writable({ objectMode: true, write: (_r, _e, cb) => cb() }),
    );
    await expectFoveaRejection(run, 'ERR_INPUT');
  });
});

describe('close', () => {
  it('close() waits for calls in flight, then refuses new ones; asyncDispose closes', async () => {
    const s = await createSegmenter({ model: sharpmaskFile });
    const running = s.segment(picture(80, 60), small);
    await s.close();
    await expect(running).resolves.toBeDefined();
    await expectFoveaRejection(s.segment(picture(10, 10)), 'ERR_OPTIONS', /closed/);
    const t = await createSegmenter({ model: sharpmaskFile });
    await t[Symbol.asyncDispose]();
    await expectFoveaRejection(t.segment(picture(10, 10)), 'ERR_OPTIONS', /closed/);
  });
});
