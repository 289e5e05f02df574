/**
 * COCO instances data sets, detection results and their evaluation: a port of
 * pycocotools' COCOeval (evaluate, accumulate, summarize) for 'segm' and
 * 'bbox', and of the mask conversions it relies on (common/maskApi.c), kept
 * faithful down to tie-breaking so that every metric agrees with pycocotools.
 */
import { FoveaError } from './errors';
import { countsFromString, countsToString, maskToBox, type Rle } from './rle';

export type Box = [x: number, y: number, width: number, height: number];

/** A polygon as COCO stores it: [x1, y1, x2, y2, ...] in pixel coordinates. */
export type Polygon = number[];

/** Uncompressed RLE (COCO crowd regions): run lengths, column-major, starting with a 0-run. */
export interface UncompressedRle {
  size: [height: number, width: number];
  counts: number[];
}

export type Segmentation = Polygon[] | UncompressedRle | Rle;

export interface CocoImage {
  id: number;
  width: number;
  height: number;
  file_name?: string;
}

export interface CocoAnnotation {
  id: number;
  image_id: number;
  category_id: number;
  /** Needed for iouType 'segm'. */
  segmentation?: Segmentation;
  /** The area used for the small/medium/large ranges (pycocotools takes it as given). */
  area: number;
  /** Needed for iouType 'bbox'. */
  bbox?: Box;
  /** 1 marks a crowd region: matches to it are neither true nor false positives. Absent means 0. */
  iscrowd?: 0 | 1;
}

export interface CocoCategory {
  id: number;
  name: string;
  supercategory?: string;
}

export interface CocoDataset {
  images: CocoImage[];
  annotations: CocoAnnotation[];
  categories: CocoCategory[];
}

/** One detection in the COCO results format. */
export interface CocoResult {
  image_id: number;
  category_id: number;
  bbox: Box;
  score: number;
  /** Needed for iouType 'segm'. */
  segmentation?: Rle;
}

export interface CocoEvalOptions {
  /** Default 'segm'. */
  iouType?: 'segm' | 'bbox';
  /** false ignores categories, as for class-agnostic proposals. Default true. */
  useCats?: boolean;
  /** Three detection limits per image, e.g. [10, 100, 1000] for proposals. Default [1, 10, 100]. */
  maxDets?: number[];
  /** Images to evaluate. Default: every image of the data set. */
  imageIds?: number[];
}

export interface CocoEvalResult {
  iouType: 'segm' | 'bbox';
  useCats: boolean;
  /** Sorted ascending, as pycocotools sorts them. */
  maxDets: [number, number, number];
  /** The 12 values of pycocotools' COCOeval.stats, in its order; -1 where there was nothing to measure. */
  stats: number[];
  /**
   * The same values by name: AP, AP50, AP75, APs, APm, APl, then AR@<maxDet> for each maxDet and
   * ARs@<m>, ARm@<m>, ARl@<m> at the largest maxDet m.
   */
  named: Record<string, number>;
}

function inputError(message: string): never {
  throw new FoveaError('ERR_INPUT', message);
}

function optionsError(message: string): never {
  throw new FoveaError('ERR_OPTIONS', message);
}

const isInteger = (v: unknown): v is number => Number.isSafeInteger(v);
const isFiniteNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

function checkBox(box: unknown, what: string): Box {
  if (!Array.isArray(box) || box.length !== 4 || !box.every(isFiniteNumber)) {
    inputError(`${what}: bbox must be [x, y, width, height] of finite numbers, got ${JSON.stringify(box)}`);
  }
  if (box[2] < 0 || box[3] < 0) inputError(`${what}: bbox ${JSON.stringify(box)} has a negative width or height`);
  return box as Box;
}

// ---------------------------------------------------------------------------
// Segmentations to RLE (pycocotools COCO.annToRLE)

