import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { FoveaError } from '../lib/errors';
import { decodeImage, type ImageInput } from '../lib/image';
import { itShared } from './shared-fixtures';

async function expectInputError(input: ImageInput, pattern?: RegExp, options = {}): Promise<void> {
  const err = await decodeImage(input, options).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FoveaError);
  expect((err as FoveaError).code).toBe('ERR_INPUT');
  if (pattern) expect((err as FoveaError).message).toMatch(pattern);
}

const mean = (a: Uint8Array) => a.reduce((s, v) => s + v, 0) / a.length;

// A PNG whose IHDR declares width x height, with almost no image data: the decoder
// must refuse it from the header alone.
function pngHeaderOnly(width: number, height: number): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (b: Buffer) => {
    let c = 0xffffffff;
    for (const v of b) c = crcTable[(c ^ v) & 0xff]! ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, body: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length);
    const tb = Buffer.concat([Buffer.from(type, 'ascii'), body]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(tb));
    return Buffer.concat([len, tb, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  const idat = chunk('IDAT', zlib.deflateSync(Buffer.alloc(64)));
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), idat, chunk('IEND', Buffer.alloc(0))]);
}

describe('decodeImage: generated inputs', () => {
  it('passes RGB raw pixels through and converts other channel counts', async () => {
    const rgb = await decodeImage({ data: new Uint8Array([1, 2, 3, 4, 5, 6]), width: 2, height: 1, channels: 3 });
    expect(Array.from(rgb.data)).toEqual([1, 2, 3, 4, 5, 6]);
    const gray = await decodeImage({ data: new Uint8Array([0, 200]), width: 1, height: 2, channels: 1 });
    expect(Array.from(gray.data)).toEqual([0, 0, 0, 200, 200, 200]);
    const rgba = await decodeImage({ data: new Uint8Array([255, 0, 0, 0]), width: 1, height: 1, channels: 4 });
    expect(Array.from(rgba.data)).toEqual([128, 128, 128]); // fully transparent: the mid-gray background
  });

  it('decodes 1x1 and 1xN images', async () => {
    const one = await sharp({ create: { width: 1, height: 1, channels: 3, background: { r: 9, g: 8, b: 7 } } }).png().toBuffer();
    expect(await decodeImage(one)).toMatchObject({ width: 1, height: 1, data: new Uint8Array([9, 8, 7]) });
    const strip = await sharp({ create: { width: 1, height: 37, channels: 3, background: '#000' } }).jpeg().toBuffer();
    const s = await decodeImage(strip);
    expect([s.width, s.height, s.data.length]).toEqual([1, 37, 111]);
  });

  it('applies the EXIF orientation', async () => {
    // 3 wide, 1 high, stored with orientation 6 (rotate 90° clockwise to view): 1 wide, 3 high.
    const jpeg = await sharp({ create: { width: 3, height: 1, channels: 3, background: '#fff' } })
      .jpeg()
      .withMetadata({ orientation: 6 })
      .toBuffer();
    const img = await decodeImage(jpeg);
    expect([img.width, img.height]).toEqual([1, 3]);
  });

  it('accepts a sharp instance without changing it', async () => {
    const s = sharp({ create: { width: 4, height: 2, channels: 4, background: { r: 10, g: 20, b: 30, alpha: 1 } } });
    const img = await decodeImage(s);
    expect([img.width, img.height, img.data[0], img.data[1], img.data[2]]).toEqual([4, 2, 10, 20, 30]);
    expect((await s.metadata()).channels).toBe(4);
  });

  it('rejects empty, garbage and wrongly-sized inputs with ERR_INPUT', async () => {
    await expectInputError(new Uint8Array(0), /empty/);
    await expectInputError(Buffer.from('not an image at all'));
    await expectInputError({ data: new Uint8Array(5), width: 2, height: 1, channels: 3 }, /5 bytes/);
    await expectInputError({ data: new Uint8Array(0), width: 0, height: 1, channels: 3 });
    await expectInputError({ data: new Uint8Array(2), width: 1, height: 1, channels: 2.5 as 2 });
    await expectInputError(42 as unknown as ImageInput, /must be a path/);
    await expectInputError('/nonexistent/photo.jpg', /nonexistent/);
  });

  it('refuses a 20000x20000 declared size from the header, and honours limitInputPixels', async () => {
    await expectInputError(pngHeaderOnly(20000, 20000), /limitInputPixels/);
    const small = await sharp({ create: { width: 40, height: 30, channels: 3, background: '#123' } }).png().toBuffer();
    await expectInputError(small, /limitInputPixels/, { limitInputPixels: 1000 });
    expect((await decodeImage(small, { limitInputPixels: 1200 })).width).toBe(40);
    await expectInputError({ data: new Uint8Array(1200 * 3), width: 40, height: 30, channels: 3 }, /limitInputPixels/, {
      limitInputPixels: 1000,
    });
    await expect(decodeImage(small, { limitInputPixels: -1 })).rejects.toMatchObject({ code: 'ERR_OPTIONS' });
  });
});

