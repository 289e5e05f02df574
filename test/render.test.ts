import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { FoveaError } from '../lib/errors';
import { decodeImage, type ImageInput, type RawImage } from '../lib/image';
import { instanceColor, maskToPng, renderOverlay, type OverlayInstance, type OverlayOptions, type Rgb } from '../lib/render';
import { decodeMask, encodeMask, type Rle } from '../lib/rle';
import { itShared } from './shared-fixtures';

interface Pixels {
  data: Buffer;
  width: number;
  height: number;
  channels: number;
}

/** Decoded pixels; `gray` keeps a grayscale PNG's single band, which sharp would otherwise output as RGB. */
async function pixelsOf(encoded: Buffer, gray = false): Promise<Pixels> {
  const s = sharp(encoded);
  const { data, info } = await (gray ? s.toColourspace('b-w') : s).raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

async function overlay(image: ImageInput, instances: OverlayInstance[], options?: OverlayOptions): Promise<Pixels> {
  return pixelsOf(await renderOverlay(image, instances, options));
}

const px = (p: { data: Uint8Array; width: number }, x: number, y: number, channels = 3): number[] =>
  Array.from(p.data.subarray((y * p.width + x) * channels, (y * p.width + x + 1) * channels));

async function rejection(promise: Promise<unknown>): Promise<FoveaError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FoveaError);
  return err as FoveaError;
}

/** An RGB image whose every pixel differs from its neighbours, so "unchanged" means something. */
function gradient(width: number, height: number): RawImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data.set([(x * 7) % 256, (y * 11) % 256, (x * 3 + y * 5) % 256], (y * width + x) * 3);
  }
  return { data, width, height, channels: 3 };
}

async function gradientPng(width: number, height: number): Promise<Buffer> {
  const g = gradient(width, height);
  return sharp(g.data, { raw: { width, height, channels: 3 } }).png().toBuffer();
}

/** The mask of the rectangle [x0, x1) x [y0, y1) in a width x height image. */
function rectMask(width: number, height: number, x0: number, y0: number, x1: number, y1: number): Rle {
  const data = new Uint8Array(width * height);
  for (let y = y0; y < y1; y++) data.fill(1, y * width + x0, y * width + x1);
  return encodeMask({ data, width, height });
}

const blend = (o: number[], c: Rgb, a: number) => o.map((v, i) => Math.round(v * (1 - a) + c[i]! * a));
const darker = (c: Rgb) => c.map((v) => Math.round(v * 0.6));

function expectNear(actual: number[], expected: number[]): void {
  expect(actual.length).toBe(expected.length);
  const message = `${JSON.stringify(actual)} vs ${JSON.stringify(expected)}`;
  actual.forEach((v, i) => expect(Math.abs(v - expected[i]!), message).toBeLessThanOrEqual(1));
}

describe('instanceColor', () => {
  it('is deterministic and gives distinct colours', () => {
    const colors = Array.from({ length: 12 }, (_, i) => instanceColor(i));
    expect(instanceColor(3)).toEqual(colors[3]);
    expect(new Set(colors.map((c) => c.join())).size).toBe(12);
    for (const c of colors) for (const v of c) expect(Number.isInteger(v) && v >= 0 && v <= 255).toBe(true);
  });

  it('rejects a bad index', () => {
    expect(() => instanceColor(-1)).toThrow(FoveaError);
    expect(() => instanceColor(1.5)).toThrow(FoveaError);
  });
});

