/**
 * A Torch7 binary serializer FOR TESTS ONLY: it writes what `torch.save` writes
 * (little-endian, 8-byte longs) for the values a checkpoint contains, so that
 * the converter can be tested on module trees we build ourselves.
 *
 * JS value → Torch: null → nil, number → number, string → string, boolean →
 * boolean, array → table keyed 1..n, Map / plain object → table, W7Torch →
 * torch object whose payload is its fields table, W7Tensor → torch.FloatTensor
 * (or its `type`) over a W7Storage. Any object met twice (a shared storage, a
 * module reachable from two parents) is written once and then as a
 * back-reference, as torch.save does.
 */

export class W7Storage {
  constructor(
    readonly data: Float32Array,
    readonly type = 'torch.FloatStorage',
  ) {}
}

export class W7Tensor {
  constructor(
    readonly shape: readonly number[],
    readonly storage: W7Storage,
    /** 0-based element offset into the storage. */
    readonly offset = 0,
    readonly type = 'torch.FloatTensor',
    /** Row-major when omitted. */
    readonly strides: readonly number[] = rowMajorStrides(shape),
  ) {}

  /** A contiguous tensor with its own storage. */
  static of(shape: readonly number[], data: Float32Array, type?: string): W7Tensor {
    const storageType = type === 'torch.CudaTensor' ? 'torch.CudaStorage' : 'torch.FloatStorage';
    return new W7Tensor(shape, new W7Storage(data, storageType), 0, type);
  }
}

export class W7Torch {
  constructor(
    readonly typename: string,
    readonly fields: Record<string, W7Value> | Map<W7Value, W7Value>,
  ) {}
}

export type W7Value =
  | null
  | number
  | string
  | boolean
  | W7Value[]
  | Map<W7Value, W7Value>
  | { [key: string]: W7Value }
  | W7Torch
  | W7Tensor
  | W7Storage;

function rowMajorStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    strides[d] = s;
    s *= shape[d]!;
  }
  return strides;
}

class Writer {
  private readonly chunks: Buffer[] = [];
  private readonly indices = new Map<object, number>();

  int32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    this.chunks.push(b);
  }

  long(v: number): void {
    const b = Buffer.alloc(8);
    b.writeBigInt64LE(BigInt(v));
    this.chunks.push(b);
  }

  rawString(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.int32(b.length);
    this.chunks.push(b);
  }

  /** Writes the tag and index; returns false when `obj` was already written (a back-reference). */
  private header(tag: number, obj: object): boolean {
    this.int32(tag);
    const seen = this.indices.get(obj);
    if (seen !== undefined) {
      this.int32(seen);
      return false;
    }
    const index = this.indices.size + 1;
    this.indices.set(obj, index);
    this.int32(index);
    return true;
  }

  private torchHeader(obj: object, typename: string): boolean {
    if (!this.header(4, obj)) return false;
    this.rawString('V 1');
    this.rawString(typename);
    return true;
  }

  value(v: W7Value): void {
    if (v === null) return this.int32(0);
    if (typeof v === 'number') {
      this.int32(1);
      const b = Buffer.alloc(8);
      b.writeDoubleLE(v);
      this.chunks.push(b);
      return;
    }
    if (typeof v === 'string') {
      this.int32(2);
      return this.rawString(v);
    }
    if (typeof v === 'boolean') {
      this.int32(5);
      return this.int32(v ? 1 : 0);
    }
    if (v instanceof W7Storage) {
      if (!this.torchHeader(v, v.type)) return;
      this.long(v.data.length);
      this.chunks.push(Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength));
      return;
    }
    if (v instanceof W7Tensor) {
      if (!this.torchHeader(v, v.type)) return;
      this.int32(v.shape.length);
      for (const s of v.shape) this.long(s);
      for (const s of v.strides) this.long(s);
      this.long(v.offset + 1);
      return this.value(v.storage);
    }
    if (v instanceof W7Torch) {
      if (!this.torchHeader(v, v.typename)) return;
      return this.value(v.fields);
    }
    if (!this.header(3, v)) return;
    const entries: [W7Value, W7Value][] = Array.isArray(v)
      ? v.map((x, i) => [i + 1, x])
      : v instanceof Map
        ? [...v]
        : Object.entries(v);
    this.int32(entries.length);
    for (const [k, x] of entries) {
      this.value(k);
      this.value(x);
    }
  }

  bytes(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.chunks));
  }
}

/** The bytes `torch.save(file, value)` would write (binary mode, 8-byte longs). */
export function writeT7(value: W7Value): Uint8Array {
  const w = new Writer();
  w.value(value);
  return w.bytes();
}
