/**
 * Torch7 binary serialization (`torch.save(file, obj)` in binary mode) reader,
 * used by `fovea convert` to read the official DeepMask / SharpMask /
 * MultiPathNet checkpoints.
 *
 * Follows torch7's own File.lua and generic/{Tensor,Storage}.c (python-torchfile
 * and Netron's torch.js were read too; where they differ from torch7 the reader
 * follows torch7: a plain function (tag 6) carries no reference index, and a
 * `tds.Vec`/`tds.Hash` count is a `long`).
 *
 * What you get back (T7Value):
 * - nil → null, number → number (Lua numbers are float64), boolean → boolean;
 * - string → string when it is valid UTF-8, otherwise its raw bytes (Uint8Array);
 * - table → Map (keys keep Lua identity: a table key is the same Map object),
 *   or an array when the keys are exactly 1..n (`listHeuristic`, on by default;
 *   a list-like table that contains a reference to itself stays a Map so that
 *   the reference is still the same object);
 * - tensors → T7Tensor, storages → T7Storage (a storage shared by several
 *   tensors is one T7Storage object);
 * - `tds.Vec` → array, `tds.Hash` → Map;
 * - functions → T7Function (bytecode kept as bytes, never run);
 * - any other torch class → T7Object {typename, version, fields}.
 * Back-references resolve to the same JS object, so cycles come back as cycles.
 *
 * Every size read from the file is checked against the bytes left before
 * anything is allocated; a malformed or truncated file gives a FoveaError
 * 'ERR_WEIGHTS' whose message says what was wrong and at which byte.
 *
 * readT7Prefix() reads a file that ends early (a cut download, a checkpoint
 * copied in part) as far as it goes and returns the object graph built so far,
 * with what was cut off marked; see there.
 */
import { FoveaError } from './errors';
import { float16ToFloat32 } from './safetensors';

export type T7DType = 'uint8' | 'int8' | 'int16' | 'int32' | 'int64' | 'float16' | 'float32' | 'float64';

/** float16 data comes as uint16 bit patterns; int64 as BigInt64Array whatever the file's long size. */
export type T7TypedArray =
  | Uint8Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint16Array
  | Float32Array
  | Float64Array;

export type T7Value =
  | null
  | boolean
  | number
  | string
  | Uint8Array
  | T7Value[]
  | T7Table
  | T7Object
  | T7Tensor
  | T7Storage
  | T7Function;

// An interface (not an alias) so that the recursive type is allowed.
export interface T7Table extends Map<T7Value, T7Value> {}

type Indexable = { [i: number]: number | bigint; readonly length: number };

const ELEMENT: Record<T7DType, { size: number; make: (n: number) => T7TypedArray }> = {
  uint8: { size: 1, make: (n) => new Uint8Array(n) },
  int8: { size: 1, make: (n) => new Int8Array(n) },
  int16: { size: 2, make: (n) => new Int16Array(n) },
  int32: { size: 4, make: (n) => new Int32Array(n) },
  int64: { size: 8, make: (n) => new BigInt64Array(n) },
  float16: { size: 2, make: (n) => new Uint16Array(n) },
  float32: { size: 4, make: (n) => new Float32Array(n) },
  float64: { size: 8, make: (n) => new Float64Array(n) },
};

// torch.<X>Tensor / torch.<X>Storage and the cutorch torch.Cuda<X>... twins,
// which are serialized exactly like the CPU types. torch.CudaTensor and
// torch.CudaStorage are float32.
const TENSOR_TYPES = new Map<string, T7DType>();
const STORAGE_TYPES = new Map<string, T7DType>();
for (const [name, dtype] of [
  ['Byte', 'uint8'],
  ['Char', 'int8'],
  ['Short', 'int16'],
  ['Int', 'int32'],
  ['Long', 'int64'],
  ['Half', 'float16'],
  ['Float', 'float32'],
  ['Double', 'float64'],
] as const) {
  TENSOR_TYPES.set(`torch.${name}Tensor`, dtype);
  STORAGE_TYPES.set(`torch.${name}Storage`, dtype);
  const cuda = name === 'Float' ? '' : name;
  TENSOR_TYPES.set(`torch.Cuda${cuda}Tensor`, dtype);
  STORAGE_TYPES.set(`torch.Cuda${cuda}Storage`, dtype);
}