describe('maskToPng', () => {
  const rle = rectMask(7, 5, 1, 2, 4, 5);

  it('writes an 8-bit grayscale 0/255 PNG that round-trips through encodeMask', async () => {
    const png = await maskToPng(rle);
    const meta = await sharp(png).metadata();
    expect([meta.format, meta.width, meta.height, meta.channels, meta.depth]).toEqual(['png', 7, 5, 1, 'uchar']);
    const p = await pixelsOf(png, true);
    expect(p.channels).toBe(1);
    const bits = decodeMask(rle);
    expect(Array.from(p.data)).toEqual(Array.from(bits.data, (b) => b * 255));
    expect(encodeMask({ data: p.data, width: p.width, height: p.height })).toEqual(rle);
  });

  it('takes a bitmap where any non-zero byte is foreground', async () => {
    const data = Uint8Array.from([0, 7, 255, 0, 1, 0]);
    const p = await pixelsOf(await maskToPng({ data, width: 3, height: 2 }), true);
    expect(Array.from(p.data)).toEqual([0, 255, 255, 0, 255, 0]);
  });

  it('paints colour and background as RGBA', async () => {
    const p = await pixelsOf(await maskToPng(rle, { color: [255, 0, 0], background: [0, 0, 255, 0.5] }));
    expect(p.channels).toBe(4);
    expect(px(p, 2, 3, 4)).toEqual([255, 0, 0, 255]);
    expect(px(p, 0, 0, 4)).toEqual([0, 0, 255, 128]);
    const transparent = await pixelsOf(await maskToPng(rle, { color: [0, 255, 0, 1] }));
    expect(px(transparent, 2, 3, 4)).toEqual([0, 255, 0, 255]);
    expect(px(transparent, 0, 0, 4)[3]).toBe(0);
  });

  it('writes a 1x1 mask', async () => {
    const p = await pixelsOf(await maskToPng(encodeMask({ data: Uint8Array.of(1), width: 1, height: 1 })), true);
    expect([p.width, p.height, p.data[0]]).toEqual([1, 1, 255]);
  });

  it('rejects bad masks with ERR_INPUT and bad options with ERR_OPTIONS', async () => {
    expect((await rejection(maskToPng({ size: [0, 0], counts: '' }))).code).toBe('ERR_INPUT');
    expect((await rejection(maskToPng({ size: [2, 2], counts: '1' }))).code).toBe('ERR_INPUT');
    expect((await rejection(maskToPng({ data: new Uint8Array(5), width: 2, height: 2 }))).code).toBe('ERR_INPUT');
    expect((await rejection(maskToPng(null as unknown as Rle))).code).toBe('ERR_INPUT');
    for (const options of [{ color: [256, 0, 0] }, { color: [0, 0] }, { background: [0, 0, 0, 2] }, { colour: [0, 0, 0] }]) {
      const err = await rejection(maskToPng(rle, options as never));
      expect(err.code).toBe('ERR_OPTIONS');
    }
  });
});