/** maskApi.c rleFrPoly: rasterises a polygon by walking its boundary upsampled 5x. */
function polygonRuns(xy: ArrayLike<number>, h: number, w: number): number[] {
  const scale = 5;
  const k = xy.length >> 1;
  // Int32Array stores truncate toward zero like C's (int) casts.
  const x = new Int32Array(k + 1);
  const y = new Int32Array(k + 1);
  for (let j = 0; j < k; j++) {
    x[j] = scale * xy[2 * j]! + 0.5;
    y[j] = scale * xy[2 * j + 1]! + 0.5;
  }
  x[k] = x[0]!;
  y[k] = y[0]!;
  let n = 0;
  for (let j = 0; j < k; j++) n += Math.max(Math.abs(x[j]! - x[j + 1]!), Math.abs(y[j]! - y[j + 1]!)) + 1;
  const u = new Int32Array(n);
  const v = new Int32Array(n);
  let m = 0;
  for (let j = 0; j < k; j++) {
    let xs = x[j]!;
    let xe = x[j + 1]!;
    let ys = y[j]!;
    let ye = y[j + 1]!;
    const dx = Math.abs(xe - xs);
    const dy = Math.abs(ys - ye);
    const flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
    if (flip) {
      [xs, xe] = [xe, xs];
      [ys, ye] = [ye, ys];
    }
    // A repeated vertex gives s = NaN; its single point shares u with both neighbours, so v is never read.
    const s = dx >= dy ? (ye - ys) / dx : (xe - xs) / dy;
    if (dx >= dy) {
      for (let d = 0; d <= dx; d++) {
        const t = flip ? dx - d : d;
        u[m] = t + xs;
        v[m] = ys + s * t + 0.5;
        m++;
      }
    } else {
      for (let d = 0; d <= dy; d++) {
        const t = flip ? dy - d : d;
        v[m] = t + ys;
        u[m] = xs + s * t + 0.5;
        m++;
      }
    }
  }
  // Points where the boundary crosses a pixel column centre, downsampled: each starts or ends a run.
  const starts: number[] = [];
  for (let j = 1; j < m; j++) {
    if (u[j] === u[j - 1]) continue;
    const xd = ((u[j]! < u[j - 1]! ? u[j]! : u[j]! - 1) + 0.5) / scale - 0.5;
    if (Math.floor(xd) !== xd || xd < 0 || xd > w - 1) continue;
    let yd = ((v[j]! < v[j - 1]! ? v[j]! : v[j - 1]!) + 0.5) / scale - 0.5;
    if (yd < 0) yd = 0;
    else if (yd > h) yd = h;
    starts.push(xd * h + Math.ceil(yd));
  }
  starts.push(h * w);
  starts.sort((a, b) => a - b);
  let prev = 0;
  for (let j = 0; j < starts.length; j++) {
    const t = starts[j]!;
    starts[j] = t - prev;
    prev = t;
  }
  // Zero-length runs are dropped by joining their neighbours.
  const runs = [starts[0]!];
  for (let j = 1; j < starts.length; ) {
    if (starts[j]! > 0) {
      runs.push(starts[j++]!);
    } else {
      j++;
      if (j < starts.length) runs[runs.length - 1] += starts[j++]!;
    }
  }
  return runs;
}

/** maskApi.c rleMerge (union), kept run for run so that the compressed strings agree too. */
function unionRuns(masks: number[][]): number[] {
  let acc = masks[0]!;
  for (let i = 1; i < masks.length; i++) {
    const a = acc;
    const b = masks[i]!;
    const out: number[] = [];
    let ca = a[0]!;
    let cb = b[0]!;
    let ia = 1;
    let ib = 1;
    let va = false;
    let vb = false;
    let v = false;
    let cc = 0;
    let ct = 1;
    while (ct > 0) {
      const c = Math.min(ca, cb);
      cc += c;
      ct = 0;
      ca -= c;
      if (!ca && ia < a.length) {
        ca = a[ia++]!;
        va = !va;
      }
      ct += ca;
      cb -= c;
      if (!cb && ib < b.length) {
        cb = b[ib++]!;
        vb = !vb;
      }
      ct += cb;
      const vp: boolean = v;
      v = va || vb;
      if (v !== vp || ct === 0) {
        out.push(cc);
        cc = 0;
      }
    }
    acc = out;
  }
  return acc;
}

function checkImageSize(height: unknown, width: unknown): void {
  if (!isInteger(height) || !isInteger(width) || height < 1 || width < 1 || height * width > 2 ** 31) {
    inputError(`image size ${String(height)}x${String(width)} must be two positive integers with fewer than 2^31 pixels`);
  }
}