const MAX_EXPANDED_ELEMENTS = 2 ** 28;

export class T7Storage {
  constructor(
    /** Class name, e.g. 'torch.FloatStorage' or 'torch.CudaStorage'; '' when the file ended before it. */
    readonly type: string,
    readonly dtype: T7DType,
    readonly version: number,
    /** The elements: a copy of the file's bytes, owned by this storage. Empty when truncated. */
    readonly data: T7TypedArray,
    /**
     * Elements the file declares. Equals data.length except for a storage that
     * readT7Prefix() found cut off: then it is the declared count (nothing is
     * allocated for it), or null when the file ended before the count.
     */
    readonly declaredLength: number | null = data.length,
  ) {}

  get length(): number {
    return this.data.length;
  }

  /** True for a storage whose elements the file did not hold (only from readT7Prefix). */
  get truncated(): boolean {
    return this.declaredLength !== this.data.length;
  }
}

export class T7Tensor {
  /** Number of elements; 0 for a tensor with no dimensions (Torch7 has no scalars). */
  readonly numel: number;

  constructor(
    /** Class name, e.g. 'torch.FloatTensor' or 'torch.CudaTensor'. */
    readonly type: string,
    readonly dtype: T7DType,
    readonly version: number,
    readonly shape: readonly number[],
    /** In elements, as in the file. */
    readonly strides: readonly number[],
    /** 0-based element offset into the storage (the file stores it 1-based). */
    readonly offset: number,
    readonly storage: T7Storage | null,
  ) {
    this.numel = shape.length === 0 ? 0 : shape.reduce((a, b) => a * b, 1);
  }

  /** True when the elements are laid out row-major without gaps. */
  isContiguous(): boolean {
    let expected = 1;
    for (let d = this.shape.length - 1; d >= 0; d--) {
      const size = this.shape[d]!;
      if (size === 1) continue;
      if (this.strides[d] !== expected) return false;
      expected *= size;
    }
    return true;
  }

  /**
   * The elements in row-major order. A contiguous tensor gives a view into its
   * storage (writes show through, and the view shares the storage with every
   * other tensor on it); a strided one gives a gathered copy (ERR_WEIGHTS if
   * zero strides would make that copy larger than 2^28 elements and than the
   * storage).
   */
  toTypedArray(): T7TypedArray {
    const { storage, numel } = this;
    if (storage === null || numel === 0) return ELEMENT[this.dtype].make(0);
    if (storage.truncated) {
      throw new FoveaError(
        'ERR_WEIGHTS',
        `t7: ${this.type} of shape [${this.shape.join(', ')}] has no data: the file ends inside its ` +
          `${storage.type || 'storage'} (declared ${storage.declaredLength ?? 'unknown'} elements, none read)`,
      );
    }
    if (this.isContiguous()) return storage.data.subarray(this.offset, this.offset + numel);
    // Zero or overlapping strides (torch's expand) can make a small storage
    // look huge; copying that is bounded, since the size is not backed by bytes.
    if (numel > storage.length && numel > MAX_EXPANDED_ELEMENTS) {
      throw new FoveaError(
        'ERR_WEIGHTS',
        `t7: ${this.type} of shape [${this.shape.join(', ')}] repeats a ${storage.length}-element storage ` +
          `into ${numel} elements; refusing to copy more than ${MAX_EXPANDED_ELEMENTS}`,
      );
    }
    const out = ELEMENT[this.dtype].make(numel);
    const src = storage.data as Indexable;
    const dst = out as Indexable;
    const nd = this.shape.length;
    const index = new Array<number>(nd).fill(0);
    let at = this.offset;
    for (let i = 0; i < numel; i++) {
      dst[i] = src[at]!;
      for (let d = nd - 1; d >= 0; d--) {
        at += this.strides[d]!;
        if (++index[d]! < this.shape[d]!) break;
        at -= this.strides[d]! * this.shape[d]!;
        index[d] = 0;
      }
    }
    return out;
  }

