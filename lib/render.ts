/**
 * Pictures of results: a mask as a PNG, and an image with its instances drawn
 * over it (translucent masks, boxes, label tags). Masks, outlines and boxes
 * are painted into one raw RGB buffer in plain loops, so the cost grows with
 * the masks' extent rather than with one full-image sharp composite per
 * instance; only the label tags go through librsvg, as small SVGs composited
 * in a single sharp call.
 */
import sharp from 'sharp';
import { FoveaError } from './errors';
import { decodeImage, type DecodeOptions, type ImageInput } from './image';
import { countsFromString, decodeMask, type Bitmap, type Rle } from './rle';

/** An 8-bit sRGB colour, channels 0-255. */
export type Rgb = readonly [r: number, g: number, b: number];
/** An 8-bit sRGB colour with an alpha from 0 (transparent) to 1 (opaque). */
export type Rgba = readonly [r: number, g: number, b: number, alpha: number];

export interface MaskPngOptions {
  /** Colour of mask pixels. Default white. */
  color?: Rgb | Rgba;
  /** Colour of the other pixels. Default transparent. */
  background?: Rgb | Rgba;
}

/** What renderOverlay draws of an instance; the Instance objects segment() returns fit it. */
export interface OverlayInstance {
  label: string;
  score: number;
  /** [x, y, width, height] in image pixels; may reach outside the image. */
  box: readonly [x: number, y: number, width: number, height: number];
  /** COCO RLE of the same size as the image. */
  mask?: Rle | undefined;
}

export interface OverlayOptions extends DecodeOptions {
  /** Output format. Default 'png'. */
  format?: 'png' | 'jpeg';
  /** Opacity of the mask fill, 0 to 1. Default 0.5. */
  opacity?: number;
  /** Draw each mask's outline in a darker shade. Default true. */
  outline?: boolean;
  /** Draw boxes. Default true. */
  boxes?: boolean;
  /** Draw a "label score" tag above each box. Default true. */
  labels?: boolean;
  /** Label font size in pixels. Default 2.5% of the image's geometric mean side, at least 10. */
  fontSize?: number;
  /** Box line width in pixels. Default about a seventh of the font size, at least 1. */
  lineWidth?: number;
}

const OVERLAY_OPTION_KEYS: ReadonlySet<string> = new Set([
  'format',
  'opacity',
  'outline',
  'boxes',
  'labels',
  'fontSize',
  'lineWidth',
  'limitInputPixels',
]);

// Label glyph metrics: with a monospace font every character advances by about
// 0.6 em (DejaVu Sans Mono 0.602, Liberation Mono 0.6), so tags can be sized
// without measuring text.
const FONT_FAMILY = "'DejaVu Sans Mono', 'Liberation Mono', Menlo, Consolas, monospace";
const CHAR_ADVANCE_EM = 0.6;

function optionsError(message: string): never {
  throw new FoveaError('ERR_OPTIONS', message);
}