function polygonsToRuns(polygons: unknown[], h: number, w: number, what: string): number[] {
  if (polygons.length === 0) inputError(`${what}: segmentation is an empty list of polygons`);
  for (const p of polygons) {
    if (!Array.isArray(p) || !p.every(isFiniteNumber)) inputError(`${what}: a polygon must be an array of finite numbers`);
    // Far-off vertices would only be clipped away, after costing memory in proportion to their distance.
    for (let j = 0; j < p.length; j++) {
      const extent = j % 2 ? h : w;
      if (p[j] < -extent || p[j] > 2 * extent) {
        inputError(`${what}: polygon coordinate ${p[j]} lies far outside the ${h}x${w} image`);
      }
    }
  }
  const parts = polygons as number[][];
  // pycocotools' frPyObjects reads a list whose first entry has 4 numbers as boxes [x, y, w, h].
  if (parts[0]!.length === 4) {
    if (!parts.every((p) => p.length === 4)) {
      inputError(`${what}: a polygon list starting with 4 numbers must hold only boxes`);
    }
    return unionRuns(
      parts.map(([bx, by, bw, bh]) => polygonRuns([bx!, by!, bx!, by! + bh!, bx! + bw!, by! + bh!, bx! + bw!, by!], h, w)),
    );
  }
  for (const p of parts) {
    if (p.length < 6 || p.length % 2) {
      inputError(`${what}: a polygon needs an even number (at least 6) of coordinates, got ${p.length}`);
    }
  }
  return unionRuns(parts.map((p) => polygonRuns(p, h, w)));
}

function checkRleSize(size: unknown, h: number, w: number, what: string): void {
  if (!Array.isArray(size) || size.length !== 2 || size[0] !== h || size[1] !== w) {
    inputError(`${what}: mask size ${JSON.stringify(size)} differs from the image size [${h}, ${w}]`);
  }
}

function segmentationToRle(seg: unknown, h: number, w: number, what: string): Rle {
  if (Array.isArray(seg)) return { size: [h, w], counts: countsToString(polygonsToRuns(seg, h, w, what)) };
  if (!isObject(seg)) inputError(`${what}: segmentation must be polygons or an RLE object`);
  checkRleSize(seg['size'], h, w, what);
  const counts = seg['counts'];
  let runs: number[];
  if (typeof counts === 'string') {
    runs = countsFromString(counts);
  } else if (Array.isArray(counts) && counts.every((c) => isInteger(c) && c >= 0 && c < 2 ** 32)) {
    runs = counts as number[];
  } else {
    inputError(`${what}: RLE counts must be a string or an array of non-negative 32-bit integers`);
  }
  const total = runs.reduce((x, y) => x + y, 0);
  if (total !== h * w) inputError(`${what}: RLE runs cover ${total} pixels, the image has ${h * w}`);
  return { size: [h, w], counts: typeof counts === 'string' ? counts : countsToString(runs) };
}

/**
 * A COCO segmentation (polygons, uncompressed RLE or compressed RLE) as compressed RLE, exactly as
 * pycocotools' COCO.annToRLE makes it: polygons are rasterised like maskApi.c and merged into one mask.
 */
export function annotationToRle(ann: { id?: number; segmentation?: Segmentation }, height: number, width: number): Rle {
  checkImageSize(height, width);
  if (!isObject(ann)) inputError('annotation: expected an object');
  return segmentationToRle(ann.segmentation, height, width, ann.id === undefined ? 'annotation' : `annotation ${ann.id}`);
}

// ---------------------------------------------------------------------------
// IoU (maskApi.c bbIou and rleIou)

interface Mask {
  runs: number[];
  area: number;
  box: Box;
}

function maskOf(rle: Rle): Mask {
  const runs = countsFromString(rle.counts);
  let area = 0;
  for (let r = 1; r < runs.length; r += 2) area += runs[r]!;
  return { runs, area, box: maskToBox(rle) };
}

/** Box IoU; for a crowd ground truth the intersection is divided by the detection's area alone. */
function boxIou(d: Box, g: Box, crowd: boolean): number {
  const iw = Math.min(d[2] + d[0], g[2] + g[0]) - Math.max(d[0], g[0]);
  if (iw <= 0) return 0;
  const ih = Math.min(d[3] + d[1], g[3] + g[1]) - Math.max(d[1], g[1]);
  if (ih <= 0) return 0;
  const da = d[2] * d[3];
  const i = iw * ih;
  return i / (crowd ? da : da + g[2] * g[3] - i);
}