  /** The elements in row-major order as a new Float32Array (always a copy). */
  toFloat32(): Float32Array {
    const a = this.toTypedArray();
    if (this.dtype === 'float16') return float16ToFloat32(a as Uint16Array);
    if (a instanceof BigInt64Array) return Float32Array.from(a, Number);
    return Float32Array.from(a as Exclude<T7TypedArray, BigInt64Array>);
  }
}

/** An instance of a torch class with no special reader (nn modules, user classes). */
export class T7Object {
  constructor(
    readonly typename: string,
    /** From the "V <n>" string; 0 for files written before versioning. */
    readonly version: number,
    /** What the class serialized, normally a Map of its attributes. */
    public fields: T7Value = null,
  ) {}

  /** An attribute, when the fields are a table. */
  get(key: string): T7Value | undefined {
    return this.fields instanceof Map ? this.fields.get(key) : undefined;
  }
}

/** A serialized Lua function. The bytecode is kept, never executed. */
export class T7Function {
  constructor(
    readonly size: number,
    readonly dumped: Uint8Array,
    /** 6: plain function (no reference index), 7: legacy recursive, 8: recursive. */
    readonly tag: 6 | 7 | 8,
    public upvalues: T7Value = null,
  ) {}
}

export interface T7ReadOptions {
  /**
   * Bytes of a C `long` in the writer: 8 on Linux/macOS x86_64 (the default),
   * 4 for files saved by Windows builds. 'auto' reads with 8 and, if that
   * fails, with 4 (a 4-byte file read with 8-byte longs fails on its first
   * size, so this is reliable for real files).
   */
  readonly longSize?: 4 | 8 | 'auto';
  /** Turn tables whose keys are exactly 1..n into arrays (default true). */
  readonly listHeuristic?: boolean;
  /**
   * Deepest allowed nesting of tables/objects (default 1000; a small nngraph
   * model needs about 20). Each level takes stack: Node's default stack holds
   * about 2500, and deeper files fail with ERR_WEIGHTS, not a RangeError.
   */
  readonly maxDepth?: number;
}

export const T7_DEFAULT_MAX_DEPTH = 1000;

const TYPE_NIL = 0;
const TYPE_NUMBER = 1;
const TYPE_STRING = 2;
const TYPE_TABLE = 3;
const TYPE_TORCH = 4;
const TYPE_BOOLEAN = 5;
const TYPE_FUNCTION = 6;
const TYPE_LEGACY_RECUR_FUNCTION = 7;
const TYPE_RECUR_FUNCTION = 8;

/**
 * Thrown inside the reader in prefix mode (only) when the bytes run out. Each
 * object being read catches it on the way up, attaches the partial child it
 * carries, and passes itself on as the new partial value.
 */
class T7Cut extends Error {
  /** What was built of the object being read when the bytes ran out; undefined: nothing usable. */
  partial: T7Value | undefined = undefined;
  constructor(
    readonly error: FoveaError,
    /** Byte where the read that ran out began. */
    readonly at: number,
  ) {
    super(error.message);
  }
}

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
// Lua's tonumber() on the part after "V " (decimal forms only).
const LUA_NUMBER = /^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/;

class T7Reader {
  private pos = 0;
  private depth = 0;
  private readonly view: DataView;
  private readonly objects = new Map<number, T7Value>();
  // Tables being read, and those of them referenced from inside themselves.
  private readonly open = new Set<number>();
  private readonly selfReferenced = new Set<number>();
  /** Prefix mode: tables, arrays, objects, functions and tensors that the end of the file cut short. */
  readonly incomplete = new Set<object>();

