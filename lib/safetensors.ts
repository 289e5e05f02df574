/**
 * safetensors reader and writer.
 *
 * Layout: 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON
 * (`{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__: {str: str}}`),
 * then the data buffer; offsets are relative to the buffer's start.
 *
 * The validation mirrors native/io/safetensors.cc and the reference Rust
 * implementation: header ≤ 100 MB, strict JSON (integers only, no duplicate
 * keys, depth limit), known dtypes, rank ≤ 8, byte length == numel × dtype
 * size, and the tensors' ranges tiling the data buffer exactly (no overlap, no
 * gap, nothing after the last tensor). Every failure is a FoveaError
 * 'ERR_WEIGHTS' that says what and where.
 */
import * as fs from 'node:fs';
import { FoveaError } from './errors';

export type SafetensorsDType =
  | 'F64'
  | 'F32'
  | 'F16'
  | 'BF16'
  | 'I64'
  | 'I32'
  | 'I16'
  | 'I8'
  | 'U8'
  | 'BOOL'
  | 'U16'
  | 'U32'
  | 'U64'
  | 'F8_E4M3'
  | 'F8_E5M2';

const DTYPE_SIZE: ReadonlyMap<string, number> = new Map<SafetensorsDType, number>([
  ['F64', 8],
  ['F32', 4],
  ['F16', 2],
  ['BF16', 2],
  ['I64', 8],
  ['I32', 4],
  ['I16', 2],
  ['I8', 1],
  ['U8', 1],
  ['BOOL', 1],
  ['U16', 2],
  ['U32', 4],
  ['U64', 8],
  ['F8_E4M3', 1],
  ['F8_E5M2', 1],
]);

/** Bytes per element of a safetensors dtype. */
export function safetensorsDTypeSize(dtype: SafetensorsDType): number {
  const size = DTYPE_SIZE.get(dtype);
  if (size === undefined) throw fail(`unknown dtype ${JSON.stringify(dtype)}`);
  return size;
}

/** Metadata key under which fovea stores the model config (a JSON-encoded string). */
export const CONFIG_METADATA_KEY = 'fovea.config';

export const MAX_HEADER_BYTES = 100_000_000;
export const MAX_RANK = 8;
const MAX_JSON_DEPTH = 32;

function fail(message: string): FoveaError {
  return new FoveaError('ERR_WEIGHTS', `safetensors: ${message}`);
}

// ---------------------------------------------------------------------------
// float16 / bfloat16 conversions (bit patterns in uint16)

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** float32 bits → float16 bits, round to nearest, ties to even; NaN stays NaN. */
function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // rebias 127 → 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half (or zero): value = m × 2^(exp-150) = h × 2^-24.
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (h & 1) !== 0)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to infinity).
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++;
  return sign | h;
}

/** float32 bits → bfloat16 bits, round to nearest, ties to even; NaN stays NaN. */
function f32BitsToBf16Bits(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) & 0x8000) | 0x7fc0 | ((x >>> 16) & 0x3f);
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal half: normalise into a float32 exponent.
  let e = 113;
  let m = mant;
  while ((m & 0x400) === 0) {
    m <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((m & 0x3ff) << 13)) >>> 0;
}

/** Converts float32 values to float16 bit patterns (round to nearest even). */
export function float32ToFloat16(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToF16Bits(bits[i]!);
  return out;
}

/** Converts float32 values to bfloat16 bit patterns (round to nearest even). */
export function float32ToBfloat16(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToBf16Bits(bits[i]!);
  return out;
}

/** float16 bit patterns → float32 values (exact). */
export function float16ToFloat32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) bits[i] = f16BitsToF32Bits(src[i]!);
  return out;
}

/** bfloat16 bit patterns → float32 values (exact). */
export function bfloat16ToFloat32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) bits[i] = src[i]! << 16;
  return out;
}

/** One float32 value → float16 bits (round to nearest even). */
export function toFloat16Bits(value: number): number {
  f32Scratch[0] = value;
  return f32BitsToF16Bits(u32Scratch[0]!);
}