function intersectRuns(a: number[], b: number[]): number {
  let ia = 0;
  let ib = 0;
  let ra = a[0]!;
  let rb = b[0]!;
  let inter = 0;
  while (ia < a.length && ib < b.length) {
    const step = Math.min(ra, rb);
    if (ia & ib & 1) inter += step;
    ra -= step;
    rb -= step;
    if (ra === 0) ra = a[++ia]!;
    if (rb === 0) rb = b[++ib]!;
  }
  return inter;
}

/** Mask IoU with the crowd rule; the box test first only skips pairs that cannot overlap. */
function maskIouCrowd(d: Mask, g: Mask, crowd: boolean): number {
  if (boxIou(d.box, g.box, crowd) <= 0) return 0;
  const i = intersectRuns(d.runs, g.runs);
  if (i === 0) return 0;
  return i / (crowd ? d.area : d.area + g.area - i);
}

// ---------------------------------------------------------------------------
// Evaluation (pycocotools cocoeval.py)

/** What IoU is measured on: the box for 'bbox', the mask for 'segm'. */
type Region = Box | Mask;

interface GroundTruth {
  crowd: boolean;
  area: number;
  region: Region;
}

interface Detection {
  score: number;
  area: number;
  region: Region;
}

function regionIou(d: Region, g: Region, crowd: boolean): number {
  return Array.isArray(d) ? boxIou(d, g as Box, crowd) : maskIouCrowd(d, g as Mask, crowd);
}

/** numpy.linspace(start, stop, num): i * step + start, with the last value exactly stop. */
function linspace(start: number, stop: number, num: number): number[] {
  const step = (stop - start) / (num - 1);
  return Array.from({ length: num }, (_, i) => (i === num - 1 ? stop : i * step + start));
}

const IOU_THRS = linspace(0.5, 0.95, 10);
const REC_THRS = linspace(0, 1, 101);
const AREA_RANGES: readonly { label: AreaLabel; lo: number; hi: number }[] = [
  { label: 'all', lo: 0, hi: 1e10 },
  { label: 'small', lo: 0, hi: 32 ** 2 },
  { label: 'medium', lo: 32 ** 2, hi: 96 ** 2 },
  { label: 'large', lo: 96 ** 2, hi: 1e10 },
];
/** np.spacing(1), which pycocotools adds to the precision's denominator. */
const EPS = 2 ** -52;

type AreaLabel = 'all' | 'small' | 'medium' | 'large';

interface StatDef {
  name: string;
  ap: boolean;
  iouThr: number | undefined;
  area: AreaLabel;
  maxDet: number;
}

/** The 12 summary values of pycocotools' _summarizeDets, in its order. */
function statDefs(maxDets: readonly [number, number, number]): StatDef[] {
  const [m0, m1, m2] = maxDets;
  const def = (name: string, ap: boolean, iouThr: number | undefined, area: AreaLabel, maxDet: number): StatDef => ({
    name,
    ap,
    iouThr,
    area,
    maxDet,
  });
  return [
    // pycocotools hard-codes maxDets=100 for the first value: it is -1 when 100 is not one of maxDets.
    def('AP', true, undefined, 'all', 100),
    def('AP50', true, 0.5, 'all', m2),
    def('AP75', true, 0.75, 'all', m2),
    def('APs', true, undefined, 'small', m2),
    def('APm', true, undefined, 'medium', m2),
    def('APl', true, undefined, 'large', m2),
    def(`AR@${m0}`, false, undefined, 'all', m0),
    def(`AR@${m1}`, false, undefined, 'all', m1),
    def(`AR@${m2}`, false, undefined, 'all', m2),
    def(`ARs@${m2}`, false, undefined, 'small', m2),
    def(`ARm@${m2}`, false, undefined, 'medium', m2),
    def(`ARl@${m2}`, false, undefined, 'large', m2),
  ];
}

/** evaluateImg's output for one image, category and area range. */
interface ImageEval {
  /** Detections, best first, at most the largest maxDet. */
  scores: number[];
  /** [threshold * D + detection]: matched to a ground truth. */
  matched: Uint8Array;
  /** [threshold * D + detection]: neither a true nor a false positive. */
  ignored: Uint8Array;
  /** Ground truths that count (not crowd, area in range). */
  counted: number;
}