  constructor(
    private readonly bytes: Uint8Array,
    private readonly longSize: 4 | 8,
    private readonly listHeuristic: boolean,
    private readonly maxDepth: number,
    /** readT7Prefix(): running out of bytes throws T7Cut (with the partial graph) instead of ERR_WEIGHTS. */
    private readonly prefix = false,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private fail(what: string, at: number): never {
    throw new FoveaError('ERR_WEIGHTS', `t7: ${what} (at byte ${at})`);
  }

  /** The file ends before `what`: ERR_WEIGHTS, or in prefix mode a T7Cut carrying `partial`. */
  private cut(what: string, at: number, partial?: T7Value): never {
    if (!this.prefix) this.fail(what, at);
    const e = new T7Cut(new FoveaError('ERR_WEIGHTS', `t7: ${what} (at byte ${at})`), at);
    e.partial = partial;
    throw e;
  }

  /**
   * Prefix mode: when `e` is a T7Cut, makes `partial()` (the object being read,
   * with what its child left attached) the value it carries up. Always rethrows.
   */
  private unwind(e: unknown, partial: (child: T7Value | undefined) => T7Value | undefined): never {
    if (e instanceof T7Cut) {
      e.partial = partial(e.partial);
      if (e.partial !== null && typeof e.partial === 'object' && !(e.partial instanceof Uint8Array)) {
        this.incomplete.add(e.partial);
      }
    }
    throw e;
  }

  private left(): number {
    return this.bytes.length - this.pos;
  }

  private need(n: number, what: string, at: number = this.pos): void {
    const left = this.left();
    if (n > left) this.cut(`truncated file: ${what} needs ${n} bytes, only ${left} left`, at);
  }

  private int32(what: string): number {
    this.need(4, what);
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }

  private long(what: string): number {
    const at = this.pos;
    this.need(this.longSize, what);
    if (this.longSize === 4) {
      const v = this.view.getInt32(at, true);
      this.pos += 4;
      return v;
    }
    const v = this.view.getBigInt64(at, true);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) {
      this.fail(`${what} ${v} is out of range`, at);
    }
    return Number(v);
  }

  private count(what: string, read: 'int' | 'long'): number {
    const at = this.pos;
    const n = read === 'int' ? this.int32(what) : this.long(what);
    if (n < 0) this.fail(`negative ${what} ${n}`, at);
    return n;
  }

  private raw(n: number): Uint8Array {
    const out = copyBytes(this.bytes.subarray(this.pos, this.pos + n));
    this.pos += n;
    return out;
  }

  private string(what: string): string | Uint8Array {
    const at = this.pos;
    const n = this.count(`${what} length`, 'int');
    this.need(n, `${what} of ${n} bytes`, at);
    const bytes = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    try {
      return utf8.decode(bytes);
    } catch {
      return copyBytes(bytes);
    }
  }

  private className(what: string): string {
    const s = this.string(what);
    return typeof s === 'string' ? s : Buffer.from(s).toString('latin1');
  }

  read(): T7Value {
    const at = this.pos;
    const tag = this.int32('type tag');
    switch (tag) {
      case TYPE_NIL:
        return null;
      case TYPE_NUMBER: {
        this.need(8, 'number');
        const v = this.view.getFloat64(this.pos, true);
        this.pos += 8;
        return v;
      }
      case TYPE_BOOLEAN:
        return this.int32('boolean') === 1;
      case TYPE_STRING:
        return this.string('string');
      case TYPE_FUNCTION:
        return this.func(null, TYPE_FUNCTION, at);
      case TYPE_TABLE:
      case TYPE_TORCH:
      case TYPE_LEGACY_RECUR_FUNCTION:
      case TYPE_RECUR_FUNCTION: {
        const index = this.int32('reference index');
        if (this.objects.has(index)) {
          if (this.open.has(index)) this.selfReferenced.add(index);
          return this.objects.get(index)!;
        }
        if (tag === TYPE_TABLE) return this.table(index, at);
        if (tag === TYPE_TORCH) return this.torch(index, at);
        return this.func(index, tag, at);
      }
      default:
        return this.fail(`unknown type tag ${tag}`, at);
    }
  }

  private enter(at: number): void {
    if (++this.depth > this.maxDepth) this.fail(`objects nested deeper than ${this.maxDepth}`, at);
  }