/** One float32 value → bfloat16 bits (round to nearest even). */
export function toBfloat16Bits(value: number): number {
  f32Scratch[0] = value;
  return f32BitsToBf16Bits(u32Scratch[0]!);
}

// ---------------------------------------------------------------------------
// Strict JSON subset: objects, arrays, strings, integers. Objects become Maps
// so that a key such as "__proto__" is just a key.

type Json = JsonObject | Json[] | string | number;
interface JsonObject {
  readonly kind: 'object';
  readonly members: Map<string, Json>;
}

class JsonParser {
  private pos = 0;
  private depth = 0;

  constructor(private readonly text: string) {}

  parseDocument(): Json {
    const value = this.value();
    this.ws();
    if (this.pos !== this.text.length) this.error('unexpected data after the JSON value');
    return value;
  }

  private error(what: string): never {
    throw fail(`invalid header JSON: ${what} at character ${this.pos}`);
  }

  private ws(): void {
    const t = this.text;
    while (this.pos < t.length) {
      const c = t.charCodeAt(this.pos);
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
      this.pos++;
    }
  }

  private value(): Json {
    this.ws();
    if (this.pos >= this.text.length) this.error('unexpected end');
    const c = this.text[this.pos]!;
    if (c === '{' || c === '[') {
      if (++this.depth > MAX_JSON_DEPTH) this.error(`nesting deeper than ${MAX_JSON_DEPTH}`);
      const v = c === '{' ? this.object() : this.array();
      this.depth--;
      return v;
    }
    if (c === '"') return this.string();
    if (c === '-' || (c >= '0' && c <= '9')) return this.integer();
    return this.error(`unexpected ${JSON.stringify(c)} (only objects, arrays, strings and integers are allowed)`);
  }

  private object(): JsonObject {
    this.pos++; // '{'
    const members = new Map<string, Json>();
    this.ws();
    if (this.text[this.pos] === '}') {
      this.pos++;
      return { kind: 'object', members };
    }
    for (;;) {
      this.ws();
      if (this.text[this.pos] !== '"') this.error('expected a string key');
      const keyAt = this.pos;
      const key = this.string();
      if (members.has(key)) {
        this.pos = keyAt;
        this.error(`duplicate key ${JSON.stringify(key)}`);
      }
      this.ws();
      if (this.text[this.pos] !== ':') this.error("expected ':'");
      this.pos++;
      members.set(key, this.value());
      this.ws();
      const c = this.text[this.pos];
      this.pos++;
      if (c === '}') return { kind: 'object', members };
      if (c !== ',') {
        this.pos--;
        this.error("expected ',' or '}'");
      }
    }
  }

  private array(): Json[] {
    this.pos++; // '['
    const items: Json[] = [];
    this.ws();
    if (this.text[this.pos] === ']') {
      this.pos++;
      return items;
    }
    for (;;) {
      items.push(this.value());
      this.ws();
      const c = this.text[this.pos];
      this.pos++;
      if (c === ']') return items;
      if (c !== ',') {
        this.pos--;
        this.error("expected ',' or ']'");
      }
    }
  }