function checkOptions(options: CocoEvalOptions | undefined): {
  iouType: 'segm' | 'bbox';
  useCats: boolean;
  maxDets: [number, number, number];
  imageIds: unknown;
} {
  if (options !== undefined && !isObject(options)) optionsError('options must be an object');
  const { iouType = 'segm', useCats = true, maxDets = [1, 10, 100], imageIds } = options ?? {};
  if (iouType !== 'segm' && iouType !== 'bbox') {
    optionsError(`iouType must be 'segm' or 'bbox', got ${JSON.stringify(iouType)}`);
  }
  if (typeof useCats !== 'boolean') optionsError(`useCats must be a boolean, got ${JSON.stringify(useCats)}`);
  if (!Array.isArray(maxDets) || maxDets.length !== 3 || !maxDets.every((m) => isInteger(m) && m > 0)) {
    optionsError(`maxDets must be three positive integers, got ${JSON.stringify(maxDets)}`);
  }
  const sorted = [...maxDets].sort((a, b) => a - b) as [number, number, number];
  if (sorted[0] === sorted[1] || sorted[1] === sorted[2]) {
    optionsError(`maxDets must be distinct, got ${JSON.stringify(maxDets)}`);
  }
  return { iouType, useCats, maxDets: sorted, imageIds };
}

/** The images to evaluate, sorted and unique as pycocotools makes them. */
function selectImages(only: unknown, images: ReadonlyMap<number, CocoImage>): number[] {
  if (only === undefined) return [...images.keys()].sort((a, b) => a - b);
  if (!Array.isArray(only) || only.length === 0) optionsError('imageIds must be a non-empty array of image ids');
  for (const id of only) {
    if (!images.has(id)) optionsError(`imageIds: ${JSON.stringify(id)} is not an image of the data set`);
  }
  return [...new Set(only as number[])].sort((a, b) => a - b);
}

function indexDataset(gt: CocoDataset) {
  if (!isObject(gt) || !Array.isArray(gt.images) || !Array.isArray(gt.annotations) || !Array.isArray(gt.categories)) {
    inputError('the data set must have images, annotations and categories arrays');
  }
  const images = new Map<number, CocoImage>();
  for (const img of gt.images) {
    if (!isObject(img) || !isInteger(img.id)) {
      inputError(`image ${JSON.stringify(isObject(img) ? img.id : img)}: id must be an integer`);
    }
    if (images.has(img.id)) inputError(`image id ${img.id} appears twice`);
    checkImageSize(img.height, img.width);
    images.set(img.id, img);
  }
  const categories = new Set<number>();
  for (const cat of gt.categories) {
    if (!isObject(cat) || !isInteger(cat.id)) inputError('category ids must be integers');
    if (categories.has(cat.id)) inputError(`category id ${cat.id} appears twice`);
    categories.add(cat.id);
  }
  const annIds = new Set<number>();
  for (const ann of gt.annotations) {
    // pycocotools treats a match to annotation id 0 as no match, so ids must be positive.
    if (!isObject(ann) || !isInteger(ann.id) || ann.id < 1) {
      inputError(`annotation ids must be positive integers, got ${JSON.stringify(isObject(ann) ? ann.id : ann)}`);
    }
    const what = `annotation ${ann.id}`;
    if (annIds.has(ann.id)) inputError(`${what}: id appears twice`);
    annIds.add(ann.id);
    if (!images.has(ann.image_id)) {
      inputError(`${what}: image_id ${JSON.stringify(ann.image_id)} is not an image of the data set`);
    }
    if (!categories.has(ann.category_id)) {
      inputError(`${what}: category_id ${JSON.stringify(ann.category_id)} is not a category of the data set`);
    }
    if (!isFiniteNumber(ann.area) || ann.area < 0) {
      inputError(`${what}: area must be a non-negative number, got ${JSON.stringify(ann.area)}`);
    }
    if (ann.iscrowd !== undefined && ann.iscrowd !== 0 && ann.iscrowd !== 1) inputError(`${what}: iscrowd must be 0 or 1`);
  }
  return { images, categories };
}

function checkResult(
  r: CocoResult,
  i: number,
  images: ReadonlyMap<number, CocoImage>,
  categories: ReadonlySet<number>,
  segm: boolean,
): void {
  const what = `result ${i}`;
  if (!isObject(r)) inputError(`${what}: expected an object`);
  if (!images.has(r.image_id)) inputError(`${what}: image_id ${JSON.stringify(r.image_id)} is not an image of the data set`);
  if (!categories.has(r.category_id)) {
    inputError(`${what}: category_id ${JSON.stringify(r.category_id)} is not a category of the data set`);
  }
  if (!isFiniteNumber(r.score)) inputError(`${what}: score must be a finite number, got ${JSON.stringify(r.score)}`);
  checkBox(r.bbox, what);
  if (segm) {
    if (!isObject(r.segmentation)) inputError(`${what}: iouType 'segm' needs a segmentation (compressed RLE)`);
    const img = images.get(r.image_id)!;
    checkRleSize(r.segmentation.size, img.height, img.width, what);
    if (typeof r.segmentation.counts !== 'string') {
      inputError(`${what}: segmentation counts must be a compressed RLE string`);
    }
  }
}