  private table(index: number, at: number): T7Value {
    this.enter(at);
    const n = this.count('table size', 'int');
    // Every key and value takes at least its 4-byte type tag. (Prefix mode reads
    // the entries that are there; each takes bytes, so the loop is still bounded.)
    if (!this.prefix) this.need(n * 8, `a table of ${n} entries`, at);
    const map: T7Table = new Map();
    this.objects.set(index, map);
    this.open.add(index);
    // The key whose value is being read (undefined while a key is read).
    let key: T7Value | undefined;
    try {
      for (let i = 0; i < n; i++) {
        key = undefined;
        const keyAt = this.pos;
        const k = this.read();
        if (k === null || Number.isNaN(k)) this.fail('table key is nil or NaN', keyAt);
        key = k;
        map.set(k, this.read());
      }
    } catch (e) {
      // A key cut short is dropped; a value cut short is kept as far as it was read.
      this.unwind(e, (child) => {
        if (key !== undefined && child !== undefined) map.set(key, child);
        return this.listOrMap(index, map);
      });
    }
    this.open.delete(index);
    this.depth--;
    return this.listOrMap(index, map);
  }

  private listOrMap(index: number, map: T7Table): T7Value {
    if (!this.listHeuristic || this.selfReferenced.has(index) || !isListLike(map)) return map;
    const list = new Array<T7Value>(map.size);
    for (const [k, v] of map) list[(k as number) - 1] = v;
    this.objects.set(index, list);
    return list;
  }

  private torch(index: number, at: number): T7Value {
    this.enter(at);
    let typename = this.className('class name');
    let version = 0;
    // "V <n>" then the class name; legacy files have the class name only.
    const m = /^V (.*)$/s.exec(typename);
    if (m && LUA_NUMBER.test(m[1]!)) {
      version = Number(m[1]);
      typename = this.className('class name');
    }
    let obj: T7Value;
    const tensorType = TENSOR_TYPES.get(typename);
    const storageType = STORAGE_TYPES.get(typename);
    if (tensorType !== undefined) {
      obj = this.tensor(typename, tensorType, version);
      this.objects.set(index, obj);
    } else if (storageType !== undefined) {
      obj = this.storage(typename, storageType, version);
      this.objects.set(index, obj);
    } else if (typename === 'tds.Vec') {
      const n = this.count('tds.Vec size', 'long');
      if (!this.prefix) this.need(n * 4, `a tds.Vec of ${n} elements`);
      const vec: T7Value[] = [];
      this.objects.set(index, vec);
      try {
        for (let i = 0; i < n; i++) vec.push(this.read());
      } catch (e) {
        this.unwind(e, (child) => {
          if (child !== undefined) vec.push(child);
          return vec;
        });
      }
      obj = vec;
    } else if (typename === 'tds.Hash') {
      const n = this.count('tds.Hash size', 'long');
      if (!this.prefix) this.need(n * 8, `a tds.Hash of ${n} entries`);
      const hash: T7Table = new Map();
      this.objects.set(index, hash);
      let key: T7Value | undefined;
      try {
        for (let i = 0; i < n; i++) {
          key = undefined;
          key = this.read();
          hash.set(key, this.read());
        }
      } catch (e) {
        this.unwind(e, (child) => {
          if (key !== undefined && child !== undefined) hash.set(key, child);
          return hash;
        });
      }
      obj = hash;
    } else {
      const o = new T7Object(typename, version);
      // Registered before its fields are read: a field may be the object itself.
      this.objects.set(index, o);
      try {
        o.fields = this.read();
      } catch (e) {
        this.unwind(e, (child) => {
          if (child !== undefined) o.fields = child;
          return o;
        });
      }
      obj = o;
    }
    this.depth--;
    return obj;
  }