  private string(): string {
    const t = this.text;
    this.pos++; // opening quote
    let out = '';
    let runStart = this.pos;
    for (;;) {
      if (this.pos >= t.length) this.error('unterminated string');
      const c = t.charCodeAt(this.pos);
      if (c === 0x22) {
        out += t.slice(runStart, this.pos);
        this.pos++;
        return out;
      }
      if (c < 0x20) this.error('control character in string');
      if (c !== 0x5c) {
        this.pos++;
        continue;
      }
      out += t.slice(runStart, this.pos);
      const e = t[this.pos + 1];
      this.pos += 2;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          const hi = this.hex4();
          if (hi >= 0xdc00 && hi <= 0xdfff) this.error('lone low surrogate');
          if (hi >= 0xd800 && hi <= 0xdbff) {
            if (t[this.pos] !== '\\' || t[this.pos + 1] !== 'u') this.error('lone high surrogate');
            this.pos += 2;
            const lo = this.hex4();
            if (lo < 0xdc00 || lo > 0xdfff) this.error('lone high surrogate');
            out += String.fromCharCode(hi, lo);
          } else {
            out += String.fromCharCode(hi);
          }
          break;
        }
        default:
          this.pos -= 2;
          this.error('invalid escape');
      }
      runStart = this.pos;
    }
  }

  private hex4(): number {
    const s = this.text.slice(this.pos, this.pos + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(s)) this.error('invalid \\u escape');
    this.pos += 4;
    return parseInt(s, 16);
  }

  private integer(): number {
    const m = /^-?[0-9]+/.exec(this.text.slice(this.pos, this.pos + 32));
    if (!m) return this.error('invalid number');
    const digits = m[0].startsWith('-') ? m[0].slice(1) : m[0];
    if (digits.length > 1 && digits.startsWith('0')) this.error('leading zero');
    const next = this.text[this.pos + m[0].length];
    if (next === '.' || next === 'e' || next === 'E') this.error('only integers are allowed');
    const n = Number(m[0]);
    if (!Number.isSafeInteger(n)) this.error('integer too large');
    this.pos += m[0].length;
    return n;
  }
}

// ---------------------------------------------------------------------------
// Header

export interface SafetensorsTensorInfo {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  /** Byte range inside the data buffer (which starts at `dataOffset` in the file). */
  readonly begin: number;
  readonly end: number;
}

export interface SafetensorsHeader {
  /** File offset of the data buffer: 8 + header length. */
  readonly dataOffset: number;
  /** Tensors in file order (by offset). */
  readonly tensors: readonly SafetensorsTensorInfo[];
  /** `__metadata__`: string → string (a null prototype object). */
  readonly metadata: Readonly<Record<string, string>>;
}

function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && !Array.isArray(v);
}

function headerLength(prefix: Uint8Array, fileSize: number): number {
  if (fileSize < 8) throw fail(`file is ${fileSize} bytes, too short for the 8-byte header length`);
  if (prefix.length < 8) throw fail(`need 8 bytes to read the header length, got ${prefix.length}`);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) throw fail(`header length ${n} is over the ${MAX_HEADER_BYTES}-byte limit`);
  const len = Number(n);
  if (8 + len > fileSize) throw fail(`header length ${len} runs past the end of the ${fileSize}-byte file`);
  return len;
}

/**
 * Parses and validates a header. `bytes` holds at least the first 8 + N bytes
 * of a file that is `fileSize` bytes long (the whole file by default).
 */
