/**
 * COCO run-length encoding, compatible with pycocotools (common/maskApi.c).
 * Runs are counted over the mask in column-major order, alternating 0-runs
 * and 1-runs starting with a (possibly empty) 0-run; the compressed string
 * stores each count as 5-bit groups (+48), the counts after the second as
 * differences from the count two before.
 */
import { FoveaError } from './errors';

/** A mask in COCO's compressed RLE form, as pycocotools and the COCO results format use. */
export interface Rle {
  size: [height: number, width: number];
  counts: string;
}

/** A binary mask, row-major, one byte per pixel (0 or 1). */
export interface Bitmap {
  data: Uint8Array;
  width: number;
  height: number;
}

function invalid(message: string): never {
  throw new FoveaError('ERR_INPUT', `invalid RLE: ${message}`);
}

/** Compresses run counts into COCO's string form (maskApi.c rleToString). */
export function countsToString(counts: ArrayLike<number>): string {
  const out: number[] = [];
  for (let i = 0; i < counts.length; i++) {
    let x = counts[i]!;
    if (i > 2) x -= counts[i - 2]!;
    let more = true;
    while (more) {
      let c = x & 0x1f;
      x = Math.floor(x / 32); // arithmetic shift that stays exact beyond 2^31
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      out.push(c + 48);
    }
  }
  return String.fromCharCode(...out);
}

/** Inverse of countsToString (maskApi.c rleFrString), with validation. */
export function countsFromString(s: string): number[] {
  const counts: number[] = [];
  let p = 0;
  while (p < s.length) {
    let x = 0;
    let k = 0;
    let more = true;
    while (more) {
      if (p >= s.length) invalid('counts string ends inside a number');
      const c = s.charCodeAt(p) - 48;
      if (c < 0 || c > 63) invalid(`character ${JSON.stringify(s[p])} at ${p} is outside the RLE alphabet`);
      if (k > 6) invalid(`number at ${p} is too long`);
      x += (c & 0x1f) * 2 ** (5 * k);
      more = (c & 0x20) !== 0;
      p++;
      k++;
      if (!more && c & 0x10) x -= 2 ** (5 * k); // sign extension
    }
    if (counts.length > 2) x += counts[counts.length - 2]!;
    if (!Number.isSafeInteger(x) || x < 0) invalid(`run ${counts.length} has length ${x}`);
    counts.push(x);
  }
  return counts;
}

function checkSize(size: unknown): [number, number] {
  if (!Array.isArray(size) || size.length !== 2) invalid('size must be [height, width]');
  const [h, w] = size as unknown[];
  if (!Number.isSafeInteger(h) || !Number.isSafeInteger(w) || (h as number) < 0 || (w as number) < 0) {
    invalid(`size ${JSON.stringify(size)} must hold two non-negative integers`);
  }
  if ((h as number) * (w as number) > 2 ** 32) invalid(`size ${h}x${w} is too large`);
  return [h as number, w as number];
}

/** Runs of a mask, checked to cover exactly height*width pixels. */
function runsOf(rle: Rle): { counts: number[]; h: number; w: number } {
  if (typeof rle !== 'object' || rle === null) invalid('expected { size, counts }');
  const [h, w] = checkSize(rle.size);
  if (typeof rle.counts !== 'string') invalid('counts must be a string (compressed RLE)');
  const counts = countsFromString(rle.counts);
  let total = 0;
  for (const c of counts) total += c;
  if (total !== h * w) invalid(`runs cover ${total} pixels, size ${h}x${w} has ${h * w}`);
  return { counts, h, w };
}

/** Encodes a row-major binary bitmap (any non-zero byte is foreground). */
export function encodeMask(mask: Bitmap): Rle {
  const { data, width: w, height: h } = mask;
  checkSize([h, w]);
  if (data.length !== w * h) {
    throw new FoveaError('ERR_INPUT', `mask data has ${data.length} bytes for ${w}x${h}`);
  }
  const counts: number[] = [];
  let current = 0;
  let run = 0;
  for (let x = 0; x < w; x++) {
    for (let y = 0; y < h; y++) {
      const v = data[y * w + x] ? 1 : 0;
      if (v !== current) {
        counts.push(run);
        run = 0;
        current = v;
      }
      run++;
    }
  }
  counts.push(run);
  return { size: [h, w], counts: countsToString(counts) };
}

/** Decodes to a row-major bitmap of 0/1 bytes. */
export function decodeMask(rle: Rle): Bitmap {
  const { counts, h, w } = runsOf(rle);
  const data = new Uint8Array(h * w);
  let i = 0;
  for (let r = 0; r < counts.length; r++) {
    const end = i + counts[r]!;
    if (r & 1) {
      for (; i < end; i++) data[(i % h) * w + Math.floor(i / h)] = 1;
    }
    i = end;
  }
  return { data, width: w, height: h };
}

/** Number of foreground pixels (pycocotools area). */
export function maskArea(rle: Rle): number {
  const { counts } = runsOf(rle);
  let a = 0;
  for (let r = 1; r < counts.length; r += 2) a += counts[r]!;
  return a;
}

/** Tight box [x, y, width, height] of the foreground (pycocotools toBbox); zeros when empty. */
export function maskToBox(rle: Rle): [number, number, number, number] {
  const { counts, h } = runsOf(rle);
  let xs = Infinity;
  let ys = Infinity;
  let xe = -Infinity;
  let ye = -Infinity;
  let i = 0;
  for (let r = 0; r < counts.length; r++) {
    const start = i;
    i += counts[r]!;
    if (!(r & 1) || counts[r] === 0) continue;
    const last = i - 1;
    const x0 = Math.floor(start / h);
    const x1 = Math.floor(last / h);
    xs = Math.min(xs, x0);
    xe = Math.max(xe, x1);
    // A run that wraps to the next column covers every row in between.
    if (x1 > x0) {
      ys = 0;
      ye = h - 1;
    } else {
      ys = Math.min(ys, start % h);
      ye = Math.max(ye, last % h);
    }
  }
  if (xe < 0) return [0, 0, 0, 0];
  return [xs, ys, xe - xs + 1, ye - ys + 1];
}

/** Intersection over union of two masks of the same size (pycocotools iou, iscrowd=false). */
export function maskIou(a: Rle, b: Rle): number {
  const ra = runsOf(a);
  const rb = runsOf(b);
  if (ra.h !== rb.h || ra.w !== rb.w) {
    throw new FoveaError('ERR_INPUT', `masks differ in size: ${ra.h}x${ra.w} and ${rb.h}x${rb.w}`);
  }
  // Walk both run lists together, counting pixels that are 1 in both / either.
  let inter = 0;
  let union = 0;
  let ia = 0;
  let ib = 0;
  let leftA = ra.counts[0] ?? 0;
  let leftB = rb.counts[0] ?? 0;
  let pos = 0;
  const total = ra.h * ra.w;
  while (pos < total) {
    while (leftA === 0 && ia < ra.counts.length - 1) leftA = ra.counts[++ia]!;
    while (leftB === 0 && ib < rb.counts.length - 1) leftB = rb.counts[++ib]!;
    const step = Math.min(leftA, leftB);
    const va = ia & 1;
    const vb = ib & 1;
    if (va && vb) inter += step;
    if (va || vb) union += step;
    leftA -= step;
    leftB -= step;
    pos += step;
  }
  return union === 0 ? 0 : inter / union;
}