function inputError(message: string): never {
  throw new FoveaError('ERR_INPUT', message);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Colour of the index-th instance: hues a golden angle apart, so neighbours in
 * the list differ strongly and any prefix of the palette stays well spread.
 */
export function instanceColor(index: number): Rgb {
  if (!Number.isSafeInteger(index) || index < 0) {
    inputError(`instanceColor: index must be a non-negative integer, got ${index}`);
  }
  const h = ((index * 0.618033988749895 + 0.05) % 1) * 6;
  const s = 0.75;
  const v = 0.95;
  const f = h - Math.floor(h);
  const p = v * (1 - s);
  const q = v * (1 - s * f);
  const t = v * (1 - s * (1 - f));
  const rgb = [
    [v, t, p],
    [q, v, p],
    [p, v, t],
    [p, q, v],
    [t, p, v],
    [v, p, q],
  ][Math.floor(h)]!;
  return [Math.round(rgb[0]! * 255), Math.round(rgb[1]! * 255), Math.round(rgb[2]! * 255)];
}

function checkColor(value: unknown, name: string): Rgba {
  const channel = (c: unknown) => Number.isInteger(c) && (c as number) >= 0 && (c as number) <= 255;
  if (!Array.isArray(value) || (value.length !== 3 && value.length !== 4) || !value.slice(0, 3).every(channel)) {
    optionsError(`${name} must be [r, g, b] or [r, g, b, alpha] with r, g, b integers 0-255, got ${JSON.stringify(value)}`);
  }
  const alpha: unknown = value.length === 4 ? value[3] : 1;
  if (typeof alpha !== 'number' || !(alpha >= 0 && alpha <= 1)) {
    optionsError(`${name}: alpha must be a number from 0 to 1, got ${JSON.stringify(alpha)}`);
  }
  return [value[0] as number, value[1] as number, value[2] as number, alpha];
}

function checkBitmap(mask: Bitmap): Bitmap {
  const { data, width, height } = mask;
  if (!(data instanceof Uint8Array)) inputError('mask bitmap: data must be a Uint8Array or Buffer');
  if (!Number.isSafeInteger(width) || !Number.isSafeInteger(height) || width < 0 || height < 0) {
    inputError(`mask bitmap: width and height must be non-negative integers, got ${width}x${height}`);
  }
  if (data.length !== width * height) inputError(`mask bitmap: ${data.length} bytes for ${width}x${height}`);
  return mask;
}

/**
 * Encodes a mask (COCO RLE, or a row-major bitmap where any non-zero byte is
 * foreground) as a PNG of the mask's size. Without options: 8-bit grayscale,
 * 255 on the mask and 0 elsewhere. With `color` and/or `background`: RGBA.
 */
export async function maskToPng(mask: Rle | Bitmap, options: MaskPngOptions = {}): Promise<Buffer> {
  if (!isRecord(options)) optionsError('maskToPng: options must be an object');
  for (const key of Object.keys(options)) {
    if (key !== 'color' && key !== 'background') optionsError(`maskToPng: unknown option '${key}'`);
  }
  const fg = options.color === undefined ? undefined : checkColor(options.color, 'color');
  const bg = options.background === undefined ? undefined : checkColor(options.background, 'background');
  if (!isRecord(mask)) inputError('mask must be an RLE { size, counts } or a bitmap { data, width, height }');
  const bits = 'counts' in mask ? decodeMask(mask as Rle) : checkBitmap(mask as unknown as Bitmap);
  const { data, width, height } = bits;
  if (width === 0 || height === 0) inputError(`a ${height}x${width} mask has no pixels to make a PNG of`);

  if (fg === undefined && bg === undefined) {
    const gray = Buffer.alloc(width * height);
    for (let i = 0; i < gray.length; i++) if (data[i]) gray[i] = 255;
    // Without b-w, sharp would write the single band out as RGB.
    return sharp(gray, { raw: { width, height, channels: 1 } }).toColourspace('b-w').png().toBuffer();
  }
  // Each colour as the 32-bit word its four bytes make in memory: one store per pixel.
  const word = (c: Rgba) => new Uint32Array(Uint8Array.of(c[0], c[1], c[2], Math.round(c[3] * 255)).buffer)[0]!;
  const on = word(fg ?? [255, 255, 255, 1]);
  const off = word(bg ?? [0, 0, 0, 0]);
  const rgba = Buffer.alloc(width * height * 4);
  const words = new Uint32Array(rgba.buffer, rgba.byteOffset, width * height);
  for (let i = 0; i < words.length; i++) words[i] = data[i] ? on : off;
  return sharp(rgba, { raw: { width, height, channels: 4 } }).png().toBuffer();
}

/** Validated options; the sizes stay undefined when defaulted, as their defaults depend on the image. */
interface CheckedOverlayOptions {
  format: 'png' | 'jpeg';
  opacity: number;
  outline: boolean;
  boxes: boolean;
  labels: boolean;
  fontSize: number | undefined;
  lineWidth: number | undefined;
  decode: DecodeOptions;
}

function checkOverlayOptions(options: unknown): CheckedOverlayOptions {
  if (!isRecord(options)) optionsError('renderOverlay: options must be an object');
  for (const key of Object.keys(options)) {
    if (!OVERLAY_OPTION_KEYS.has(key)) optionsError(`renderOverlay: unknown option '${key}'`);
  }
  const o = options as OverlayOptions;
  const format = o.format ?? 'png';
  if (format !== 'png' && format !== 'jpeg') optionsError(`format must be 'png' or 'jpeg', got ${JSON.stringify(format)}`);
  const opacity = o.opacity ?? 0.5;
  if (typeof opacity !== 'number' || !(opacity >= 0 && opacity <= 1)) {
    optionsError(`opacity must be a number from 0 to 1, got ${JSON.stringify(opacity)}`);
  }
  const flag = (name: 'outline' | 'boxes' | 'labels'): boolean => {
    const v = o[name] ?? true;
    if (typeof v !== 'boolean') optionsError(`${name} must be a boolean, got ${JSON.stringify(v)}`);
    return v;
  };
  const size = (name: 'fontSize' | 'lineWidth'): number | undefined => {
    const v = o[name];
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < 1 || v > 10_000)) {
      optionsError(`${name} must be a number from 1 to 10000, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const decode: DecodeOptions = o.limitInputPixels === undefined ? {} : { limitInputPixels: o.limitInputPixels };
  return {
    format,
    opacity,
    outline: flag('outline'),
    boxes: flag('boxes'),
    labels: flag('labels'),
    fontSize: size('fontSize'),
    lineWidth: size('lineWidth'),
    decode,
  };
}

function checkInstances(instances: unknown): OverlayInstance[] {
  if (!Array.isArray(instances)) inputError('instances must be an array');
  instances.forEach((inst: unknown, i) => {
    const where = `instances[${i}]`;
    if (!isRecord(inst)) inputError(`${where} must be an object`);
    if (typeof inst['label'] !== 'string') inputError(`${where}.label must be a string`);
    if (typeof inst['score'] !== 'number' || !Number.isFinite(inst['score'])) {
      inputError(`${where}.score must be a finite number`);
    }
    const box = inst['box'];
    if (!Array.isArray(box) || box.length !== 4 || !box.every((v) => typeof v === 'number' && Number.isFinite(v))) {
      inputError(`${where}.box must be [x, y, width, height] of finite numbers, got ${JSON.stringify(box)}`);
    }
    if (inst['mask'] !== undefined && !isRecord(inst['mask'])) inputError(`${where}.mask must be an RLE { size, counts }`);
  });
  return instances as OverlayInstance[];
}

/** Run lengths of an instance's mask, checked against the image size. */
function runsOf(mask: Rle, width: number, height: number, where: string): number[] {
  const size: unknown = mask.size;
  if (!Array.isArray(size) || size.length !== 2) inputError(`${where}: size must be [height, width]`);
  if (size[0] !== height || size[1] !== width) {
    inputError(`${where} is ${String(size[0])}x${String(size[1])} (height x width) but the image is ${height}x${width}`);
  }
  if (typeof mask.counts !== 'string') inputError(`${where}: counts must be a string (compressed RLE)`);
  let counts: number[];
  try {
    counts = countsFromString(mask.counts);
  } catch (err) {
    throw new FoveaError('ERR_INPUT', `${where}: ${(err as Error).message}`, { cause: err });
  }
  let total = 0;
  for (const c of counts) total += c;
  if (total !== width * height) inputError(`${where}: runs cover ${total} pixels, the image has ${width * height}`);
  return counts;
}

/**
 * Paints one mask into `rgb`: fill blended at `opacity`, and, where `edge` > 0,
 * mask pixels within `edge` pixels (4-neighbourhood) of the mask's border in
 * the opaque `dark` colour. The image border does not count as a mask border,
 * so objects cut by the frame stay open there. `scratch` is all zeros on entry
 * and on return.
 */
function paintMask(
  rgb: Buffer,
  scratch: Uint8Array,
  width: number,
  height: number,
  runs: number[],
  color: Rgb,
  dark: Rgb,
  opacity: number,
  edge: number,
): void {
  // Runs are column-major; mark the mask in scratch and find its extent.
  let x0 = width;
  let x1 = -1;
  let y0 = height;
  let y1 = -1;
  let i = 0;
  for (let r = 0; r < runs.length; r++) {
    let n = runs[r]!;
    if (r % 2 === 0 || n === 0) {
      i += n;
      continue;
    }
    let x = Math.floor(i / height);
    let y = i % height;
    i += n;
    x0 = Math.min(x0, x);
    while (n > 0) {
      const m = Math.min(n, height - y);
      for (let p = y * width + x, end = p + m * width; p < end; p += width) scratch[p] = 1;
      y0 = Math.min(y0, y);
      y1 = Math.max(y1, y + m - 1);
      x1 = Math.max(x1, x);
      n -= m;
      x++;
      y = 0;
    }
  }
  if (x1 < 0) return;

  const [cr, cg, cb] = color;
  const [dr, dg, db] = dark;
  const keep = 1 - opacity;
  for (let y = y0; y <= y1; y++) {
    const row = y * width;
    for (let x = x0; x <= x1; x++) {
      const p = row + x;
      if (!scratch[p]) continue;
      const o = p * 3;
      let border = false;
      for (let k = 1; k <= edge && !border; k++) {
        border =
          (x >= k && !scratch[p - k]) ||
          (x + k < width && !scratch[p + k]) ||
          (y >= k && !scratch[p - k * width]) ||
          (y + k < height && !scratch[p + k * width]);
      }
      if (border) {
        rgb[o] = dr;
        rgb[o + 1] = dg;
        rgb[o + 2] = db;
      } else {
        rgb[o] = Math.round(rgb[o]! * keep + cr * opacity);
        rgb[o + 1] = Math.round(rgb[o + 1]! * keep + cg * opacity);
        rgb[o + 2] = Math.round(rgb[o + 2]! * keep + cb * opacity);
      }
    }
  }
  for (let y = y0; y <= y1; y++) scratch.fill(0, y * width + x0, y * width + x1 + 1);
}

/** Fills the rectangle [x0, x1) x [y0, y1) of `rgb` (already clipped to the image). */
function fillRect(rgb: Buffer, width: number, x0: number, y0: number, x1: number, y1: number, c: Rgb): void {
  for (let y = y0; y < y1; y++) {
    for (let o = (y * width + x0) * 3, end = (y * width + x1) * 3; o < end; o += 3) {
      rgb[o] = c[0];
      rgb[o + 1] = c[1];
      rgb[o + 2] = c[2];
    }
  }
}

function escapeXml(s: string): string {
  // Control characters are not allowed in XML 1.0 and would make librsvg reject the SVG.
  return s
    .replace(/[\u0000-\u001f\u007f\ufffe\uffff]/g, ' ')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

interface Tag {
  left: number;
  top: number;
  svg: Buffer;
}

/**
 * The "label score" tag of a box as an SVG (background in the instance colour,
 * text over it) placed above the box, or inside its top when there is no room
 * above, and kept inside the image, the text cut with an ellipsis when the
 * image is too narrow; undefined when not even one character fits.
 */
function labelTag(
  width: number,
  height: number,
  text: string,
  box: { x0: number; y0: number },
  color: Rgb,
  fontSize: number,
): Tag | undefined {
  const padX = Math.max(1, Math.round(fontSize * 0.3));
  const padY = Math.max(1, Math.round(fontSize * 0.1));
  const tagH = Math.ceil(fontSize * 1.2) + 2 * padY;
  const advance = fontSize * CHAR_ADVANCE_EM;
  if (tagH > height) return undefined;
  let chars = Array.from(text);
  const fit = Math.floor((width - 2 * padX) / advance);
  if (chars.length > fit) {
    if (fit < 1) return undefined;
    chars = [...chars.slice(0, fit - 1), '…'];
  }
  const tagW = Math.min(width, Math.ceil(chars.length * advance) + 2 * padX);
  const left = Math.min(box.x0, width - tagW);
  const top = Math.min(box.y0 >= tagH ? box.y0 - tagH : box.y0, height - tagH);
  // Dark text on light tags, white on dark ones (Rec. 709 luma).
  const luma = 0.2126 * color[0] + 0.7152 * color[1] + 0.0722 * color[2];
  const ink = luma > 150 ? '#000' : '#fff';
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="${tagW}" height="${tagH}">` +
    `<rect width="${tagW}" height="${tagH}" fill="rgb(${color.join(',')})"/>` +
    `<text x="${padX}" y="${(padY + fontSize * 0.95).toFixed(2)}" font-family="${FONT_FAMILY}" ` +
    `font-size="${fontSize}" fill="${ink}" xml:space="preserve">${escapeXml(chars.join(''))}</text></svg>`;
  return { left, top, svg: Buffer.from(svg) };
}

/**
 * Draws instances over an image: each mask filled with its instance's colour
 * (instanceColor(index)) at `opacity` and outlined in a darker shade, each box
 * outlined, and a "label 0.93" tag above it. The image is decoded with
 * decodeImage (EXIF orientation applied), the frame the masks refer to; every
 * mask must have the image's size. Earlier instances are drawn over later
 * ones, so with results sorted by score the best stay on top. Returns an
 * encoded PNG (or JPEG with format 'jpeg').
 */
export async function renderOverlay(
  image: ImageInput,
  instances: readonly OverlayInstance[],
  options: OverlayOptions = {},
): Promise<Buffer> {
  const opts = checkOverlayOptions(options);
  const list = checkInstances(instances);
  const img = await decodeImage(image, opts.decode);
  const { width, height } = img;
  // Masks are checked before any drawing so a bad one fails the call cheaply.
  const runs = list.map((inst, i) =>
    inst.mask === undefined ? undefined : runsOf(inst.mask, width, height, `instances[${i}].mask`),
  );

  // Sizes follow the image's geometric mean side so that the overlay looks
  // the same whatever the resolution.
  const fontSize = opts.fontSize ?? Math.max(10, Math.round(0.025 * Math.sqrt(width * height)));
  const lineWidth = Math.round(opts.lineWidth ?? Math.max(1, fontSize / 7));
  const edge = opts.outline ? Math.max(1, Math.round(lineWidth / 2)) : 0;

  const rgb = Buffer.from(img.data); // a copy: raw RGB input comes back uncopied from decodeImage
  const colors = list.map((_, i) => instanceColor(i));
  const darker = (c: Rgb): Rgb => [Math.round(c[0] * 0.6), Math.round(c[1] * 0.6), Math.round(c[2] * 0.6)];

  if (opts.opacity > 0 || edge > 0) {
    const scratch = new Uint8Array(width * height);
    for (let i = list.length - 1; i >= 0; i--) {
      const r = runs[i];
      if (r) paintMask(rgb, scratch, width, height, r, colors[i]!, darker(colors[i]!), opts.opacity, edge);
    }
  }

  const tags: Tag[] = [];
  for (let i = list.length - 1; i >= 0; i--) {
    const { box, label, score } = list[i]!;
    // The part of the box inside the image, in whole pixels; boxes wholly
    // outside or empty there get neither outline nor tag.
    const x0 = Math.max(0, Math.round(box[0]));
    const y0 = Math.max(0, Math.round(box[1]));
    const x1 = Math.min(width, Math.round(box[0] + box[2]));
    const y1 = Math.min(height, Math.round(box[1] + box[3]));
    if (x1 <= x0 || y1 <= y0) continue;
    const c = colors[i]!;
    if (opts.boxes) {
      const lw = Math.min(lineWidth, x1 - x0, y1 - y0);
      fillRect(rgb, width, x0, y0, x1, y0 + lw, c);
      fillRect(rgb, width, x0, y1 - lw, x1, y1, c);
      fillRect(rgb, width, x0, y0, x0 + lw, y1, c);
      fillRect(rgb, width, x1 - lw, y0, x1, y1, c);
    }
    if (opts.labels) {
      const tag = labelTag(width, height, `${label} ${score.toFixed(2)}`, { x0, y0 }, c, fontSize);
      if (tag) tags.push(tag);
    }
  }

  let out = sharp(rgb, { raw: { width, height, channels: 3 } });
  if (tags.length > 0) {
    // Compositing adds an alpha band; the overlay is opaque, so it is dropped again.
    out = out.composite(tags.map((t) => ({ input: t.svg, left: t.left, top: t.top }))).removeAlpha();
  }
  return opts.format === 'png' ? out.png().toBuffer() : out.jpeg().toBuffer();
}
