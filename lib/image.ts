/**
 * Image input: every accepted form becomes 8-bit RGB, row-major HWC, the
 * layout the native pipeline takes. sharp (libvips) decodes; EXIF orientation
 * is applied, alpha composited, grayscale/CMYK/16-bit converted to 8-bit sRGB,
 * animated images reduced to their first frame, and a pixel-count limit
 * rejects decompression bombs from the header, before any pixel is allocated.
 */
import sharp from 'sharp';
import { FoveaError } from './errors';

/** Raw pixels: `channels` interleaved 8-bit samples per pixel, row-major. */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels: 1 | 2 | 3 | 4;
}

/** A path, encoded bytes in any format sharp reads, a sharp instance, or raw pixels. */
export type ImageInput = string | Uint8Array | sharp.Sharp | RawImage;

export interface RgbImage {
  /** width * height * 3 bytes, RGB, row-major. */
  data: Uint8Array;
  width: number;
  height: number;
}

export interface DecodeOptions {
  /**
   * Largest width*height accepted (sharp's limitInputPixels). Default 268402689
   * (16383^2, sharp's default); `false` removes the limit.
   */
  limitInputPixels?: number | false;
}

export const DEFAULT_LIMIT_INPUT_PIXELS = 0x3fff * 0x3fff;

// Transparent pixels are composited onto mid-gray, the value DeepMask pads
// images with, so they look like the padding the networks learned to ignore.
const FLATTEN_BACKGROUND = { r: 128, g: 128, b: 128 };

function isRawImage(v: unknown): v is RawImage {
  return typeof v === 'object' && v !== null && 'data' in v && 'width' in v && 'height' in v && 'channels' in v;
}

function isSharp(v: unknown): v is sharp.Sharp {
  return v instanceof sharp;
}

function checkRaw(raw: RawImage, limit: number | false): void {
  const { data, width, height, channels } = raw;
  const where = 'raw image';
  if (!(data instanceof Uint8Array)) throw new FoveaError('ERR_INPUT', `${where}: data must be a Uint8Array or Buffer`);
  if (!Number.isSafeInteger(width) || !Number.isSafeInteger(height) || width < 1 || height < 1) {
    throw new FoveaError('ERR_INPUT', `${where}: width and height must be positive integers, got ${width}x${height}`);
  }
  if (![1, 2, 3, 4].includes(channels)) {
    throw new FoveaError('ERR_INPUT', `${where}: channels must be 1, 2, 3 or 4, got ${String(channels)}`);
  }
  if (limit !== false && width * height > limit) {
    throw new FoveaError('ERR_INPUT', `${where}: ${width}x${height} exceeds limitInputPixels (${limit})`);
  }
  if (data.length !== width * height * channels) {
    throw new FoveaError(
      'ERR_INPUT',
      `${where}: ${data.length} bytes for ${width}x${height}x${channels} (expected ${width * height * channels})`,
    );
  }
}

function pipelineFor(input: ImageInput, limit: number | false): sharp.Sharp {
  const common = { limitInputPixels: limit === false ? false : limit, failOn: 'error' as const, pages: 1, page: 0 };
  if (typeof input === 'string') return sharp(input, common);
  if (isSharp(input)) {
    // Our settings apply to a clone, so the caller's instance is left as it was.
    return input.clone();
  }
  if (isRawImage(input)) {
    checkRaw(input, limit);
    return sharp(input.data, { ...common, raw: { width: input.width, height: input.height, channels: input.channels } });
  }
  if (input instanceof Uint8Array) {
    if (input.length === 0) throw new FoveaError('ERR_INPUT', 'image buffer is empty');
    return sharp(input, common);
  }
  throw new FoveaError(
    'ERR_INPUT',
    `image input must be a path, a Buffer/Uint8Array, a sharp instance or { data, width, height, channels }, got ${
      input === null ? 'null' : typeof input
    }`,
  );
}

/** Decodes any accepted input to 8-bit RGB. Throws FoveaError ERR_INPUT for anything unreadable. */
export async function decodeImage(input: ImageInput, options: DecodeOptions = {}): Promise<RgbImage> {
  const limit = options.limitInputPixels ?? DEFAULT_LIMIT_INPUT_PIXELS;
  if (limit !== false && (!Number.isSafeInteger(limit) || limit < 1)) {
    throw new FoveaError('ERR_OPTIONS', `limitInputPixels must be a positive integer or false, got ${String(limit)}`);
  }
  if (isRawImage(input) && input.channels === 3) {
    checkRaw(input, limit);
    return { data: input.data, width: input.width, height: input.height };
  }
  try {
    const { data, info } = await pipelineFor(input, limit)
      .rotate() // EXIF orientation
      .flatten({ background: FLATTEN_BACKGROUND })
      .toColourspace('srgb')
      .removeAlpha()
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) {
      throw new FoveaError('ERR_INPUT', `image decoded to ${info.channels} channels, expected RGB`);
    }
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
  } catch (err) {
    if (err instanceof FoveaError) throw err;
    const message = err instanceof Error ? err.message : String(err);
    const hint = /pixel limit/i.test(message) ? ' (raise the limitInputPixels option to accept larger images)' : '';
    const what = typeof input === 'string' ? `'${input}'` : 'image';
    throw new FoveaError('ERR_INPUT', `could not decode ${what}: ${message}${hint}`, { cause: err });
  }
}
