import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  annotationToRle,
  evaluateCoco,
  formatCocoStats,
  toCocoResults,
  type Box,
  type CocoAnnotation,
  type CocoDataset,
  type CocoEvalOptions,
  type CocoResult,
} from '../lib/coco';
import { countsFromString, countsToString, decodeMask, encodeMask, maskArea, type Rle } from '../lib/rle';
import { expectFoveaError } from './expect-error';
import { itShared, SHARED_FIXTURES } from './shared-fixtures';

const COCO_MINI = 'datasets/coco-mini/annotations/instances_val2017.json';
const INSTANCES_GT = 'images/instances_gt.json';
const readDataset = (rel: string) => JSON.parse(fs.readFileSync(path.join(SHARED_FIXTURES, rel), 'utf8')) as CocoDataset;

// pycocotools is the reference; without it these tests skip visibly, except in CI.
const python = process.env['PYTHON'] ?? 'python3';
const hasPycocotools = spawnSync(python, ['-c', 'import pycocotools'], { stdio: 'ignore' }).status === 0;

/** A test that needs pycocotools, and the shared fixture `rel` where given. */
function itPycoco(name: string, rel: string | undefined, fn: () => void): void {
  if (hasPycocotools) {
    if (rel === undefined) it(name, fn);
    else itShared(name, rel, fn);
  } else if (process.env['CI']) {
    it(name, () => {
      throw new Error(`${python} cannot import pycocotools`);
    });
  } else {
    console.warn(`Skipping "${name}": ${python} cannot import pycocotools (pip install pycocotools)`);
    it.skip(`${name} (skipped: no pycocotools)`, () => undefined);
  }
}

interface EvalJob {
  gt: string;
  results: string;
  iouType: 'segm' | 'bbox';
  useCats: boolean;
  maxDets: number[];
  imgIds?: number[];
}
interface Answer {
  evals: { stats: number[]; summary: string[] }[];
  rles: Record<string, { counts: string; area: number }>[];
}

function pycocotools(request: { evals?: EvalJob[]; rles?: string[] }): Answer {
  const run = spawnSync(python, [path.join(__dirname, 'coco', 'pycoco_eval.py')], {
    input: JSON.stringify(request),
    encoding: 'utf8',
    maxBuffer: 1 << 28,
  });
  if (run.status !== 0) throw new Error(`pycoco_eval.py failed (${run.status}):\n${run.stderr}`);
  return JSON.parse(run.stdout) as Answer;
}

/** mulberry32: a small seeded PRNG, so that the detections are the same on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** A mask cropped to a window of the image: pixels (x0 + i, y0 + j) at data[j * w + i]. */
interface Window {
  x0: number;
  y0: number;
  w: number;
  h: number;
  data: Uint8Array;
}

function windowFor(box: Box, H: number, W: number, margin: number): Window {
  const x0 = Math.max(0, Math.floor(box[0] - margin));
  const y0 = Math.max(0, Math.floor(box[1] - margin));
  const x1 = Math.min(W, Math.ceil(box[0] + box[2] + margin));
  const y1 = Math.min(H, Math.ceil(box[1] + box[3] + margin));
  const w = Math.max(0, x1 - x0);
  const h = Math.max(0, y1 - y0);
  return { x0, y0, w, h, data: new Uint8Array(w * h) };
}

/** Decodes only the foreground of `rle` into a window that contains it (cheaper than the whole image). */
function decodeInto(rle: Rle, win: Window): void {
  const H = rle.size[0];
  const runs = countsFromString(rle.counts);
  let p = 0;
  runs.forEach((n, r) => {
    if (r & 1) {
      for (let q = p; q < p + n; q++) {
        const x = Math.floor(q / H) - win.x0;
        const y = (q % H) - win.y0;
        if (x >= 0 && y >= 0 && x < win.w && y < win.h) win.data[y * win.w + x] = 1;
      }
    }
    p += n;
  });
}