  private storage(typename: string, dtype: T7DType, version: number): T7Storage {
    const at = this.pos;
    const n = this.count(`${typename} size`, 'long');
    // A long storage holds C longs, so its element size follows the file.
    const size = dtype === 'int64' ? this.longSize : ELEMENT[dtype].size;
    const left = this.left();
    if (n > left / size) {
      // Prefix mode keeps the header: the declared count, and no data (nothing allocated for it).
      const header = new T7Storage(typename, dtype, version, ELEMENT[dtype].make(0), n);
      this.cut(`${typename} declares ${n} elements (${n * size} bytes) but only ${left} bytes are left`, at, header);
    }
    const bytes = this.raw(n * size);
    return new T7Storage(typename, dtype, version, decodeElements(bytes, dtype, size, n));
  }

  private tensor(typename: string, dtype: T7DType, version: number): T7Tensor {
    const at = this.pos;
    const nDim = this.count(`${typename} dimension count`, 'int');
    this.need((2 * nDim + 1) * this.longSize, `sizes, strides and offset of a ${nDim}-D ${typename}`, at);
    const shape: number[] = [];
    const strides: number[] = [];
    for (let d = 0; d < nDim; d++) shape.push(this.count('tensor size', 'long'));
    for (let d = 0; d < nDim; d++) strides.push(this.count('tensor stride', 'long'));
    const offset = this.long('storage offset') - 1;
    const storageAt = this.pos;
    let storage: T7Value;
    try {
      storage = this.read();
    } catch (e) {
      // Prefix mode: the header is complete, the storage was cut. Keep the
      // tensor with the storage's header (or a placeholder when the file ended
      // before its element count); both hold no data.
      this.unwind(e, (child) => {
        if (child !== undefined && !(child instanceof T7Storage)) this.fail(`${typename} has no storage object`, storageAt);
        const header = child ?? new T7Storage('', dtype, 0, ELEMENT[dtype].make(0), null);
        return this.checkTensor(new T7Tensor(typename, dtype, version, shape, strides, offset, header), at);
      });
    }
    if (storage !== null && !(storage instanceof T7Storage)) this.fail(`${typename} has no storage object`, storageAt);
    if (storage !== null && storage.dtype !== dtype) this.fail(`${typename} has a ${storage.type}`, storageAt);
    return this.checkTensor(new T7Tensor(typename, dtype, version, shape, strides, offset, storage), at);
  }

  private checkTensor(t: T7Tensor, at: number): T7Tensor {
    const { type, shape, strides, offset, storage } = t;
    if (storage !== null && storage.dtype !== t.dtype) this.fail(`${type} has a ${storage.type}`, at);
    if (!Number.isSafeInteger(t.numel)) this.fail(`${type} of shape [${shape.join(', ')}] is too large`, at);
    if (t.numel > 0) {
      if (storage === null) this.fail(`${type} of shape [${shape.join(', ')}] has no storage`, at);
      // A cut storage is checked against its declared size (unknown: not checked).
      const length = storage.declaredLength ?? Infinity;
      let last = offset;
      for (let d = 0; d < shape.length; d++) last += (shape[d]! - 1) * strides[d]!;
      if (offset < 0 || last >= length) {
        this.fail(
          `${type} of shape [${shape.join(', ')}], strides [${strides.join(', ')}] at storage offset ${offset} ` +
            `does not fit its ${length}-element storage`,
          at,
        );
      }
    }
    return t;
  }

  private func(index: number | null, tag: 6 | 7 | 8, at: number): T7Function {
    this.enter(at);
    const sizeAt = this.pos;
    const size = this.count('function bytecode size', 'int');
    this.need(size, `function bytecode of ${size} bytes`, sizeAt);
    const f = new T7Function(size, this.raw(size), tag);
    // Registered before its upvalues: a recursive function is its own upvalue.
    if (index !== null) this.objects.set(index, f);
    try {
      f.upvalues = this.read();
    } catch (e) {
      this.unwind(e, (child) => {
        if (child !== undefined) f.upvalues = child;
        return f;
      });
    }
    this.depth--;
    return f;
  }
}

// A fresh, 0-offset copy. (Buffer#slice would return a view, so not that.)
function copyBytes(src: Uint8Array): Uint8Array {
  const out = new Uint8Array(src.length);
  out.set(src);
  return out;
}