/** Stable sort, best score first: numpy's argsort(-score, kind='mergesort'). */
function byScore<T extends { score: number }>(items: T[]): T[] {
  return [...items].sort((a, b) => b.score - a.score);
}

/** COCOeval.evaluateImg for one image and category (or all categories) and one area range. */
function evaluateImage(gts: GroundTruth[], dts: Detection[], ious: Float64Array, lo: number, hi: number): ImageEval {
  const G = gts.length;
  const D = dts.length;
  const outside = (a: number) => a < lo || a > hi;
  // Ground truths that do not count go last (stable), so a match to one is only taken when no other is left.
  const order = gts.map((_, g) => g);
  const ignoreOf = gts.map((g) => g.crowd || outside(g.area));
  order.sort((a, b) => Number(ignoreOf[a]) - Number(ignoreOf[b]));
  const gtIgnore = order.map((g) => ignoreOf[g]!);
  const crowd = order.map((g) => gts[g]!.crowd);
  const T = IOU_THRS.length;
  const matched = new Uint8Array(T * D);
  const ignored = new Uint8Array(T * D);
  const gtMatched = new Uint8Array(G);
  for (let t = 0; t < T; t++) {
    gtMatched.fill(0);
    for (let d = 0; d < D; d++) {
      let best = Math.min(IOU_THRS[t]!, 1 - 1e-10);
      let m = -1;
      for (let g = 0; g < G; g++) {
        if (gtMatched[g] && !crowd[g]) continue;
        if (m > -1 && !gtIgnore[m] && gtIgnore[g]) break;
        const iou = ious[d * G + order[g]!]!;
        if (iou < best) continue;
        best = iou;
        m = g;
      }
      if (m === -1) continue;
      ignored[t * D + d] = gtIgnore[m] ? 1 : 0;
      matched[t * D + d] = 1;
      gtMatched[m] = 1;
    }
  }
  for (let d = 0; d < D; d++) {
    if (!outside(dts[d]!.area)) continue;
    for (let t = 0; t < T; t++) if (!matched[t * D + d]) ignored[t * D + d] = 1;
  }
  return { scores: dts.map((d) => d.score), matched, ignored, counted: gtIgnore.filter((x) => !x).length };
}

/**
 * COCOeval.accumulate for one category and area range at one maxDet: the interpolated precision
 * at each recall threshold ([t * R + r], 0 past the highest recall reached) and the final recall
 * ([t]), per IoU threshold; undefined where no ground truth counts.
 */
function accumulate(evals: ImageEval[], maxDet: number): { precision: Float64Array; recall: Float64Array } | undefined {
  const counted = evals.reduce((n, e) => n + e.counted, 0);
  if (counted === 0) return undefined;
  // Every image's best maxDet detections, merged by score (stable, in image order).
  const pool: { score: number; e: ImageEval; d: number; D: number }[] = [];
  for (const e of evals) {
    const D = e.scores.length;
    for (let d = 0; d < Math.min(D, maxDet); d++) pool.push({ score: e.scores[d]!, e, d, D });
  }
  const sorted = byScore(pool);
  const nd = sorted.length;
  const [T, R] = [IOU_THRS.length, REC_THRS.length];
  const precision = new Float64Array(T * R);
  const recall = new Float64Array(T);
  const rc = new Float64Array(nd);
  const pr = new Float64Array(nd);
  for (let t = 0; t < T; t++) {
    let tp = 0;
    let fp = 0;
    sorted.forEach(({ e, d, D }, i) => {
      if (!e.ignored[t * D + d]) {
        if (e.matched[t * D + d]) tp++;
        else fp++;
      }
      rc[i] = tp / counted;
      pr[i] = tp / (fp + tp + EPS);
    });
    recall[t] = nd ? rc[nd - 1]! : 0;
    // Precision envelope: the best precision at this recall or any higher one.
    for (let i = nd - 1; i > 0; i--) if (pr[i]! > pr[i - 1]!) pr[i - 1] = pr[i]!;
    let i = 0;
    for (let r = 0; r < R; r++) {
      while (i < nd && rc[i]! < REC_THRS[r]!) i++;
      if (i === nd) break;
      precision[t * R + r] = pr[i]!;
    }
  }
  return { precision, recall };
}