/** Encodes a window as an RLE of the whole H x W image, without visiting the pixels outside it. */
function encodeWindow(win: Window, H: number, W: number): Rle {
  const counts: number[] = [];
  let last = 0;
  let current = 0;
  const toggle = (p: number) => {
    counts.push(p - last);
    last = p;
    current ^= 1;
  };
  for (let i = 0; i < win.w; i++) {
    for (let j = 0; j < win.h; j++) {
      if (win.data[j * win.w + i] !== current) toggle((win.x0 + i) * H + win.y0 + j);
    }
    // The pixel after this column's part of the window is background unless the window spans whole columns.
    const next = (win.x0 + i) * H + win.y0 + win.h;
    const nextInWindow = win.y0 === 0 && win.h === H && i + 1 < win.w;
    if (current === 1 && !nextInWindow && next < H * W) toggle(next);
  }
  counts.push(H * W - last);
  return { size: [H, W], counts: countsToString(counts) };
}

/** The window of `src` moved by (dx, dy) and scaled by s about (cx, cy), then dilated (morph > 0) or eroded. */
function warp(src: Window, t: { cx: number; cy: number; dx: number; dy: number; s: number; morph: number }, H: number, W: number): Window {
  const { cx, cy, dx, dy, s, morph } = t;
  const box: Box = [cx + dx + (src.x0 - cx) * s, cy + dy + (src.y0 - cy) * s, src.w * s, src.h * s];
  const dst = windowFor(box, H, W, 3);
  for (let j = 0; j < dst.h; j++) {
    for (let i = 0; i < dst.w; i++) {
      const sx = Math.floor((dst.x0 + i + 0.5 - cx - dx) / s + cx) - src.x0;
      const sy = Math.floor((dst.y0 + j + 0.5 - cy - dy) / s + cy) - src.y0;
      if (sx >= 0 && sy >= 0 && sx < src.w && sy < src.h) dst.data[j * dst.w + i] = src.data[sy * src.w + sx]!;
    }
  }
  for (let n = 0; n < Math.abs(morph); n++) {
    const prev = dst.data.slice();
    const at = (i: number, j: number) => (i >= 0 && j >= 0 && i < dst.w && j < dst.h ? prev[j * dst.w + i]! : 0);
    for (let j = 0; j < dst.h; j++) {
      for (let i = 0; i < dst.w; i++) {
        const around = [at(i - 1, j), at(i + 1, j), at(i, j - 1), at(i, j + 1)];
        dst.data[j * dst.w + i] = morph > 0 ? Math.max(at(i, j), ...around) : Math.min(at(i, j), ...around);
      }
    }
  }
  return dst;
}

function ellipse(box: Box, H: number, W: number): Window {
  const win = windowFor(box, H, W, 0);
  const [cx, cy, rx, ry] = [box[0] + box[2] / 2, box[1] + box[3] / 2, box[2] / 2, box[3] / 2];
  for (let j = 0; j < win.h; j++) {
    for (let i = 0; i < win.w; i++) {
      const u = (win.x0 + i + 0.5 - cx) / rx;
      const v = (win.y0 + j + 0.5 - cy) / ry;
      if (u * u + v * v <= 1) win.data[j * win.w + i] = 1;
    }
  }
  return win;
}

/**
 * Imperfect detections made from the ground truth: objects missed or found twice, boxes and masks
 * shifted, scaled (some boxes rounded to whole pixels), masks dilated or eroded, some wrong
 * categories, random false positives (many more for `proposals`), random scores with many ties.
 */