describe('renderOverlay: generated images', () => {
  const W = 160;
  const H = 120;

  it('tints mask pixels, outlines the mask and the box, and leaves everything else alone', async () => {
    const png = await gradientPng(W, H);
    const orig = await decodeImage(png);
    const mask = rectMask(W, H, 30, 50, 70, 90); // x 30..69, y 50..89
    const box: OverlayInstance['box'] = [20, 40, 80, 60]; // x 20..99, y 40..99
    const out = await overlay(png, [{ label: 'cat', score: 0.5, box, mask }], { labels: false, lineWidth: 2 });
    expect([out.width, out.height, out.channels]).toEqual([W, H, 3]);
    const c = instanceColor(0);
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const inMask = x >= 30 && x < 70 && y >= 50 && y < 90;
        const maskEdge = inMask && (x === 30 || x === 69 || y === 50 || y === 89); // outline 1 px for lineWidth 2
        const onBox = x >= 20 && x < 100 && y >= 40 && y < 100 && (x < 22 || x >= 98 || y < 42 || y >= 98);
        const got = px(out, x, y);
        if (onBox) expect(got).toEqual([...c]);
        else if (maskEdge) expect(got).toEqual(darker(c));
        else if (inMask) expectNear(got, blend(px(orig, x, y), c, 0.5));
        else expect(got, `pixel ${x},${y}`).toEqual(px(orig, x, y));
      }
    }
  });

  it('draws a label tag above the box with text in it', async () => {
    const png = await gradientPng(W, H);
    const orig = await decodeImage(png);
    const out = await overlay(png, [{ label: 'dog', score: 0.93, box: [40, 60, 60, 40] }]);
    const c = instanceColor(0);
    // Default font size 10 px for this size: a tag 14 px high right above y = 60.
    let changed = 0;
    let tagColour = 0;
    let ink = 0;
    for (let y = 46; y < 60; y++) {
      for (let x = 40; x < 100; x++) {
        const got = px(out, x, y);
        if (got.join() !== px(orig, x, y).join()) changed++;
        if (got.join() === c.join()) tagColour++;
        else if (Math.min(...got) > 200 || Math.max(...got) < 55) ink++;
      }
    }
    expect(changed).toBeGreaterThan(200);
    expect(tagColour).toBeGreaterThan(100);
    expect(ink).toBeGreaterThan(10);
    // Nothing is drawn above the tag.
    for (let x = 0; x < W; x++) expect(px(out, x, 44)).toEqual(px(orig, x, 44));
  });

  it('escapes XML and control characters in labels', async () => {
    const png = await gradientPng(W, H);
    // Each of these makes the SVG malformed unless escaped or replaced.
    const label = `</text> & < "'\u0000\u001b\n`;
    const out = await overlay(png, [{ label, score: 1, box: [10, 30, 140, 80] }]);
    expect([out.width, out.height]).toEqual([W, H]);
  });

  it('returns the image unchanged for zero instances, and writes JPEG on request', async () => {
    const png = await gradientPng(W, H);
    const orig = await decodeImage(png);
    const out = await renderOverlay(png, []);
    expect((await sharp(out).metadata()).format).toBe('png');
    expect(Buffer.compare((await pixelsOf(out)).data, Buffer.from(orig.data))).toBe(0);
    const jpeg = await renderOverlay(png, [{ label: 'x', score: 0.1, box: [1, 1, 5, 5] }], { format: 'jpeg' });
    expect(jpeg.subarray(0, 2)).toEqual(Buffer.from([0xff, 0xd8]));
    expect((await sharp(jpeg).metadata()).width).toBe(W);
  });

  it('does not modify raw RGB input', async () => {
    const raw = gradient(20, 10);
    const copy = Uint8Array.from(raw.data);
    await renderOverlay(raw, [{ label: 'x', score: 0.5, box: [0, 0, 20, 10], mask: rectMask(20, 10, 0, 0, 20, 10) }]);
    expect(raw.data).toEqual(copy);
  });

  it('draws earlier instances over later ones', async () => {
    const raw = gradient(40, 30);
    const a = rectMask(40, 30, 5, 5, 25, 25);
    const b = rectMask(40, 30, 10, 10, 35, 28);
    const out = await overlay(raw, [
      { label: 'a', score: 0.9, box: [0, 0, 0, 0], mask: a },
      { label: 'b', score: 0.8, box: [0, 0, 0, 0], mask: b },
    ]);
    const under = blend(px(raw, 15, 15), instanceColor(1), 0.5);
    expectNear(px(out, 15, 15), blend(under, instanceColor(0), 0.5));
  });

  it('handles empty masks, boxes partly outside the image and boxes wholly outside', async () => {
    const raw = gradient(W, H);
    const empty = encodeMask({ data: new Uint8Array(W * H), width: W, height: H });
    const instances: OverlayInstance[] = [
      { label: 'empty', score: 0.3, box: [0, 0, 0, 0], mask: empty },
      { label: 'partly', score: 0.7, box: [-30, 50, 60, 200] }, // visible x 0..29, y 50..119
      { label: 'outside', score: 0.7, box: [500, 500, 10, 10] },
    ];
    const out = await overlay(raw, instances, { lineWidth: 1, labels: false });
    const c = instanceColor(1);
    expect(px(out, 0, 80)).toEqual([...c]); // left edge clipped to column 0
    expect(px(out, 29, 80)).toEqual([...c]);
    expect(px(out, 15, 119)).toEqual([...c]); // bottom edge clipped to the last row
    expect(px(out, 15, 80)).toEqual(px(raw, 15, 80));
    expect(px(out, 100, 10)).toEqual(px(raw, 100, 10));
  });

  it('puts the tag inside the box top when there is no room above, and inside the image', async () => {
    const raw = gradient(W, H);
    const out = await overlay(raw, [{ label: 'a long label', score: 0.5, box: [150, 0, 10, 10] }], { boxes: false });
    const c = instanceColor(0).join();
    let tag = 0;
    for (let y = 0; y < 14; y++) for (let x = 0; x < W; x++) if (px(out, x, y).join() === c) tag++;
    expect(tag).toBeGreaterThan(100);
    expect(px(out, 100, 20)).toEqual(px(raw, 100, 20));
  });

  it('renders 1x1 images and skips labels that cannot fit', async () => {
    const raw: RawImage = { data: Uint8Array.of(10, 20, 30), width: 1, height: 1, channels: 3 };
    const full = encodeMask({ data: Uint8Array.of(1), width: 1, height: 1 });
    const dot: OverlayInstance = { label: 'dot', score: 1, box: [0, 0, 1, 1], mask: full };
    const out = await overlay(raw, [dot], { boxes: false, outline: false });
    expect([out.width, out.height]).toEqual([1, 1]);
    expectNear(px(out, 0, 0), blend([10, 20, 30], instanceColor(0), 0.5));
    const boxed = await overlay(raw, [dot]);
    expect(px(boxed, 0, 0)).toEqual([...instanceColor(0)]);
  });

  it('honours opacity and outline: false', async () => {
    const raw = gradient(30, 20);
    const mask = rectMask(30, 20, 5, 5, 15, 15);
    const inst: OverlayInstance = { label: 'a', score: 1, box: [0, 0, 0, 0], mask };
    const off = await overlay(raw, [inst], { opacity: 0, outline: false });
    expect(Buffer.compare(off.data, Buffer.from(raw.data))).toBe(0);
    const solid = await overlay(raw, [inst], { opacity: 1, outline: false });
    expect(px(solid, 5, 5)).toEqual([...instanceColor(0)]);
  });

  it('uses the EXIF-oriented frame for masks', async () => {
    // Stored 30 wide, 20 high, orientation 6: viewed (and segmented) 20 wide, 30 high.
    const jpeg = await sharp({ create: { width: 30, height: 20, channels: 3, background: '#808080' } })
      .jpeg()
      .withMetadata({ orientation: 6 })
      .toBuffer();
    const upright = rectMask(20, 30, 2, 2, 10, 10);
    const out = await overlay(jpeg, [{ label: 'a', score: 1, box: [2, 2, 8, 8], mask: upright }]);
    expect([out.width, out.height]).toEqual([20, 30]);
    const stored = rectMask(30, 20, 2, 2, 10, 10);
    const err = await rejection(renderOverlay(jpeg, [{ label: 'a', score: 1, box: [2, 2, 8, 8], mask: stored }]));
    expect(err.code).toBe('ERR_INPUT');
    expect(err.message).toMatch(/instances\[0\]\.mask is 20x30 .* image is 30x20/);
  });

  it('rejects bad instances with ERR_INPUT and bad options with ERR_OPTIONS', async () => {
    const raw = gradient(8, 6);
    const ok: OverlayInstance = { label: 'a', score: 1, box: [0, 0, 4, 4] };
    for (const bad of [
      { ...ok, box: [0, 0, 4] },
      { ...ok, box: [0, 0, 4, Number.NaN] },
      { ...ok, score: '1' },
      { ...ok, label: 3 },
      { ...ok, mask: 'abc' },
      { ...ok, mask: { size: [6, 8], counts: '!!' } },
      { ...ok, mask: { size: [6, 8], counts: '1' } },
    ]) {
      expect((await rejection(renderOverlay(raw, [bad as never]))).code).toBe('ERR_INPUT');
    }
    expect((await rejection(renderOverlay(raw, {} as never))).code).toBe('ERR_INPUT');
    expect((await rejection(renderOverlay(Buffer.from('not an image'), []))).code).toBe('ERR_INPUT');
    for (const options of [
      { opacity: 1.5 },
      { opacity: Number.NaN },
      { format: 'gif' },
      { boxes: 'yes' },
      { fontSize: 0 },
      { lineWidth: Number.POSITIVE_INFINITY },
      { limitInputPixels: -1 },
      { opactiy: 0.3 },
    ]) {
      expect((await rejection(renderOverlay(raw, [ok], options as never))).code).toBe('ERR_OPTIONS');
    }
    expect((await rejection(renderOverlay(raw, [ok], null as never))).code).toBe('ERR_OPTIONS');
  });
});