/**
 * COCO evaluation of `results` against the ground truth `gt`, reproducing pycocotools'
 * COCOeval(iouType).evaluate(), accumulate() and summarize(): IoU thresholds .50:.05:.95,
 * 101 recall points, area ranges all/small/medium/large (ground truth by its `area` field,
 * detections by bbox width * height, as pycocotools' loadRes sets it), crowd regions ignored.
 * Results of images outside `imageIds` are left out.
 */
export function evaluateCoco(gt: CocoDataset, results: readonly CocoResult[], options?: CocoEvalOptions): CocoEvalResult {
  const { iouType, useCats, maxDets, imageIds } = checkOptions(options);
  const { images, categories } = indexDataset(gt);
  const segm = iouType === 'segm';
  if (!Array.isArray(results)) inputError('results must be an array');
  results.forEach((r, i) => checkResult(r, i, images, categories, segm));
  const imgIds = selectImages(imageIds, images);
  const catIds = [...categories].sort((a, b) => a - b);
  const catKeys = useCats ? catIds : [-1];
  const key = (img: number, cat: number) => `${img}/${useCats ? cat : -1}`;
  const evaluated = new Set(imgIds);

  // Without categories, an image's regions are taken category by category, in ascending id order.
  const gtGroups = new Map<string, GroundTruth[]>();
  const annsByCat = gt.annotations.filter((a) => evaluated.has(a.image_id));
  if (!useCats) annsByCat.sort((a, b) => a.category_id - b.category_id);
  for (const ann of annsByCat) {
    const img = images.get(ann.image_id)!;
    const what = `annotation ${ann.id}`;
    const region = segm
      ? maskOf(segmentationToRle(ann.segmentation, img.height, img.width, what))
      : checkBox(ann.bbox, what);
    const k = key(ann.image_id, ann.category_id);
    const list = gtGroups.get(k) ?? [];
    list.push({ crowd: ann.iscrowd === 1, area: ann.area, region });
    gtGroups.set(k, list);
  }
  const dtGroups = new Map<string, Detection[]>();
  const resultsByCat = results.filter((r) => evaluated.has(r.image_id));
  if (!useCats) resultsByCat.sort((a, b) => a.category_id - b.category_id);
  for (const r of resultsByCat) {
    const k = key(r.image_id, r.category_id);
    const list = dtGroups.get(k) ?? [];
    list.push({ score: r.score, area: r.bbox[2] * r.bbox[3], region: segm ? maskOf(r.segmentation!) : r.bbox });
    dtGroups.set(k, list);
  }

  // evalImgs[k][a][i], undefined where the image has neither ground truth nor detections.
  const maxDet = maxDets[2];
  const evalImgs = catKeys.map(() => AREA_RANGES.map(() => new Array<ImageEval | undefined>(imgIds.length)));
  catKeys.forEach((cat, k) => {
    imgIds.forEach((img, i) => {
      const gts = gtGroups.get(key(img, cat)) ?? [];
      const dts = byScore(dtGroups.get(key(img, cat)) ?? []).slice(0, maxDet);
      if (gts.length === 0 && dts.length === 0) return;
      const ious = new Float64Array(dts.length * gts.length);
      dts.forEach((d, di) =>
        gts.forEach((g, gi) => {
          ious[di * gts.length + gi] = regionIou(d.region, g.region, g.crowd);
        }),
      );
      AREA_RANGES.forEach(({ lo, hi }, a) => {
        evalImgs[k]![a]![i] = evaluateImage(gts, dts, ious, lo, hi);
      });
    });
  });

  // precision[t][r][k][a][m] and recall[t][k][a][m], -1 where undefined.
  const [T, R, K, A, M] = [IOU_THRS.length, REC_THRS.length, catKeys.length, AREA_RANGES.length, maxDets.length];
  const precision = new Float64Array(T * R * K * A * M).fill(-1);
  const recall = new Float64Array(T * K * A * M).fill(-1);
  for (let k = 0; k < K; k++) {
    for (let a = 0; a < A; a++) {
      const evals = evalImgs[k]![a]!.filter((e): e is ImageEval => e !== undefined);
      maxDets.forEach((md, m) => {
        const acc = accumulate(evals, md);
        if (!acc) return;
        for (let t = 0; t < T; t++) {
          recall[((t * K + k) * A + a) * M + m] = acc.recall[t]!;
          for (let r = 0; r < R; r++) precision[(((t * R + r) * K + k) * A + a) * M + m] = acc.precision[t * R + r]!;
        }
      });
    }
  }

  const defs = statDefs(maxDets);
  const stats = defs.map(({ ap, iouThr, area, maxDet: md }) => {
    const a = AREA_RANGES.findIndex((r) => r.label === area);
    const m = maxDets.indexOf(md);
    if (m < 0) return -1;
    const ts = iouThr === undefined ? IOU_THRS.map((_, t) => t) : IOU_THRS.flatMap((thr, t) => (thr === iouThr ? [t] : []));
    let sum = 0;
    let n = 0;
    const add = (v: number) => {
      if (v > -1) {
        sum += v;
        n++;
      }
    };
    for (const t of ts) {
      for (let k = 0; k < K; k++) {
        if (ap) for (let r = 0; r < R; r++) add(precision[(((t * R + r) * K + k) * A + a) * M + m]!);
        else add(recall[((t * K + k) * A + a) * M + m]!);
      }
    }
    return n === 0 ? -1 : sum / n;
  });
  return { iouType, useCats, maxDets, stats, named: Object.fromEntries(defs.map((d, i) => [d.name, stats[i]!])) };
}