function detections(gt: CocoDataset, seed: number, proposals: boolean): CocoResult[] {
  const rand = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const images = new Map(gt.images.map((img) => [img.id, img]));
  const usedCats = [...new Set(gt.annotations.map((a) => a.category_id))];
  const results: CocoResult[] = [];
  const push = (imageId: number, categoryId: number, bbox: Box, win: Window, H: number, W: number) =>
    results.push({
      image_id: imageId,
      category_id: categoryId,
      bbox,
      // Ties exercise pycocotools' stable ordering.
      score: rand() < 0.3 ? Math.round(rand() * 10) / 10 : rand(),
      segmentation: encodeWindow(win, H, W),
    });
  for (const ann of gt.annotations) {
    const { height: H, width: W } = images.get(ann.image_id)!;
    if (rand() < 0.15) continue;
    const box = ann.bbox!;
    const src = windowFor(box, H, W, 2);
    decodeInto(annotationToRle(ann, H, W), src);
    for (let copy = rand() < 0.15 ? 2 : 1; copy > 0; copy--) {
      const level = pick([0.02, 0.1, 0.3, 0.6]);
      const t = {
        cx: box[0] + box[2] / 2,
        cy: box[1] + box[3] / 2,
        dx: (rand() - 0.5) * level * box[2],
        dy: (rand() - 0.5) * level * box[3],
        s: 1 + (rand() - 0.5) * level,
        morph: Math.floor(rand() * 5) - 2,
      };
      const bbox: Box = [t.cx + t.dx - (t.s * box[2]) / 2, t.cy + t.dy - (t.s * box[3]) / 2, t.s * box[2], t.s * box[3]];
      // Whole-pixel boxes give IoUs that land exactly on thresholds such as 0.5 and 0.75.
      if (rand() < 0.3) bbox.forEach((v, i) => (bbox[i] = Math.round(v)));
      push(ann.image_id, rand() < 0.1 ? pick(usedCats) : ann.category_id, bbox, warp(src, t, H, W), H, W);
    }
  }
  for (const { id, height: H, width: W } of gt.images) {
    for (let n = proposals ? 60 + Math.floor(rand() * 60) : Math.floor(rand() * 6); n > 0; n--) {
      const w = 2 + rand() * 0.5 * W;
      const h = 2 + rand() * 0.5 * H;
      const bbox: Box = [rand() * (W - w), rand() * (H - h), w, h];
      push(id, pick(usedCats), bbox, ellipse(bbox, H, W), H, W);
    }
  }
  return results;
}

/**
 * Whole-pixel rectangles whose IoUs fall exactly on the thresholds (0.5, 0.55, ..., 0.95), detections
 * equally close to two objects, crowd overlaps of exactly one half, and scores in quarters: every
 * tie that pycocotools breaks in a particular way.
 */
function exactTies(): Inputs {
  const rand = prng(3000);
  const [H, W] = [100, 100];
  const rect = (box: Box): Rle => {
    const win = windowFor(box, H, W, 0);
    win.data.fill(1);
    return encodeWindow(win, H, W);
  };
  const gt: CocoDataset = { images: [], annotations: [], categories: [{ id: 1, name: 'thing' }] };
  const results: CocoResult[] = [];
  const object = (imageId: number, bbox: Box, iscrowd: 0 | 1 = 0) => {
    const id = gt.annotations.length + 1;
    gt.annotations.push({ id, image_id: imageId, category_id: 1, bbox, area: bbox[2] * bbox[3], iscrowd, segmentation: rect(bbox) });
  };
  const detection = (imageId: number, bbox: Box) =>
    results.push({ image_id: imageId, category_id: 1, bbox, score: Math.floor(rand() * 4) / 4, segmentation: rect(bbox) });
  for (let id = 1; id <= 40; id++) {
    gt.images.push({ id, width: W, height: H });
    // IoU (20 - e) / 20.
    object(id, [10, 10, 20, 20]);
    detection(id, [10, 10, 20 - Math.floor(rand() * 11), 20]);
    // IoU 0.6 with both objects, and a detection that fits only the first one (IoU 0.8).
    object(id, [0, 50, 20, 20]);
    object(id, [10, 50, 20, 20]);
    detection(id, [5, 50, 20, 20]);
    detection(id, [0, 50, 16, 20]);
    // Half inside a crowd region.
    if (id % 3 === 0) {
      object(id, [50, 0, 40, 40], 1);
      detection(id, [40, 10, 20, 20]);
    }
  }
  return { gt, results, proposals: results };
}

const SYNTHETIC = 'exact ties';

interface Inputs {
  gt: CocoDataset;
  /** Detections, for useCats true. */
  results: CocoResult[];
  /** Many more detections, for class-agnostic proposal recall. */
  proposals: CocoResult[];
}

interface Case {
  /** A data set under ../shared/fixtures, or SYNTHETIC. */
  set: string;
  iouType: 'segm' | 'bbox';
  useCats: boolean;
  maxDets: number[];
  /** Evaluate only the data set's first n images. */
  firstImages?: number;
}

const firstImageIds = (c: Case, gt: CocoDataset) => gt.images.slice(0, c.firstImages).map((img) => img.id);

const casesOf = (set: string): Case[] => [
  ...(['segm', 'bbox'] as const).flatMap((iouType) => [
    { set, iouType, useCats: true, maxDets: [1, 10, 100] },
    { set, iouType, useCats: false, maxDets: [10, 100, 1000] },
  ]),
  ...(set === COCO_MINI
    ? [{ set, iouType: 'bbox' as const, useCats: true, maxDets: [1, 10, 100], firstImages: 30 }]
    : []),
];