describe('decodeImage: odd real files (../shared/fixtures/images/odd)', () => {
  itShared('CMYK JPEG decodes to RGB', 'images/odd/sharp/Channel_digital_image_CMYK_color_no_profile.jpg', async (f) => {
    const img = await decodeImage(f);
    expect([img.width, img.height, img.data.length]).toEqual([500, 333, 500 * 333 * 3]);
    // Not 3-channel garbage: a real photo has a spread of values in every channel.
    for (let c = 0; c < 3; c++) {
      const ch = img.data.filter((_, i) => i % 3 === c);
      expect(ch.reduce((m, v) => Math.max(m, v), 0) - ch.reduce((m, v) => Math.min(m, v), 255)).toBeGreaterThan(100);
    }
  });

  itShared('16-bit gray + alpha PNG decodes to 32x32', 'images/odd/sharp/bggn4a16.png', async (f) => {
    expect(await decodeImage(f)).toMatchObject({ width: 32, height: 32 });
  });

  itShared('16-bit RGB PNG decodes to 32x32', 'images/odd/sharp/tbgn2c16.png', async (f) => {
    expect(await decodeImage(f)).toMatchObject({ width: 32, height: 32 });
  });

  itShared('RGBA PNG: alpha composited onto mid-gray', 'images/odd/sharp/with-alpha.png', async (f) => {
    const img = await decodeImage(f);
    expect([img.width, img.height]).toEqual([256, 192]);
    // (91, 0, 194) at alpha 168/255 over (128, 128, 128)
    const a = 168 / 255;
    const expected = [91, 0, 194].map((v) => v * a + 128 * (1 - a));
    for (let c = 0; c < 3; c++) expect(Math.abs(img.data[c]! - expected[c]!)).toBeLessThanOrEqual(1.5);
  });

  itShared('animated GIF: first frame', 'images/odd/sharp/rotating-squares.gif', async (f) => {
    expect(await decodeImage(f)).toMatchObject({ width: 80, height: 80 });
  });

  itShared('truncated JPEG: ERR_INPUT', 'images/odd/sharp/truncated.jpg', (f) => expectInputError(f));
  itShared('JPEG without SOF: ERR_INPUT', 'images/odd/sharp/corrupt-header.jpg', (f) => expectInputError(f));
  itShared('corrupt IHDR: ERR_INPUT', 'images/odd/torch-image/corrupt-ihdr.png', (f) => expectInputError(f));

  itShared('65536x65536 pixel bomb is refused before allocating', 'images/odd/sharp/65536-uint32-limit.png', async (f) => {
    const before = process.memoryUsage().rss;
    await expectInputError(fs.readFileSync(f), /limitInputPixels/);
    expect(process.memoryUsage().rss - before).toBeLessThan(256 * 2 ** 20);
  });

  itShared('grayscale JPEG: replicated to RGB, mean ≈ 84.69', 'images/odd/pillow/hopper_gray.jpg', async (f) => {
    const img = await decodeImage(f);
    expect([img.width, img.height]).toEqual([128, 128]);
    expect(Math.abs(mean(img.data) - 84.69)).toBeLessThanOrEqual(1);
    expect(img.data[0]).toBe(img.data[1]);
  });

  itShared('8-bit gray 3x1 is exactly [0, 127, 255]', 'images/odd/torch-image/gray3x1.png', async (f) => {
    expect(Array.from((await decodeImage(f)).data)).toEqual([0, 0, 0, 127, 127, 127, 255, 255, 255]);
  });

  itShared('16-bit gray 1x2 becomes [0, 255] in 8 bits', 'images/odd/torch-image/gray16-1x2.png', async (f) => {
    expect(Array.from((await decodeImage(f)).data)).toEqual([0, 0, 0, 255, 255, 255]);
  });

  itShared('8-bit RGB 2x1 is exact', 'images/odd/torch-image/rgb2x1.png', async (f) => {
    expect(Array.from((await decodeImage(f)).data)).toEqual([255, 0, 63, 0, 127, 0]);
  });

  itShared('16-bit RGB 2x1 becomes (255,0,63), (0,127,0)', 'images/odd/torch-image/rgb16-2x1.png', async (f) => {
    expect(Array.from((await decodeImage(f)).data)).toEqual([255, 0, 63, 0, 127, 0]);
  });
});