/** Python's '{:0.3f}': like toFixed(3), but exact ties (odd multiples of 1/16) round to even. */
function fixed3(x: number): string {
  if (Number.isInteger(x * 16) && Math.abs(x * 16) % 2 === 1) {
    const lower = Math.floor(x * 1000);
    return ((lower % 2 === 0 ? lower : lower + 1) / 1000).toFixed(3);
  }
  return x.toFixed(3);
}

/** The 12 lines that pycocotools' COCOeval.summarize() prints, for these results. */
export function formatCocoStats(result: CocoEvalResult): string {
  const range = `${IOU_THRS[0]!.toFixed(2)}:${IOU_THRS[IOU_THRS.length - 1]!.toFixed(2)}`;
  return statDefs(result.maxDets)
    .map(({ ap, iouThr, area, maxDet }, i) => {
      const title = (ap ? 'Average Precision' : 'Average Recall').padEnd(18);
      const iou = (iouThr === undefined ? range : iouThr.toFixed(2)).padEnd(9);
      const setting = `IoU=${iou} | area=${area.padStart(6)} | maxDets=${String(maxDet).padStart(3)}`;
      return ` ${title} ${ap ? '(AP)' : '(AR)'} @[ ${setting} ] = ${fixed3(result.stats[i]!)}`;
    })
    .join('\n');
}

/** Detections of one image (fovea's Instance objects, or anything shaped like them) as COCO results. */
export function toCocoResults(
  imageId: number,
  instances: readonly { categoryId: number; score: number; box: Box; mask: Rle }[],
): CocoResult[] {
  if (!isInteger(imageId)) inputError(`imageId must be an integer, got ${JSON.stringify(imageId)}`);
  if (!Array.isArray(instances)) inputError('instances must be an array');
  return instances.map((inst, i) => {
    const what = `instance ${i}`;
    if (!isObject(inst)) inputError(`${what}: expected an object`);
    if (!isInteger(inst.categoryId)) {
      inputError(`${what}: categoryId must be an integer, got ${JSON.stringify(inst.categoryId)}`);
    }
    if (!isFiniteNumber(inst.score)) inputError(`${what}: score must be a finite number, got ${JSON.stringify(inst.score)}`);
    const box = checkBox(inst.box, what);
    const mask = inst.mask;
    if (!isObject(mask) || typeof mask.counts !== 'string' || !Array.isArray(mask.size) || mask.size.length !== 2) {
      inputError(`${what}: mask must be a compressed RLE { size: [h, w], counts: string }`);
    }
    return {
      image_id: imageId,
      category_id: inst.categoryId,
      bbox: [box[0], box[1], box[2], box[3]],
      score: inst.score,
      segmentation: { size: [mask.size[0], mask.size[1]], counts: mask.counts },
    };
  });
}