const caseName = (c: Case) =>
  `${path.basename(c.set)}: ${c.iouType} useCats=${c.useCats} maxDets=${c.maxDets.join(',')}${c.firstImages ? ` on ${c.firstImages} images` : ''}`;

/** Per data set, made on first use: the inputs, and pycocotools' answers for all its cases (one Python run). */
const references = new Map<string, { inputs: Inputs; evals: Answer['evals'] }>();
function reference(set: string) {
  const known = references.get(set);
  if (known) return known;
  let inputs: Inputs;
  if (set === SYNTHETIC) {
    inputs = exactTies();
  } else {
    const gt = readDataset(set);
    const seed = set === COCO_MINI ? 1 : 2;
    inputs = { gt, results: detections(gt, 1000 + seed, false), proposals: detections(gt, 2000 + seed, true) };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fovea-coco-'));
  try {
    const write = (name: string, value: unknown) => {
      fs.writeFileSync(path.join(dir, name), JSON.stringify(value));
      return path.join(dir, name);
    };
    const gt = write('gt.json', inputs.gt);
    const results = write('results.json', inputs.results);
    const proposals = write('proposals.json', inputs.proposals);
    const { evals } = pycocotools({
      evals: casesOf(set).map((c) => ({
        gt,
        results: c.useCats ? results : proposals,
        iouType: c.iouType,
        useCats: c.useCats,
        maxDets: c.maxDets,
        ...(c.firstImages ? { imgIds: firstImageIds(c, inputs.gt) } : {}),
      })),
    });
    const entry = { inputs, evals };
    references.set(set, entry);
    return entry;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('evaluateCoco against pycocotools', () => {
  const maxDiff = new Map<string, number>();

  const check = (c: Case, index: number) => {
    const { inputs, evals } = reference(c.set);
    const { iouType, useCats, maxDets } = c;
    const options: CocoEvalOptions = { iouType, useCats, maxDets, ...(c.firstImages ? { imageIds: firstImageIds(c, inputs.gt) } : {}) };
    const ours = evaluateCoco(inputs.gt, c.useCats ? inputs.results : inputs.proposals, options);
    const ref = evals[index]!;
    expect(ours.stats).toHaveLength(12);
    ours.stats.forEach((v, i) => {
      const diff = Math.abs(v - ref.stats[i]!);
      expect(diff, `stat ${i} (${Object.keys(ours.named)[i]})`).toBeLessThanOrEqual(1e-3);
      const group = `${c.iouType} useCats=${c.useCats} ${i < 6 ? 'AP' : 'AR'}`;
      maxDiff.set(group, Math.max(maxDiff.get(group) ?? 0, diff));
    });
    // Not a degenerate comparison: the detections are imperfect but not hopeless.
    const headline = c.useCats ? ours.named['AP']! : ours.named[`AR@${c.maxDets[2]}`]!;
    expect(headline).toBeGreaterThan(0.1);
    expect(headline).toBeLessThan(0.99);
    // The printed table: the same lines, numbers aside (they may differ in the last bit, so in rounding).
    const lines = formatCocoStats(ours).split('\n');
    const text = (line: string) => line.replace(/= -?\d\.\d{3}$/, '=');
    expect(lines.map(text)).toEqual(ref.summary.map(text));
    lines.forEach((line, i) => expect(Math.abs(Number(/= (-?\d\.\d{3})$/.exec(line)![1]) - ref.stats[i]!)).toBeLessThanOrEqual(0.0005 + 1e-3));
  };

  describe('real annotations, perturbed detections', () => {
    for (const set of [COCO_MINI, INSTANCES_GT]) casesOf(set).forEach((c, i) => itPycoco(caseName(c), set, () => check(c, i)));
  });

  describe('exact ties', () => {
    casesOf(SYNTHETIC).forEach((c, i) => itPycoco(caseName(c), undefined, () => check(c, i)));
  });

  it('largest difference per metric group', () => {
    if (maxDiff.size > 0) {
      console.log(`max |fovea - pycocotools| per group:\n${[...maxDiff].map(([g, d]) => `  ${g}: ${d.toExponential(2)}`).join('\n')}`);
    }
  });
});

describe('annotationToRle', () => {
  itPycoco('gives pycocotools\' strings and areas for every real polygon, crowd RLE and compressed RLE', COCO_MINI, () => {
    const answer = pycocotools({ rles: [COCO_MINI, INSTANCES_GT].map((rel) => path.join(SHARED_FIXTURES, rel)) });
    let polygons = 0;
    let multiPart = 0;
    let crowd = 0;
    let compressed = 0;
    [COCO_MINI, INSTANCES_GT].forEach((rel, i) => {
      const gt = readDataset(rel);
      const images = new Map(gt.images.map((img) => [img.id, img]));
      for (const ann of gt.annotations) {
        const img = images.get(ann.image_id)!;
        const rle = annotationToRle(ann, img.height, img.width);
        const ref = answer.rles[i]![String(ann.id)]!;
        expect(rle.counts, `annotation ${ann.id}`).toBe(ref.counts);
        expect(rle.size).toEqual([img.height, img.width]);
        expect(maskArea(rle)).toBe(ref.area);
        const seg = ann.segmentation!;
        if (Array.isArray(seg)) {
          polygons++;
          if (seg.length > 1) multiPart++;
        } else if (Array.isArray(seg.counts)) crowd++;
        else compressed++;
      }
    });
    expect({ polygons, multiPart, crowd, compressed }).toEqual({ polygons: 631, multiPart: 40, crowd: 8, compressed: 40 });
  });

  itShared('gives the polygon areas that pycocotools wrote into instances_gt.json', INSTANCES_GT, () => {
    const gt = readDataset(INSTANCES_GT);
    const images = new Map(gt.images.map((img) => [img.id, img]));
    const polygons = gt.annotations.filter((a) => Array.isArray(a.segmentation));
    expect(polygons.length).toBe(12);
    for (const ann of gt.annotations) {
      const img = images.get(ann.image_id)!;
      expect(maskArea(annotationToRle(ann, img.height, img.width)), `annotation ${ann.id}`).toBe(ann.area);
    }
  });

  itShared('round-trips through decodeMask and encodeMask', COCO_MINI, () => {
    const gt = readDataset(COCO_MINI);
    const images = new Map(gt.images.map((img) => [img.id, img]));
    for (const ann of gt.annotations.filter((_, i) => i % 4 === 0 || _.iscrowd)) {
      const img = images.get(ann.image_id)!;
      const rle = annotationToRle(ann, img.height, img.width);
      expect(encodeMask(decodeMask(rle))).toEqual(rle);
    }
  });

  it('treats a list whose first entry has 4 numbers as boxes, as pycocotools does', () => {
    const asBox = annotationToRle({ segmentation: [[1, 2, 3, 4]] }, 10, 10);
    const asPolygon = annotationToRle({ segmentation: [[1, 2, 1, 6, 4, 6, 4, 2]] }, 10, 10);
    expect(asBox).toEqual(asPolygon);
    expect(maskArea(asBox)).toBe(12);
  });

  it('merges overlapping polygons into their union', () => {
    const a = [0, 0, 0, 4, 4, 4, 4, 0];
    const b = [2, 2, 2, 6, 6, 6, 6, 2];
    const union = annotationToRle({ segmentation: [a, b] }, 8, 8);
    const bitmapOf = (seg: number[][]) => decodeMask(annotationToRle({ segmentation: seg }, 8, 8)).data;
    const [ma, mb] = [bitmapOf([a]), bitmapOf([b])];
    expect(Array.from(decodeMask(union).data)).toEqual(Array.from(ma, (v, i) => v | mb[i]!));
    expect(maskArea(union)).toBe(16 + 16 - 4);
  });

  it('compresses uncompressed RLE and passes compressed RLE through', () => {
    const rle = annotationToRle({ segmentation: { size: [3, 2], counts: [1, 2, 3] } }, 3, 2);
    expect(rle).toEqual(encodeMask({ data: Uint8Array.from([0, 0, 1, 0, 1, 0]), width: 2, height: 3 }));
    expect(annotationToRle({ segmentation: rle }, 3, 2)).toEqual(rle);
  });
});

describe('test helpers', () => {
  it('encodeWindow agrees with encodeMask', () => {
    const rand = prng(7);
    for (const [H, W, box] of [
      [9, 7, [0, 0, 7, 9]],
      [9, 7, [2, 0, 3, 9]],
      [9, 7, [0, 3, 7, 4]],
      [9, 7, [5, 6, 2, 3]],
      [1, 5, [1, 0, 3, 1]],
    ] as [number, number, Box][]) {
      for (let trial = 0; trial < 20; trial++) {
        const win = windowFor(box, H, W, 0);
        win.data.forEach((_, i) => (win.data[i] = rand() < 0.5 ? 1 : 0));
        const full = new Uint8Array(H * W);
        for (let j = 0; j < win.h; j++) for (let i = 0; i < win.w; i++) full[(win.y0 + j) * W + win.x0 + i] = win.data[j * win.w + i]!;
        expect(encodeWindow(win, H, W)).toEqual(encodeMask({ data: full, width: W, height: H }));
      }
    }
  });
});

/** A 100x100 image with one object and one crowd region, both as boxes and as masks. */
function tinyDataset(): CocoDataset {
  const square = (x: number, y: number, s: number) => [[x, y, x, y + s, x + s, y + s, x + s, y]];
  const crowdMask = annotationToRle({ segmentation: square(50, 50, 40) }, 100, 100);
  return {
    images: [{ id: 7, width: 100, height: 100 }],
    categories: [
      { id: 1, name: 'person' },
      { id: 2, name: 'dog' },
    ],
    annotations: [
      { id: 1, image_id: 7, category_id: 1, bbox: [10, 10, 20, 20], area: 400, iscrowd: 0, segmentation: square(10, 10, 20) },
      {
        id: 2,
        image_id: 7,
        category_id: 1,
        bbox: [50, 50, 40, 40],
        area: 1600,
        iscrowd: 1,
        segmentation: { size: [100, 100], counts: countsFromString(crowdMask.counts) },
      },
    ],
  };
}

function tinyResult(box: Box, score: number, categoryId = 1): CocoResult {
  const [x, y, w, h] = box;
  const segmentation = annotationToRle({ segmentation: [[x, y, x, y + h, x + w, y + h, x + w, y]] }, 100, 100);
  return { image_id: 7, category_id: categoryId, bbox: box, score, segmentation };
}

/** Precision is tp / (tp + fp + 2^-52) in pycocotools, so a perfect score is 1 to within that. */
function expectStats(actual: number[], expected: number[]): void {
  expect(actual).toHaveLength(expected.length);
  expected.forEach((v, i) => expect(actual[i], `stat ${i}`).toBeCloseTo(v, 12));
}

describe('evaluateCoco on hand-made cases', () => {
  it.each(['segm', 'bbox'] as const)('ignores a detection inside a crowd region (%s): IoU = intersection / detection area', (iouType) => {
    const results = [tinyResult([10, 10, 20, 20], 0.9), tinyResult([60, 60, 10, 10], 0.95)];
    // At one detection per image only the crowd match is left: it neither finds the object nor counts against.
    // The one object is 20x20, small: medium and large have nothing to measure.
    expectStats(evaluateCoco(tinyDataset(), results, { iouType }).stats, [1, 1, 1, 1, -1, -1, 0, 1, 1, 1, -1, -1]);
  });

  it('counts a detection outside the crowd region as a false positive', () => {
    const r = evaluateCoco(tinyDataset(), [tinyResult([10, 10, 20, 20], 0.9), tinyResult([0, 60, 10, 10], 0.95)], { iouType: 'bbox' });
    // Precision 1/2 at every recall: the false positive ranks first.
    expect(r.named['AP']).toBeCloseTo(0.5, 12);
  });

  it('matches across categories only with useCats false', () => {
    const results = [tinyResult([10, 10, 20, 20], 0.9, 2)];
    expect(evaluateCoco(tinyDataset(), results, { iouType: 'bbox' }).named['AP']).toBe(0);
    expect(evaluateCoco(tinyDataset(), results, { iouType: 'bbox', useCats: false }).named['AP']).toBeCloseTo(1, 12);
  });

  it('names the recalls after maxDets, and gives AP -1 without maxDets 100 as pycocotools does', () => {
    const r = evaluateCoco(tinyDataset(), [tinyResult([10, 10, 20, 20], 0.9)], { maxDets: [20, 5, 1] });
    expect(r.maxDets).toEqual([1, 5, 20]);
    expect(Object.keys(r.named)).toEqual(['AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR@1', 'AR@5', 'AR@20', 'ARs@20', 'ARm@20', 'ARl@20']);
    expectStats(r.stats, [-1, 1, 1, 1, -1, -1, 1, 1, 1, 1, -1, -1]);
  });

  it('scores nothing found as 0 and an empty data set as -1', () => {
    expect(evaluateCoco(tinyDataset(), []).stats).toEqual([0, 0, 0, 0, -1, -1, 0, 0, 0, 0, -1, -1]);
    const empty = { ...tinyDataset(), annotations: [] };
    expect(evaluateCoco(empty, [tinyResult([10, 10, 20, 20], 0.9)]).stats).toEqual(new Array(12).fill(-1));
  });

  itShared('gives the self-evaluation of instances_gt.json that its README records', INSTANCES_GT, () => {
    const gt = readDataset(INSTANCES_GT);
    const images = new Map(gt.images.map((img) => [img.id, img]));
    const results = gt.annotations
      .filter((a) => !a.iscrowd)
      .map((a: CocoAnnotation) => {
        const img = images.get(a.image_id)!;
        return { image_id: a.image_id, category_id: a.category_id, bbox: a.bbox!, score: 1, segmentation: annotationToRle(a, img.height, img.width) };
      });
    for (const iouType of ['segm', 'bbox'] as const) {
      const { stats } = evaluateCoco(gt, results, { iouType });
      [1, 1, 1, 1, 1, 1, 0.6907, 0.9691, 1, 1, 1, 1].forEach((v, i) => expect(stats[i]).toBeCloseTo(v, 3));
    }
  });
});

describe('formatCocoStats', () => {
  it('prints pycocotools\' table, rounding exact ties to even like Python', () => {
    const r = evaluateCoco(tinyDataset(), [tinyResult([10, 10, 20, 20], 0.9)], { maxDets: [10, 100, 1000] });
    r.stats = [0.0625, 0.1875, 1, -1, 0.5, 0.123456, 0, 0, 0, 0, 0, 0];
    const lines = formatCocoStats(r).split('\n');
    expect(lines).toHaveLength(12);
    expect(lines.slice(0, 4)).toEqual([
      ' Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.062',
      ' Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=1000 ] = 0.188',
      ' Average Precision  (AP) @[ IoU=0.75      | area=   all | maxDets=1000 ] = 1.000',
      ' Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=1000 ] = -1.000',
    ]);
    expect(lines[6]).toBe(' Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets= 10 ] = 0.000');
  });
});

describe('toCocoResults', () => {
  it('turns instances into COCO results', () => {
    const mask: Rle = { size: [2, 2], counts: '0211' };
    expect(toCocoResults(5, [{ categoryId: 3, score: 0.5, box: [0, 0, 1, 2], mask }])).toEqual([
      { image_id: 5, category_id: 3, bbox: [0, 0, 1, 2], score: 0.5, segmentation: { size: [2, 2], counts: '0211' } },
    ]);
  });

  it.each([
    ['a fractional image id', 1.5, [{ categoryId: 1, score: 1, box: [0, 0, 1, 1], mask: { size: [1, 1], counts: '01' } }]],
    ['a negative box', 1, [{ categoryId: 1, score: 1, box: [0, 0, -1, 1], mask: { size: [1, 1], counts: '01' } }]],
    ['a NaN score', 1, [{ categoryId: 1, score: NaN, box: [0, 0, 1, 1], mask: { size: [1, 1], counts: '01' } }]],
    ['an uncompressed mask', 1, [{ categoryId: 1, score: 1, box: [0, 0, 1, 1], mask: { size: [1, 1], counts: [0, 1] } }]],
  ])('rejects %s with ERR_INPUT', (_why, imageId, instances) => {
    expectFoveaError(() => toCocoResults(imageId as number, instances as never), 'ERR_INPUT');
  });
});

describe('bad input', () => {
  const ok = () => [tinyResult([10, 10, 20, 20], 0.9)];
  const withResult = (patch: Partial<Record<keyof CocoResult, unknown>>) => [{ ...ok()[0]!, ...patch } as CocoResult];

  it.each([
    ['an unknown image id', withResult({ image_id: 8 }), /image_id 8/],
    ['an unknown category', withResult({ category_id: 99 }), /category_id 99/],
    ['a box with 3 numbers', withResult({ bbox: [1, 2, 3] }), /bbox/],
    ['a box with a negative width', withResult({ bbox: [1, 2, -3, 4] }), /negative/],
    ['a NaN box', withResult({ bbox: [1, NaN, 3, 4] }), /bbox/],
    ['a missing score', withResult({ score: undefined }), /score/],
    ['no segmentation', withResult({ segmentation: undefined }), /segmentation/],
    ['a mask of another size', withResult({ segmentation: { size: [50, 100], counts: '0`9' } }), /size/],
    ['a broken mask', withResult({ segmentation: { size: [100, 100], counts: '0a' } }), /RLE/],
  ])('rejects a result with %s (ERR_INPUT)', (_why, results, message) => {
    expectFoveaError(() => evaluateCoco(tinyDataset(), results, { iouType: 'segm' }), 'ERR_INPUT', message);
  });

  it.each([
    ['iouType keypoints', { iouType: 'keypoints' }, /iouType/],
    ['two maxDets', { maxDets: [1, 10] }, /maxDets/],
    ['repeated maxDets', { maxDets: [10, 10, 100] }, /distinct/],
    ['fractional maxDets', { maxDets: [1, 10, 99.5] }, /maxDets/],
    ['a string for useCats', { useCats: 'no' }, /useCats/],
    ['an unknown image id', { imageIds: [7, 8] }, /imageIds: 8/],
    ['an empty image list', { imageIds: [] }, /imageIds/],
  ])('rejects %s (ERR_OPTIONS)', (_why, options, message) => {
    expectFoveaError(() => evaluateCoco(tinyDataset(), ok(), options as CocoEvalOptions), 'ERR_OPTIONS', message);
  });

  const withAnnotation = (patch: Record<string, unknown>, iouType: 'segm' | 'bbox' = 'segm') => () => {
    const gt = tinyDataset();
    gt.annotations[0] = { ...gt.annotations[0]!, ...patch } as CocoAnnotation;
    evaluateCoco(gt, ok(), { iouType });
  };
  it.each([
    ['a repeated id', withAnnotation({ id: 2 }), /appears twice/],
    ['id 0', withAnnotation({ id: 0 }), /positive/],
    ['an unknown image', withAnnotation({ image_id: 3 }), /image_id 3/],
    ['an unknown category', withAnnotation({ category_id: 3 }), /category_id 3/],
    ['no area', withAnnotation({ area: undefined }), /area/],
    ['iscrowd 2', withAnnotation({ iscrowd: 2 }), /iscrowd/],
    ['no segmentation for segm', withAnnotation({ segmentation: undefined }), /segmentation/],
    ['no bbox for bbox', withAnnotation({ bbox: undefined }, 'bbox'), /bbox/],
    ['an odd polygon', withAnnotation({ segmentation: [[1, 2, 3, 4, 5, 6, 7]] }), /even/],
    ['a two-point polygon after a longer one', withAnnotation({ segmentation: [[1, 1, 5, 1, 5, 5], [1, 2, 3, 4]] }), /at least 6/],
    ['no polygons', withAnnotation({ segmentation: [] }), /empty/],
    ['a far-off vertex', withAnnotation({ segmentation: [[1, 1, 5, 1, 5, 1e9]] }), /far outside/],
    ['RLE runs that do not cover the image', withAnnotation({ segmentation: { size: [100, 100], counts: [5, 5] } }), /cover/],
    ['negative RLE runs', withAnnotation({ segmentation: { size: [100, 100], counts: [10001, -1] } }), /counts/],
    ['an RLE of another size', withAnnotation({ segmentation: { size: [10, 1000], counts: [10000] } }), /size/],
  ])('rejects a ground truth annotation with %s (ERR_INPUT)', (_why, run, message) => {
    expectFoveaError(run, 'ERR_INPUT', message);
  });

  it('rejects a data set without annotations, or with a bad image size (ERR_INPUT)', () => {
    expectFoveaError(() => evaluateCoco({ images: [], categories: [] } as unknown as CocoDataset, []), 'ERR_INPUT', /annotations/);
    const gt = { ...tinyDataset(), images: [{ id: 7, width: 0, height: 100 }] };
    expectFoveaError(() => evaluateCoco(gt, []), 'ERR_INPUT', /image size/);
    expectFoveaError(() => annotationToRle({ segmentation: [[1, 1, 5, 1, 5, 5]] }, 10.5, 10), 'ERR_INPUT', /image size/);
  });
});