export function parseSafetensorsHeader(bytes: Uint8Array, fileSize: number = bytes.length): SafetensorsHeader {
  const len = headerLength(bytes, fileSize);
  if (bytes.length < 8 + len) throw fail(`need ${8 + len} bytes to read the header, got ${bytes.length}`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes.subarray(8, 8 + len));
  } catch {
    throw fail('header is not valid UTF-8');
  }
  const root = new JsonParser(text).parseDocument();
  if (!isObject(root)) throw fail('header is not a JSON object');
  const dataSize = fileSize - 8 - len;
  const metadata: Record<string, string> = Object.create(null) as Record<string, string>;
  const tensors: SafetensorsTensorInfo[] = [];
  for (const [name, entry] of root.members) {
    if (name === '__metadata__') {
      if (!isObject(entry)) throw fail('__metadata__ is not an object');
      for (const [k, v] of entry.members) {
        if (typeof v !== 'string') throw fail(`__metadata__ value of ${JSON.stringify(k)} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    tensors.push(tensorInfo(name, entry, dataSize));
  }
  checkTiling(tensors, dataSize);
  return { dataOffset: 8 + len, tensors, metadata };
}

function tensorInfo(name: string, entry: Json, dataSize: number): SafetensorsTensorInfo {
  const what = `tensor ${JSON.stringify(name)}`;
  if (!isObject(entry)) throw fail(`${what}: entry is not an object`);
  // Unknown keys are ignored, as the reference implementation does.
  const dtype = entry.members.get('dtype');
  const shape = entry.members.get('shape');
  const offsets = entry.members.get('data_offsets');
  if (typeof dtype !== 'string') throw fail(`${what}: missing or non-string "dtype"`);
  const size = DTYPE_SIZE.get(dtype);
  if (size === undefined) throw fail(`${what}: unknown dtype ${JSON.stringify(dtype)}`);
  if (!Array.isArray(shape)) throw fail(`${what}: missing or non-array "shape"`);
  if (shape.length > MAX_RANK) throw fail(`${what}: rank ${shape.length} is over ${MAX_RANK}`);
  let numel = 1;
  for (const d of shape) {
    if (typeof d !== 'number' || d < 0) throw fail(`${what}: shape ${JSON.stringify(shape)} has an invalid dimension`);
    numel *= d;
    if (numel > Number.MAX_SAFE_INTEGER) throw fail(`${what}: shape ${JSON.stringify(shape)} overflows`);
  }
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    typeof offsets[0] !== 'number' ||
    typeof offsets[1] !== 'number'
  ) {
    throw fail(`${what}: "data_offsets" must be [begin, end]`);
  }
  const [begin, end] = offsets;
  if (begin < 0 || end < begin || end > dataSize) {
    throw fail(`${what}: data_offsets [${begin}, ${end}] are outside the ${dataSize}-byte data buffer`);
  }
  if (end - begin !== numel * size) {
    throw fail(`${what}: ${dtype} shape ${JSON.stringify(shape)} needs ${numel * size} bytes, data_offsets give ${end - begin}`);
  }
  return { name, dtype: dtype as SafetensorsDType, shape: shape as number[], begin, end };
}

function checkTiling(tensors: SafetensorsTensorInfo[], dataSize: number): void {
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  for (const t of tensors) {
    if (t.begin < at) throw fail(`tensor ${JSON.stringify(t.name)} [${t.begin}, ${t.end}] overlaps the previous tensor`);
    if (t.begin > at) throw fail(`bytes [${at}, ${t.begin}) of the data buffer belong to no tensor`);
    at = t.end;
  }
  if (at !== dataSize) throw fail(`bytes [${at}, ${dataSize}) of the data buffer belong to no tensor`);
}

/** Reads and validates only the header of a file (for `fovea info`): two reads, no data. */
export function readSafetensorsHeaderFromFile(path: string): SafetensorsHeader {
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (err) {
    throw new FoveaError('ERR_WEIGHTS', `safetensors: cannot open ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const fileSize = fs.fstatSync(fd).size;
    const lenBytes = new Uint8Array(8);
    if (fs.readSync(fd, lenBytes, 0, 8, 0) !== 8) throw fail(`${path} is too short for the 8-byte header length`);
    const len = headerLength(lenBytes, fileSize);
    const head = new Uint8Array(8 + len);
    head.set(lenBytes);
    let got = 8;
    while (got < head.length) {
      const n = fs.readSync(fd, head, got, head.length - got, got);
      if (n === 0) throw fail(`${path} ended while reading the header`);
      got += n;
    }
    return parseSafetensorsHeader(head, fileSize);
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------
// Reading tensors

export type SafetensorsTypedArray =
  | Float64Array
  | Float32Array
  | Uint16Array
  | BigInt64Array
  | BigUint64Array
  | Int32Array
  | Uint32Array
  | Int16Array
  | Int8Array
  | Uint8Array;

type TypedCtor = {
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): SafetensorsTypedArray;
  new (length: number): SafetensorsTypedArray;
  readonly BYTES_PER_ELEMENT: number;
};

const TYPED: Record<SafetensorsDType, TypedCtor> = {
  F64: Float64Array,
  F32: Float32Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  I64: BigInt64Array,
  I32: Int32Array,
  I16: Int16Array,
  I8: Int8Array,
  U8: Uint8Array,
  BOOL: Uint8Array,
  U16: Uint16Array,
  U32: Uint32Array,
  U64: BigUint64Array,
  F8_E4M3: Uint8Array,
  F8_E5M2: Uint8Array,
};

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export class SafetensorsTensor implements SafetensorsTensorInfo {
  constructor(
    readonly name: string,
    readonly dtype: SafetensorsDType,
    readonly shape: readonly number[],
    readonly begin: number,
    readonly end: number,
    /** The tensor's raw little-endian bytes: a view into the file buffer. */
    readonly bytes: Uint8Array,
  ) {}

  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /**
   * The elements in their own dtype: a view sharing the file buffer when the
   * bytes are suitably aligned (always the case in files this writer or the
   * reference one made), otherwise a copy. F16/BF16 come as uint16 bit
   * patterns, F8 and BOOL as bytes.
   */
  toTypedArray(): SafetensorsTypedArray {
    const Ctor = TYPED[this.dtype];
    const size = Ctor.BYTES_PER_ELEMENT;
    const n = this.bytes.length / size;
    if (HOST_LITTLE_ENDIAN && this.bytes.byteOffset % size === 0) {
      return new Ctor(this.bytes.buffer, this.bytes.byteOffset, n);
    }
    // Not bytes.slice(): on a Buffer that is a view, not a copy.
    const copy = new Uint8Array(this.bytes.length);
    copy.set(this.bytes);
    if (!HOST_LITTLE_ENDIAN) for (let i = 0; i < copy.length; i += size) copy.subarray(i, i + size).reverse();
    return new Ctor(copy.buffer, 0, n);
  }

  /** float32 values of a float tensor (F32: as toTypedArray(); F64/F16/BF16: a converted copy). */
  toFloat32(): Float32Array {
    const a = this.toTypedArray();
    switch (this.dtype) {
      case 'F32':
        return a as Float32Array;
      case 'F64':
        return Float32Array.from(a as Float64Array);
      case 'F16':
        return float16ToFloat32(a as Uint16Array);
      case 'BF16':
        return bfloat16ToFloat32(a as Uint16Array);
      default:
        throw fail(`tensor ${JSON.stringify(this.name)} is ${this.dtype}, not a float dtype`);
    }
  }
}

export interface SafetensorsFile {
  readonly metadata: Readonly<Record<string, string>>;
  /** In file order. */
  readonly tensors: ReadonlyMap<string, SafetensorsTensor>;
}

/** Parses a whole file held in memory; tensor bytes are views into `bytes`. */
export function readSafetensors(bytes: Uint8Array): SafetensorsFile {
  const header = parseSafetensorsHeader(bytes);
  const tensors = new Map<string, SafetensorsTensor>();
  for (const t of header.tensors) {
    const view = bytes.subarray(header.dataOffset + t.begin, header.dataOffset + t.end);
    tensors.set(t.name, new SafetensorsTensor(t.name, t.dtype, t.shape, t.begin, t.end, view));
  }
  return { metadata: header.metadata, tensors };
}

// ---------------------------------------------------------------------------
// Writing

export type SafetensorsWriteDType = 'F32' | 'F16' | 'BF16';

export interface SafetensorsWriteTensor {
  readonly data: Float32Array;
  readonly shape: readonly number[];
  /** Stored dtype; F16 and BF16 round to nearest even. Default: the writer's `dtype`. */
  readonly dtype?: SafetensorsWriteDType;
}

export interface SafetensorsWriteOptions {
  /** Values must be strings: store a config object as JSON.stringify(config). */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Default stored dtype (F32). */
  readonly dtype?: SafetensorsWriteDType;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function checkText(s: unknown, what: string): string {
  if (typeof s !== 'string') throw fail(`${what} must be a string`);
  // JSON.stringify would write a lone surrogate as an escape that strict readers reject.
  if (LONE_SURROGATE.test(s)) throw fail(`${what} contains a lone UTF-16 surrogate`);
  return s;
}

/**
 * Serializes float32 tensors. Tensors are laid out by element size (largest
 * first), then by name, as the reference writer does, so that every tensor
 * starts aligned to its element size; the header is padded with spaces to a
 * multiple of 8 bytes.
 */
export function writeSafetensors(
  tensors: Readonly<Record<string, SafetensorsWriteTensor>> | Iterable<readonly [string, SafetensorsWriteTensor]>,
  options: SafetensorsWriteOptions = {},
): Uint8Array {
  const entries: Array<readonly [string, SafetensorsWriteTensor]> =
    Symbol.iterator in tensors
      ? Array.from(tensors as Iterable<readonly [string, SafetensorsWriteTensor]>)
      : Object.entries(tensors as Readonly<Record<string, SafetensorsWriteTensor>>);
  // Float32Array bytes are copied as they are in memory.
  if (!HOST_LITTLE_ENDIAN) throw fail('writing needs a little-endian host');
  const defaultDType = options.dtype ?? 'F32';
  const seen = new Set<string>();
  const prepared = entries.map(([name, t]) => {
    checkText(name, 'tensor name');
    if (name === '__metadata__') throw fail('"__metadata__" cannot be a tensor name');
    if (seen.has(name)) throw fail(`duplicate tensor name ${JSON.stringify(name)}`);
    seen.add(name);
    const dtype = t.dtype ?? defaultDType;
    if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') throw fail(`cannot write dtype ${String(dtype)}`);
    if (!(t.data instanceof Float32Array)) throw fail(`tensor ${JSON.stringify(name)}: data must be a Float32Array`);
    if (t.shape.length > MAX_RANK) throw fail(`tensor ${JSON.stringify(name)}: rank ${t.shape.length} is over ${MAX_RANK}`);
    let numel = 1;
    for (const d of t.shape) {
      if (!Number.isSafeInteger(d) || d < 0) throw fail(`tensor ${JSON.stringify(name)}: invalid shape ${JSON.stringify(t.shape)}`);
      numel *= d;
    }
    if (numel !== t.data.length) {
      throw fail(`tensor ${JSON.stringify(name)}: shape ${JSON.stringify(t.shape)} has ${numel} elements, data has ${t.data.length}`);
    }
    const payload =
      dtype === 'F32'
        ? new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)
        : (() => {
            const half = dtype === 'F16' ? float32ToFloat16(t.data) : float32ToBfloat16(t.data);
            return new Uint8Array(half.buffer, 0, half.byteLength);
          })();
    return { name, dtype, shape: [...t.shape], payload };
  });
  prepared.sort((a, b) => {
    const bySize = DTYPE_SIZE.get(b.dtype)! - DTYPE_SIZE.get(a.dtype)!;
    if (bySize !== 0) return bySize;
    return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  });

  const parts: string[] = [];
  const metadata = options.metadata;
  if (metadata !== undefined) {
    const kv = Object.entries(metadata).map(
      ([k, v]) => `${JSON.stringify(checkText(k, 'metadata key'))}:${JSON.stringify(checkText(v, `metadata value of ${JSON.stringify(k)}`))}`,
    );
    parts.push(`"__metadata__":{${kv.join(',')}}`);
  }
  let offset = 0;
  for (const t of prepared) {
    const end = offset + t.payload.length;
    parts.push(`${JSON.stringify(t.name)}:{"dtype":"${t.dtype}","shape":${JSON.stringify(t.shape)},"data_offsets":[${offset},${end}]}`);
    offset = end;
  }
  let header = new TextEncoder().encode(`{${parts.join(',')}}`);
  const padded = Math.ceil(header.length / 8) * 8;
  if (padded > MAX_HEADER_BYTES) throw fail(`header would be ${padded} bytes, over the ${MAX_HEADER_BYTES}-byte limit`);
  if (padded !== header.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(header);
    header = p;
  }

  const out = new Uint8Array(8 + header.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  let at = 8 + header.length;
  for (const t of prepared) {
    out.set(t.payload, at);
    at += t.payload.length;
  }
  return out;
}