function isListLike(map: T7Table): boolean {
  for (const k of map.keys()) {
    if (typeof k !== 'number' || !Number.isInteger(k) || k < 1 || k > map.size) return false;
  }
  return true;
}

function decodeElements(bytes: Uint8Array, dtype: T7DType, size: number, n: number): T7TypedArray {
  if (HOST_LITTLE_ENDIAN && size === ELEMENT[dtype].size) {
    switch (dtype) {
      case 'uint8': return bytes;
      case 'int8': return new Int8Array(bytes.buffer, 0, n);
      case 'int16': return new Int16Array(bytes.buffer, 0, n);
      case 'int32': return new Int32Array(bytes.buffer, 0, n);
      case 'int64': return new BigInt64Array(bytes.buffer, 0, n);
      case 'float16': return new Uint16Array(bytes.buffer, 0, n);
      case 'float32': return new Float32Array(bytes.buffer, 0, n);
      case 'float64': return new Float64Array(bytes.buffer, 0, n);
    }
  }
  // 4-byte longs, or a big-endian host: element by element.
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = ELEMENT[dtype].make(n);
  const dst = out as Indexable;
  for (let i = 0; i < n; i++) {
    const o = i * size;
    switch (dtype) {
      case 'uint8': dst[i] = view.getUint8(o); break;
      case 'int8': dst[i] = view.getInt8(o); break;
      case 'int16': dst[i] = view.getInt16(o, true); break;
      case 'int32': dst[i] = view.getInt32(o, true); break;
      case 'int64': dst[i] = size === 4 ? BigInt(view.getInt32(o, true)) : view.getBigInt64(o, true); break;
      case 'float16': dst[i] = view.getUint16(o, true); break;
      case 'float32': dst[i] = view.getFloat32(o, true); break;
      case 'float64': dst[i] = view.getFloat64(o, true); break;
    }
  }
  return out;
}

/**
 * Reads one object (what torch.load returns) from the bytes of a binary .t7
 * file. Bytes after that object are ignored, as torch.load ignores them.
 */
export function readT7(bytes: Uint8Array, options: T7ReadOptions = {}): T7Value {
  const { longSize, listHeuristic, maxDepth } = checkOptions('readT7', bytes, options);
  if (longSize !== 'auto') return readWith(bytes, longSize, listHeuristic, maxDepth);
  try {
    return readWith(bytes, 8, listHeuristic, maxDepth);
  } catch (err8) {
    if (!(err8 instanceof FoveaError)) throw err8;
    try {
      return readWith(bytes, 4, listHeuristic, maxDepth);
    } catch {
      throw err8;
    }
  }
}

/** What readT7Prefix() read. */
export interface T7PrefixResult {
  /**
   * The object, complete or as far as the file goes; undefined when the file
   * ends before anything usable (e.g. inside the first type tag or string).
   */
  readonly value: T7Value | undefined;
  /** True when the whole object was read: then value is what readT7 returns. */
  readonly complete: boolean;
  /** When not complete: the ERR_WEIGHTS saying what the file ended in, and at which byte. */
  readonly error?: FoveaError;
  /** Where the file ends: its length in bytes. */
  readonly endOffset: number;
  /** When not complete: the byte where the read that ran out of bytes began. */
  readonly stoppedAt?: number;
  /**
   * The containers the end of the file cut short: tables (Map or array), tds
   * vectors/hashes, T7Objects whose fields were cut, functions, and tensors
   * whose storage was cut (those storages have `truncated` set and no data).
   * Everything else reachable from value was read completely.
   */
  readonly incomplete: ReadonlySet<object>;
}