describe('renderOverlay: a real photo', () => {
  itShared('tints a hand-made mask on dog.jpg and draws its box and tag', 'images/darknet/dog.jpg', async (file) => {
    const orig = await decodeImage(file);
    const { width, height } = orig;
    // An ellipse roughly over the dog (768x576 photo, dog lower left).
    const inEllipse = (x: number, y: number) => ((x - 220) / 100) ** 2 + ((y - 380) / 150) ** 2 < 1;
    const data = new Uint8Array(width * height);
    for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) if (inEllipse(x, y)) data[y * width + x] = 1;
    const mask = encodeMask({ data, width, height });
    const box: OverlayInstance['box'] = [120, 230, 200, 300];
    const out = await overlay(file, [{ label: 'dog', score: 0.93, box, mask }]);
    expect([out.width, out.height]).toEqual([width, height]);
    const c = instanceColor(0);
    expectNear(px(out, 220, 380), blend(px(orig, 220, 380), c, 0.5));
    expectNear(px(out, 200, 300), blend(px(orig, 200, 300), c, 0.5));
    expect(px(out, 600, 300)).toEqual(px(orig, 600, 300)); // the bicycle's wheel, outside everything
    expect(px(out, 250, 529)).toEqual([...c]); // bottom edge of the box
    let tag = 0;
    for (let x = 120; x < 160; x++) if (px(out, x, 225).join() !== px(orig, x, 225).join()) tag++;
    expect(tag).toBeGreaterThan(30);
  });
});