/**
 * Like readT7, but a file that ends early is not an error: it returns the
 * object graph as far as it was read. Every object is attached to its parent as
 * soon as it is started, so the path from the top to the point where the file
 * ends is kept, each container with the entries read before it (a table entry
 * whose key was cut is dropped). A tensor whose storage was cut keeps its
 * header (shape, strides, offset) and gets a storage with `truncated` set, its
 * declared size (`declaredLength`) and no data: nothing is allocated from a
 * size the file does not back, and toTypedArray() on it throws ERR_WEIGHTS.
 *
 * Only running out of bytes is tolerated: a malformed file (unknown tag, nil
 * key, negative size, nesting deeper than maxDepth, a tensor that does not fit
 * its storage's declared size…) still throws ERR_WEIGHTS, as readT7 does.
 * Table and tds sizes are not checked against the bytes left up front (the
 * entries that are there are read); so `error` may name a later byte than
 * readT7's error for the same file.
 *
 * With longSize 'auto', a complete read with 8-byte longs wins, then a
 * complete read with 4; otherwise the 8-byte result (or the 4-byte one when
 * 8 is malformed and 4 is only truncated).
 */
export function readT7Prefix(bytes: Uint8Array, options: T7ReadOptions = {}): T7PrefixResult {
  const { longSize, listHeuristic, maxDepth } = checkOptions('readT7Prefix', bytes, options);
  if (longSize !== 'auto') return readPrefixWith(bytes, longSize, listHeuristic, maxDepth);
  let r8: T7PrefixResult;
  try {
    r8 = readPrefixWith(bytes, 8, listHeuristic, maxDepth);
  } catch (err8) {
    if (!(err8 instanceof FoveaError)) throw err8;
    try {
      return readPrefixWith(bytes, 4, listHeuristic, maxDepth);
    } catch {
      throw err8;
    }
  }
  if (r8.complete) return r8;
  try {
    const r4 = readPrefixWith(bytes, 4, listHeuristic, maxDepth);
    if (r4.complete) return r4;
  } catch {
    // 4-byte longs do not fit either: the 8-byte reading stands.
  }
  return r8;
}

function checkOptions(
  fn: string,
  bytes: Uint8Array,
  options: T7ReadOptions,
): { longSize: 4 | 8 | 'auto'; listHeuristic: boolean; maxDepth: number } {
  if (!(bytes instanceof Uint8Array)) throw new FoveaError('ERR_INPUT', `${fn}: expected a Uint8Array or Buffer`);
  const longSize = options.longSize ?? 8;
  const listHeuristic = options.listHeuristic ?? true;
  const maxDepth = options.maxDepth ?? T7_DEFAULT_MAX_DEPTH;
  if (longSize !== 4 && longSize !== 8 && longSize !== 'auto') {
    throw new FoveaError('ERR_OPTIONS', `${fn}: longSize must be 4, 8 or 'auto', got ${String(longSize)}`);
  }
  if (!Number.isInteger(maxDepth) || maxDepth < 1 || maxDepth > 10_000) {
    throw new FoveaError('ERR_OPTIONS', `${fn}: maxDepth must be an integer from 1 to 10000, got ${String(maxDepth)}`);
  }
  return { longSize, listHeuristic, maxDepth };
}

function readPrefixWith(bytes: Uint8Array, longSize: 4 | 8, listHeuristic: boolean, maxDepth: number): T7PrefixResult {
  const reader = new T7Reader(bytes, longSize, listHeuristic, maxDepth, true);
  try {
    const value = readWith(bytes, longSize, listHeuristic, maxDepth, reader);
    return { value, complete: true, endOffset: bytes.length, incomplete: reader.incomplete };
  } catch (err) {
    if (!(err instanceof T7Cut)) throw err;
    return {
      value: err.partial,
      complete: false,
      error: err.error,
      endOffset: bytes.length,
      stoppedAt: err.at,
      incomplete: reader.incomplete,
    };
  }
}

function readWith(
  bytes: Uint8Array,
  longSize: 4 | 8,
  listHeuristic: boolean,
  maxDepth: number,
  reader: T7Reader = new T7Reader(bytes, longSize, listHeuristic, maxDepth),
): T7Value {
  try {
    return reader.read();
  } catch (err) {
    // A maxDepth above what this thread's stack holds: still a weights error.
    if (err instanceof RangeError && /call stack/i.test(err.message)) {
      throw new FoveaError('ERR_WEIGHTS', `t7: objects nested too deeply for the stack (maxDepth ${maxDepth})`, {
        cause: err,
      });
    }
    throw err;
  }
}
