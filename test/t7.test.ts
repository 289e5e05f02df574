import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FoveaError } from '../lib/errors';
import {
  readT7,
  readT7Prefix,
  T7Function,
  T7Object,
  T7Storage,
  T7Tensor,
  type T7ReadOptions,
  type T7Table,
  type T7Value,
} from '../lib/t7';
import { expectFoveaError } from './expect-error';
import { SHARED_FIXTURES, itShared as itSharedFixture } from './shared-fixtures';

// Small upstream files committed with the tests (see test/fixtures/README.md).
const LOCAL = path.join(__dirname, 'fixtures', 't7');
// The full set, including the 748 kB truncated DeepMask checkpoint.
const SHARED = path.join(SHARED_FIXTURES, 't7');
const itShared = (name: string, rel: string, fn: (file: string) => void) => itSharedFixture(name, path.join('t7', rel), fn);

function local(rel: string): Buffer {
  return fs.readFileSync(path.join(LOCAL, rel));
}


function expectWeightsError(fn: () => unknown, message?: RegExp): FoveaError {
  const e = expectFoveaError(fn, 'ERR_WEIGHTS', message);
  expect(e.message).toMatch(/at byte \d+|nested too deeply/);
  return e;
}

function asMap(v: T7Value | undefined): T7Table {
  expect(v).toBeInstanceOf(Map);
  return v as T7Table;
}

function asObject(v: T7Value | undefined, typename?: string): T7Object {
  expect(v).toBeInstanceOf(T7Object);
  if (typename !== undefined) expect((v as T7Object).typename).toBe(typename);
  return v as T7Object;
}

function asTensor(v: T7Value | undefined): T7Tensor {
  expect(v).toBeInstanceOf(T7Tensor);
  return v as T7Tensor;
}

/** Every distinct object reachable from a value (cycles are fine). */
function reachable(root: T7Value): Set<object> {
  const seen = new Set<object>();
  const stack: T7Value[] = [root];
  while (stack.length > 0) {
    const v = stack.pop()!;
    if (v === null || typeof v !== 'object' || v instanceof Uint8Array || seen.has(v)) continue;
    seen.add(v);
    if (Array.isArray(v)) stack.push(...v);
    else if (v instanceof Map) for (const [k, x] of v) stack.push(k, x);
    else if (v instanceof T7Object) stack.push(v.fields);
    else if (v instanceof T7Function) stack.push(v.upvalues);
    else if (v instanceof T7Tensor) stack.push(v.storage);
  }
  return seen;
}

/** Writes Torch7 binary serialization by hand, for synthetic and hostile files. */
class T7Writer {
  private readonly bytes: number[] = [];
  constructor(private readonly longSize: 4 | 8 = 8) {}

  int(v: number): this {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    this.bytes.push(...b);
    return this;
  }
  long(v: number | bigint): this {
    const b = Buffer.alloc(this.longSize);
    if (this.longSize === 8) b.writeBigInt64LE(BigInt(v));
    else b.writeInt32LE(Number(v));
    this.bytes.push(...b);
    return this;
  }
  raw(data: ArrayLike<number>): this {
    this.bytes.push(...Array.from(data));
    return this;
  }
  str(s: string | Uint8Array): this {
    const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
    return this.int(b.length).raw(b);
  }
  nil(): this {
    return this.int(0);
  }
  num(v: number): this {
    const b = Buffer.alloc(8);
    b.writeDoubleLE(v);
    return this.int(1).raw(b);
  }
  string(s: string | Uint8Array): this {
    return this.int(2).str(s);
  }
  bool(v: boolean): this {
    return this.int(5).int(v ? 1 : 0);
  }
  table(index: number, n: number): this {
    return this.int(3).int(index).int(n);
  }
  ref(tag: number, index: number): this {
    return this.int(tag).int(index);
  }
  torch(index: number, cls: string, version: string | null = 'V 1'): this {
    this.int(4).int(index);
    if (version !== null) this.str(version);
    return this.str(cls);
  }
  tensorBody(shape: number[], strides: number[], offset1: number): this {
    this.int(shape.length);
    for (const s of shape) this.long(s);
    for (const s of strides) this.long(s);
    return this.long(offset1);
  }
  floats(values: number[]): this {
    const b = Buffer.alloc(4 * values.length);
    values.forEach((v, i) => b.writeFloatLE(v, 4 * i));
    return this.raw(b);
  }
  done(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

function floatTensor(w: T7Writer, index: number, storageIndex: number, values: number[], cls = 'torch.FloatTensor', storageCls = 'torch.FloatStorage'): T7Writer {
  return w
    .torch(index, cls)
    .tensorBody([values.length], [1], 1)
    .torch(storageIndex, storageCls)
    .long(values.length)
    .floats(values);
}

const FLOATTENSOR_VALUES = [
  0.8635311722755432, 0.5361218452453613, 0.4820634126663208, 0.5423464775085449, 0.3359743654727936,
  0.8148993253707886, 0.4681081175804138, 0.22627884149551392, 0.25641050934791565, 0.8827904462814331,
  0.16968895494937897, 0.49185240268707275, 0.21364617347717285, 0.8193004131317139, 0.5935672521591187,
  0.9584600329399109, 0.19001972675323486, 0.6521646976470947, 0.8729608654975891, 0.6823452115058899,
  0.5583873987197876, 0.9572979211807251, 0.2675526738166809, 0.13664843142032623,
];

// What each upstream file must decode to (EXPECTED.md in ../shared/fixtures/t7).
const EXPECTATIONS: Record<string, (v: T7Value, bytes: Uint8Array) => void> = {
  'torchfile/hello=123.t7': (v) => {
    expect([...asMap(v)]).toEqual([['hello', 123]]);
  },
  'torchfile/custom_class.t7': (v, bytes) => {
    const o = asObject(v, 'Blah');
    expect(o.version).toBe(1);
    expect(o.fields).toEqual([]); // an empty table; with the list heuristic off, an empty Map
    expect(asObject(readT7(bytes, { listHeuristic: false })).fields).toEqual(new Map());
  },
  'torchfile/doubletensor.t7': (v) => {
    const t = asTensor(v);
    expect(t.type).toBe('torch.DoubleTensor');
    expect(t.dtype).toBe('float64');
    expect(t.shape).toEqual([2, 3]);
    expect(t.toTypedArray()).toEqual(Float64Array.from([1, 2, 3, 4, 5, 6.9]));
    expect(Array.from(t.toTypedArray() as Float64Array).reduce((a, b) => a + b)).toBeCloseTo(21.9, 12);
  },
  'torchfile/floattensor.t7': (v) => {
    const t = asTensor(v);
    expect(t.dtype).toBe('float32');
    expect(t.shape).toEqual([2, 3, 4]);
    expect(t.strides).toEqual([12, 4, 1]);
    expect(t.offset).toBe(0);
    const a = t.toFloat32();
    expect(Array.from(a)).toEqual(FLOATTENSOR_VALUES);
    expect(Array.from(a).reduce((x, y) => x + y)).toBeCloseTo(12.97241666913, 5);
    expect(Math.min(...a)).toBeCloseTo(0.13664843, 7);
    expect(Math.max(...a)).toBeCloseTo(0.95846003, 7);
  },
  'torchfile/function.t7': (v) => {
    expect(v).toBeInstanceOf(T7Function);
    const f = v as T7Function;
    expect(f.tag).toBe(8);
    expect(f.size).toBe(218);
    expect(f.dumped.length).toBe(218);
    expect(Buffer.from(f.dumped.subarray(0, 3)).toString('latin1')).toBe('\x1bLJ');
    expect(f.upvalues).toEqual([]);
  },
  'torchfile/function_upvals.t7': (v) => {
    const f = v as T7Function;
    expect(f).toBeInstanceOf(T7Function);
    expect(f.size).toBe(89);
    expect(f.upvalues).toEqual([new Map<T7Value, T7Value>([['name', 'asdf'], ['value', 123]])]);
  },
  'torchfile/gmodule_with_linear_identity.t7': (v) => {
    const g = asObject(v, 'nn.gModule');
    expect(g.get('nInputs')).toBe(2);
    expect(g.get('verbose')).toBe(false);
    const modules = g.get('modules') as T7Value[];
    expect(modules.map((m) => asObject(m).typename)).toEqual(['nn.Identity', 'nn.Identity', 'nn.Linear', 'nn.CAddTable']);
    for (const key of ['forwardnodes', 'backwardnodes']) {
      const nodes = g.get(key) as T7Value[];
      expect(nodes).toHaveLength(9);
      for (const n of nodes) asObject(n, 'nngraph.Node');
    }
    const linear = asObject(modules[2]);
    const weight = asTensor(linear.get('weight'));
    expect(weight.dtype).toBe('float64');
    expect(weight.shape).toEqual([2, 1]);
    // EXPECTED.md prints 16 significant digits: compare to within an ulp or two.
    const close = (actual: T7Value | undefined, expected: number[]): void => {
      const a = asTensor(actual).toTypedArray() as Float64Array;
      expect(a).toHaveLength(expected.length);
      expected.forEach((e, i) => expect(Math.abs(a[i]! - e)).toBeLessThan(1e-17));
    };
    close(weight, [-0.02483729692175984, 0.17503953725099564]);
    close(linear.get('bias'), [0.05159847717732191, -0.2536714617162943]);
    // Shared references are the same objects: the Linear a forward node holds is modules[2].
    const holders = (g.get('forwardnodes') as T7Value[]).filter(
      (n) => asMap(asObject(n).get('data')).get('module') === linear,
    );
    expect(holders).toHaveLength(1);
  },
  'torchfile/list_table.t7': (v, bytes) => {
    expect(v).toEqual(['hello', 'world', 'third item', 123]);
    expect(readT7(bytes, { listHeuristic: false })).toEqual(
      new Map<T7Value, T7Value>([[1, 'hello'], [2, 'world'], [3, 'third item'], [4, 123]]),
    );
  },
  'torchfile/map_table1.t7': (v) => {
    expect(v).toEqual(new Map<T7Value, T7Value>([[0, 'zero'], [1, 'hello'], [2, 'world'], [3, 'third item'], [4, 123]]));
  },
  'torchfile/map_table2.t7': (v) => {
    expect(v).toEqual(
      new Map<T7Value, T7Value>([[1, 'hello'], [2, 'world'], [3, 'third item'], [4, 123], ['a', 'non number key']]),
    );
  },
  'torchfile/nngraph_node.t7': (v) => {
    const n = asObject(v, 'nngraph.Node');
    expect(n.get('id')).toBe(0);
    expect(n.get('visited')).toBe(false);
    expect(n.get('marked')).toBe(false);
    expect(n.get('children')).toEqual([]);
    const data = asMap(n.get('data'));
    expect(data.get('mapindex')).toEqual([]);
    expect(data.get('annotations')).toEqual(
      new Map<T7Value, T7Value>([
        ['_debugLabel', '[/home/scratch/breord/torch/share/lua/5.1/trepl/init.lua]:588_'],
        ['hello', 123],
      ]),
    );
  },
  'torchfile/recursive_class.t7': (v) => {
    const o = asObject(v, 'A');
    expect(o.get('a')).toBe(o);
  },
  'torchfile/recursive_kv_table.t7': (v) => {
    const m = asMap(v);
    expect(m.size).toBe(1);
    const [[k, x]] = [...m];
    expect(k).toBe(m);
    expect(x).toBe(m);
  },
  'torchfile/tds_hash.t7': (v) => {
    const m = asMap(v);
    expect(m.size).toBe(3);
    expect(m.get(1)).toBe(2);
    expect(m.get(2)).toBe(3);
    expect(m.get(10)).toBe(11);
  },
  'torchfile/tds_vec.t7': (v) => {
    expect(v).toEqual([123, 456]);
  },
  'cpp-torch-basic/net.t7': (v) => {
    const lin = asObject(v, 'nn.Linear');
    expect(lin.get('_type')).toBe('torch.FloatTensor');
    const w = asTensor(lin.get('weight'));
    expect(w.shape).toEqual([2, 3]);
    expect(Array.from(w.toFloat32())).toEqual([0, 1, 0, 0, 0, 1]);
    expect(Array.from(asTensor(lin.get('bias')).toFloat32())).toEqual([10, 10]);
    expect(Array.from(asTensor(lin.get('output')).toFloat32())).toEqual([12, 13]);
    expect(Array.from(asTensor(lin.get('gradWeight')).toFloat32())).toEqual([0, 0, 0, 0, 0, 0]);
    expect(Array.from(asTensor(lin.get('gradBias')).toFloat32())).toEqual([0, 0]);
    expect(asTensor(lin.get('gradInput')).numel).toBe(0);
    const objs = [...reachable(v)];
    expect(objs.filter((o) => o instanceof T7Tensor && o.type === 'torch.FloatTensor')).toHaveLength(6);
    expect(objs.filter((o) => o instanceof T7Storage && o.type === 'torch.FloatStorage')).toHaveLength(5);
  },
  'cpp-torch-basic/x.t7': (v) => {
    const t = asTensor(v);
    expect([t.shape, t.strides, t.offset]).toEqual([[3], [1], 0]);
    expect(Array.from(t.toFloat32())).toEqual([1, 2, 3]);
  },
  'cpp-torch-basic/y.t7': (v) => {
    expect(Array.from(asTensor(v).toFloat32())).toEqual([12, 13]);
  },
};

describe('readT7: the upstream fixtures', () => {
  for (const [rel, check] of Object.entries(EXPECTATIONS)) {
    it(rel, () => {
      const bytes = local(rel);
      check(readT7(bytes), bytes);
      // Real x86_64 files read the same with long-size detection.
      check(readT7(bytes, { longSize: 'auto' }), bytes);
    });
  }

  it('cpp-torch example: forward(net, x) equals y exactly', () => {
    const net = asObject(readT7(local('cpp-torch-basic/net.t7')));
    const x = asTensor(readT7(local('cpp-torch-basic/x.t7'))).toFloat32();
    const y = asTensor(readT7(local('cpp-torch-basic/y.t7'))).toFloat32();
    const w = asTensor(net.get('weight'));
    const b = asTensor(net.get('bias')).toFloat32();
    const wf = w.toFloat32();
    const [rows, cols] = w.shape as [number, number];
    const out = new Float32Array(rows);
    for (let r = 0; r < rows; r++) {
      let s = b[r]!;
      for (let c = 0; c < cols; c++) s += wf[r * cols + c]! * x[c]!;
      out[r] = s;
    }
    expect(out).toEqual(y);
  });

  itShared('every file in ../shared/fixtures/t7 has an expectation, and the committed copies match', '.', () => {
    const files: string[] = [];
    for (const sub of fs.readdirSync(SHARED)) {
      const dir = path.join(SHARED, sub);
      if (!fs.statSync(dir).isDirectory()) continue;
      for (const f of fs.readdirSync(dir)) files.push(`${sub}/${f}`);
    }
    const covered = [...Object.keys(EXPECTATIONS), 'deepmask-truncated/model.t7'];
    expect(files.sort()).toEqual(covered.sort());
    for (const rel of Object.keys(EXPECTATIONS)) {
      expect(local(rel).equals(fs.readFileSync(path.join(SHARED, rel))), rel).toBe(true);
    }
  });

  itShared('truncated DeepMask checkpoint: the config decodes, then a clean ERR_WEIGHTS', 'deepmask-truncated/model.t7', (file) => {
    const bytes = fs.readFileSync(file);
    expect(createHash('sha256').update(bytes).digest('hex').slice(0, 16)).toBe('b9a4b7b0e842c2cb');
    const e = expectWeightsError(() => readT7(bytes), /torch\.CudaStorage/);
    expect(e.message).toContain('526337 elements (2105348 bytes)');
    expect(e.message).toContain('only 746857 bytes are left');
    expect(e.message).toContain('at byte 1300');
    // Long-size detection must report the real (8-byte) failure, not the 4-byte retry's.
    expect(expectWeightsError(() => readT7(bytes, { longSize: 'auto' })).message).toBe(e.message);

    // The top-level table has 2 keys; its second key "model" starts at byte 616.
    // Cut there and claim 1 key: what remains is exactly the config table.
    const head = Uint8Array.from(bytes.subarray(0, 616));
    new DataView(head.buffer).setInt32(8, 1, true);
    const config = asMap(asMap(readT7(head)).get('config'));
    expect(Object.fromEntries(config as Map<string, T7Value>)).toEqual({
      km: 32, batch: 32, nthreads: 2, oSz: 56, rundir: 'pretrained/deepmask/', dm: false, iSz: 160,
      reload: '', gpu: 1, datadir: 'data/', gSz: 112, scale: 0.25, wd: 0.0005, maxload: 4000,
      momentum: 0.9, lr: 0, np: 500, ks: 32, maxepoch: 300, seed: 1, testmaxload: 100, shift: 16,
      hfreq: 0.5,
    });
  });
});

describe('readT7: format details', () => {
  it('Cuda* classes are read as their CPU twins (CudaTensor/CudaStorage are float32)', () => {
    const cases: Array<[string, string, string]> = [
      ['torch.CudaTensor', 'torch.CudaStorage', 'float32'],
      ['torch.CudaDoubleTensor', 'torch.CudaDoubleStorage', 'float64'],
    ];
    for (const [cls, storageCls, dtype] of cases) {
      const w = new T7Writer().torch(1, cls).tensorBody([2], [1], 1).torch(2, storageCls).long(2);
      if (dtype === 'float32') w.floats([1.5, -2]);
      else w.raw(Buffer.from(new Float64Array([1.5, -2]).buffer));
      const t = asTensor(readT7(w.done()));
      expect([t.type, t.dtype, t.storage?.type]).toEqual([cls, dtype, storageCls]);
      expect(Array.from(t.toFloat32())).toEqual([1.5, -2]);
    }
    const long = new T7Writer()
      .torch(1, 'torch.CudaLongTensor')
      .tensorBody([2], [1], 1)
      .torch(2, 'torch.CudaLongStorage')
      .long(2)
      .raw(Buffer.from(new BigInt64Array([-(2n ** 40n), 7n]).buffer));
    const lt = asTensor(readT7(long.done()));
    expect(lt.toTypedArray()).toEqual(BigInt64Array.from([-(2n ** 40n), 7n]));
    expect(Array.from(lt.toFloat32())).toEqual([-(2 ** 40), 7]);
  });

  it('byte, char, short, int and half tensors', () => {
    const cases: Array<[string, ArrayBufferView, number[]]> = [
      ['Byte', Uint8Array.from([0, 255]), [0, 255]],
      ['Char', Int8Array.from([-128, 5]), [-128, 5]],
      ['Short', Int16Array.from([-300, 300]), [-300, 300]],
      ['Int', Int32Array.from([-70000, 1]), [-70000, 1]],
      ['Half', Uint16Array.from([0x3c00, 0xc000]), [1, -2]], // 1.0 and -2.0 in binary16
    ];
    for (const [name, data, expected] of cases) {
      const w = new T7Writer()
        .torch(1, `torch.${name}Tensor`)
        .tensorBody([2], [1], 1)
        .torch(2, `torch.${name}Storage`)
        .long(2)
        .raw(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      expect(Array.from(asTensor(readT7(w.done())).toFloat32()), name).toEqual(expected);
    }
  });

  it('a storage shared by several tensors is one object, with each tensor at its own 1-based offset', () => {
    const w = new T7Writer().table(1, 2);
    w.string('a').torch(2, 'torch.FloatTensor').tensorBody([2], [1], 1);
    w.torch(3, 'torch.FloatStorage').long(5).floats([1, 2, 3, 4, 5]);
    w.string('b').torch(4, 'torch.FloatTensor').tensorBody([3], [1], 3).ref(4, 3);
    const m = asMap(readT7(w.done()));
    const a = asTensor(m.get('a'));
    const b = asTensor(m.get('b'));
    expect(a.storage).toBe(b.storage);
    expect(b.offset).toBe(2);
    expect(Array.from(a.toFloat32())).toEqual([1, 2]);
    expect(Array.from(b.toFloat32())).toEqual([3, 4, 5]);
    // Contiguous: toTypedArray() is a view of the shared storage.
    (b.toTypedArray() as Float32Array)[0] = 30;
    expect(a.storage!.data[2]).toBe(30);
  });

  it('strided tensors come back row-major as a copy', () => {
    // The transpose of a 2x3 row-major matrix: shape [3, 2], strides [1, 3].
    const w = new T7Writer().torch(1, 'torch.DoubleTensor').tensorBody([3, 2], [1, 3], 1);
    w.torch(2, 'torch.DoubleStorage').long(6).raw(Buffer.from(new Float64Array([1, 2, 3, 4, 5, 6]).buffer));
    const t = asTensor(readT7(w.done()));
    expect(t.isContiguous()).toBe(false);
    const a = t.toTypedArray();
    expect(Array.from(a as Float64Array)).toEqual([1, 4, 2, 5, 3, 6]);
    expect(a.buffer).not.toBe(t.storage!.data.buffer);
    // A zero stride (an expanded tensor) repeats the element.
    const e = new T7Writer().torch(1, 'torch.FloatTensor').tensorBody([2, 2], [0, 1], 2);
    e.torch(2, 'torch.FloatStorage').long(3).floats([9, 7, 8]);
    expect(Array.from(asTensor(readT7(e.done())).toFloat32())).toEqual([7, 8, 7, 8]);
    // An expanded view of 2^40 elements reads fine, but is not copied out.
    const huge = new T7Writer().torch(1, 'torch.FloatTensor').tensorBody([2 ** 20, 2 ** 20], [0, 0], 1);
    huge.torch(2, 'torch.FloatStorage').long(1).floats([1]);
    const h = asTensor(readT7(huge.done()));
    expect(h.numel).toBe(2 ** 40);
    expect(() => h.toFloat32()).toThrow(expect.objectContaining({ code: 'ERR_WEIGHTS', message: expect.stringMatching(/refusing to copy/) }));
  });

  it('an empty tensor (no dimensions, no storage)', () => {
    const t = asTensor(readT7(new T7Writer().torch(1, 'torch.FloatTensor').tensorBody([], [], 1).nil().done()));
    expect([t.shape, t.numel, t.storage]).toEqual([[], 0, null]);
    expect(t.toFloat32()).toEqual(new Float32Array(0));
  });

  it('4-byte longs (files saved by Windows builds): option, and auto-detection', () => {
    const w = new T7Writer(4).table(1, 2);
    floatTensor(w.string('w'), 2, 3, [0.5, 1.5, 2.5]);
    w.string('idx').torch(4, 'torch.LongTensor').tensorBody([2], [1], 1);
    w.torch(5, 'torch.LongStorage').long(2).long(-3).long(9);
    const bytes = w.done();
    for (const longSize of [4, 'auto'] as const) {
      const m = asMap(readT7(bytes, { longSize }));
      expect(Array.from(asTensor(m.get('w')).toFloat32())).toEqual([0.5, 1.5, 2.5]);
      expect(asTensor(m.get('idx')).toTypedArray()).toEqual(BigInt64Array.from([-3n, 9n]));
    }
    expectWeightsError(() => readT7(bytes));
  });

  it('legacy torch objects without a version string are version 0', () => {
    const legacy = new T7Writer().torch(1, 'nn.Module', null).table(2, 1).string('x').num(1).done();
    const o = asObject(readT7(legacy), 'nn.Module');
    expect(o.version).toBe(0);
    expect(o.get('x')).toBe(1);
    const legacyTensor = new T7Writer().torch(1, 'torch.FloatTensor', null).tensorBody([1], [1], 1);
    legacyTensor.torch(2, 'torch.FloatStorage', null).long(1).floats([4]);
    expect(asTensor(readT7(legacyTensor.done())).version).toBe(0);
    // "V " followed by something that is not a number is a class name, as in torch7.
    expect(asObject(readT7(new T7Writer().torch(1, 'V x', null).nil().done())).typename).toBe('V x');
    expect(asObject(readT7(new T7Writer().torch(1, 'nn.Foo', 'V 2').nil().done())).version).toBe(2);
  });

  it('plain functions (tag 6) carry no reference index; legacy recursive ones (tag 7) do', () => {
    const plain = new T7Writer().int(6).int(3).raw([1, 2, 3]).table(1, 0).done();
    const f = readT7(plain) as T7Function;
    expect([f.tag, f.size, Array.from(f.dumped), f.upvalues]).toEqual([6, 3, [1, 2, 3], []]);
    // A recursive function that is its own upvalue.
    const rec = new T7Writer().int(7).int(1).int(2).raw([9, 9]).table(2, 1).num(1).ref(7, 1).done();
    const g = readT7(rec) as T7Function;
    expect(g.tag).toBe(7);
    expect((g.upvalues as T7Value[])[0]).toBe(g);
  });

  it('a list-like table that contains itself stays a Map, so the reference is the same object', () => {
    const bytes = new T7Writer().table(1, 2).num(1).ref(3, 1).num(2).string('x').done();
    const m = asMap(readT7(bytes));
    expect(m.get(1)).toBe(m);
    expect(m.get(2)).toBe('x');
    // A back-reference from outside, after the table is complete, sees the array.
    const outer = new T7Writer().table(1, 2).num(1).table(2, 1).num(1).string('y').num(2).ref(3, 2).done();
    const list = readT7(outer) as T7Value[];
    expect(list[0]).toEqual(['y']);
    expect(list[1]).toBe(list[0]);
  });

  it('strings that are not UTF-8 come back as bytes; table keys of any type', () => {
    const bytes = new T7Writer().table(1, 3).bool(true).string(Uint8Array.from([0xff, 0x00])).num(1.5).nil().string('').num(-0).done();
    // nil values are not stored in Lua tables, but the file can say so: kept as null.
    const m = asMap(readT7(bytes));
    expect(m.get(true)).toEqual(Uint8Array.from([0xff, 0x00]));
    expect(m.get(1.5)).toBeNull();
    expect(m.get('')).toBe(-0);
  });

  it('rejects bad options with ERR_OPTIONS', () => {
    for (const options of [{ longSize: 2 }, { maxDepth: 0 }, { maxDepth: 1.5 }, { maxDepth: 1e6 }]) {
      expect(() => readT7(new Uint8Array(4), options as unknown as T7ReadOptions)).toThrow(
        expect.objectContaining({ code: 'ERR_OPTIONS' }),
      );
    }
    expect(() => readT7('x' as unknown as Uint8Array)).toThrow(expect.objectContaining({ code: 'ERR_INPUT' }));
  });
});

describe('readT7: hostile and truncated files', () => {
  it('every prefix of a file either parses or throws ERR_WEIGHTS', () => {
    const files = [
      'torchfile/floattensor.t7',
      'torchfile/function_upvals.t7',
      'torchfile/recursive_class.t7',
      'torchfile/tds_hash.t7',
      'torchfile/nngraph_node.t7',
      'cpp-torch-basic/net.t7',
      'torchfile/gmodule_with_linear_identity.t7',
    ];
    for (const rel of files) {
      const bytes = local(rel);
      let parsed = 0;
      for (let n = 0; n < bytes.length; n++) {
        try {
          readT7(bytes.subarray(0, n));
          parsed++;
        } catch (err) {
          expect(err, `${rel} cut at ${n}`).toBeInstanceOf(FoveaError);
          expect((err as FoveaError).code).toBe('ERR_WEIGHTS');
          expect((err as FoveaError).message).toMatch(/at byte \d+/);
        }
      }
      // Torch7 objects have no terminator, so only the complete file parses.
      expect(parsed, rel).toBe(0);
    }
  });

  it('random byte corruption never gives anything but a value or ERR_WEIGHTS', () => {
    const original = local('torchfile/gmodule_with_linear_identity.t7');
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let i = 0; i < 3000; i++) {
      const bytes = Uint8Array.from(original);
      for (let k = 0; k < 1 + rand(4); k++) bytes[rand(bytes.length)] = rand(256);
      try {
        readT7(bytes);
      } catch (err) {
        expect(err).toBeInstanceOf(FoveaError);
        expect((err as FoveaError).code).toBe('ERR_WEIGHTS');
      }
    }
  });

  it('a storage claiming 2^40 elements fails before allocating', () => {
    const bytes = new T7Writer().torch(1, 'torch.FloatStorage').long(2n ** 40n).floats([1, 2]).done();
    expectWeightsError(() => readT7(bytes), /1099511627776 elements \(4398046511104 bytes\) but only 8 bytes are left/);
    const huge = new T7Writer().torch(1, 'torch.DoubleStorage').long(2n ** 62n).done();
    expectWeightsError(() => readT7(huge), /out of range/);
    const negative = new T7Writer().torch(1, 'torch.ByteStorage').long(-1).done();
    expectWeightsError(() => readT7(negative), /negative/);
  });

  it('huge counts in tables, strings, tensors, tds and functions fail before looping or allocating', () => {
    const big = 2 ** 31 - 1;
    expectWeightsError(() => readT7(new T7Writer().table(1, big).done()), /table of 2147483647 entries/);
    expectWeightsError(() => readT7(new T7Writer().int(2).int(big).done()), /string of 2147483647 bytes/);
    expectWeightsError(() => readT7(new T7Writer().torch(1, 'torch.FloatTensor').int(big).done()), /2147483647-D/);
    expectWeightsError(() => readT7(new T7Writer().torch(1, 'tds.Vec', 'V 0').long(2n ** 50n).done()), /tds\.Vec/);
    expectWeightsError(() => readT7(new T7Writer().torch(1, 'tds.Hash', 'V 0').long(big).done()), /tds\.Hash/);
    expectWeightsError(() => readT7(new T7Writer().int(8).int(1).int(big).done()), /bytecode/);
    expectWeightsError(() => readT7(new T7Writer().table(1, -1).done()), /negative table size/);
  });

  it('tensors that do not fit their storage, or point at something else, are rejected', () => {
    const tensor = (shape: number[], strides: number[], offset1: number, storageLen: number): Uint8Array =>
      new T7Writer()
        .torch(1, 'torch.FloatTensor')
        .tensorBody(shape, strides, offset1)
        .torch(2, 'torch.FloatStorage')
        .long(storageLen)
        .floats(new Array<number>(storageLen).fill(0))
        .done();
    expect(asTensor(readT7(tensor([2, 3], [3, 1], 1, 6))).numel).toBe(6);
    expectWeightsError(() => readT7(tensor([2, 3], [3, 1], 2, 6)), /does not fit its 6-element storage/);
    expectWeightsError(() => readT7(tensor([2, 3], [4, 1], 1, 6)), /does not fit/);
    expectWeightsError(() => readT7(tensor([2], [1], 0, 6)), /offset -1/);
    expectWeightsError(() => readT7(tensor([2, -3], [3, 1], 1, 6)), /negative tensor size/);
    expectWeightsError(() => readT7(tensor([2 ** 30, 2 ** 30, 2 ** 30], [1, 1, 1], 1, 6)), /too large/);
    const noStorage = new T7Writer().torch(1, 'torch.FloatTensor').tensorBody([2], [1], 1).nil().done();
    expectWeightsError(() => readT7(noStorage), /has no storage/);
    const wrongType = new T7Writer().torch(1, 'torch.FloatTensor').tensorBody([1], [1], 1);
    wrongType.torch(2, 'torch.DoubleStorage').long(1).raw(new Uint8Array(8));
    expectWeightsError(() => readT7(wrongType.done()), /has a torch\.DoubleStorage/);
    const notStorage = new T7Writer().torch(1, 'torch.FloatTensor').tensorBody([1], [1], 1).num(3).done();
    expectWeightsError(() => readT7(notStorage), /no storage object/);
  });

  it('self-referencing tables and objects come back as cycles, not infinite loops', () => {
    // {self = <this table>, [<this table>] = <this table>} nested in an object that holds itself.
    const w = new T7Writer().torch(1, 'X').table(2, 2);
    w.string('self').ref(3, 2).ref(3, 2).ref(4, 1);
    const o = asObject(readT7(w.done()), 'X');
    const t = asMap(o.fields);
    expect(t.get('self')).toBe(t);
    expect(t.get(t)).toBe(o);
  });

  it('deep nesting is limited (ERR_WEIGHTS, never a stack overflow)', () => {
    const nested = (depth: number): Uint8Array => {
      const w = new T7Writer();
      for (let i = 1; i <= depth; i++) w.table(i, 1).num(1);
      return w.nil().done();
    };
    let v = readT7(nested(1000));
    for (let i = 0; i < 999; i++) v = (v as T7Value[])[0]!;
    expect(v).toEqual([null]);
    expectWeightsError(() => readT7(nested(1001)), /nested deeper than 1000/);
    expectWeightsError(() => readT7(nested(50), { maxDepth: 10 }), /nested deeper than 10 \(at byte 240\)/);
    readT7(nested(50), { maxDepth: 50 });
    // A limit above what the stack holds still ends in ERR_WEIGHTS.
    expectWeightsError(() => readT7(nested(10_000), { maxDepth: 10_000 }));
  });

  it('unknown type tags and nil keys are reported with their byte offset', () => {
    expectWeightsError(() => readT7(new T7Writer().table(1, 1).string('k').int(42).done()), /unknown type tag 42 \(at byte 21\)/);
    expectWeightsError(() => readT7(new T7Writer().table(1, 1).nil().num(1).done()), /nil or NaN \(at byte 12\)/);
    expectWeightsError(() => readT7(new Uint8Array(0)), /type tag needs 4 bytes, only 0 left \(at byte 0\)/);
  });
});

describe('readT7Prefix: what a file that ends early still holds', () => {
  const asList = (v: T7Value | undefined): T7Value[] => {
    expect(Array.isArray(v)).toBe(true);
    return v as T7Value[];
  };

  itShared('truncated DeepMask checkpoint: the config, then the score branch as far as byte 748165', 'deepmask-truncated/model.t7', (file) => {
    const bytes = fs.readFileSync(file);
    const r = readT7Prefix(bytes);
    expect(r.complete).toBe(false);
    expect(r.endOffset).toBe(748165);
    expect(r.endOffset).toBe(bytes.length);
    // The same failure the strict reader reports (EXPECTED.md: the storage count sits at [1300, 1308)).
    expect(r.error).toBeInstanceOf(FoveaError);
    expect(r.error!.code).toBe('ERR_WEIGHTS');
    expect(r.error!.message).toBe(expectWeightsError(() => readT7(bytes)).message);
    expect(r.stoppedAt).toBe(1300);
    expect(readT7Prefix(bytes, { longSize: 'auto' }).error!.message).toBe(r.error!.message);

    const top = asMap(r.value);
    expect([...top.keys()]).toEqual(['config', 'model']);
    expect(r.incomplete.has(top)).toBe(true);
    const config = asMap(top.get('config'));
    expect(r.incomplete.has(config)).toBe(false);
    expect(Object.fromEntries(config as Map<string, T7Value>)).toEqual({
      km: 32, batch: 32, nthreads: 2, oSz: 56, rundir: 'pretrained/deepmask/', dm: false, iSz: 160,
      reload: '', gpu: 1, datadir: 'data/', gSz: 112, scale: 0.25, wd: 0.0005, maxload: 4000,
      momentum: 0.9, lr: 0, np: 500, ks: 32, maxepoch: 300, seed: 1, testmaxload: 100, shift: 16,
      hfreq: 0.5,
    });

    // EXPECTED.md's object order: nn.DeepMask → nn.Sequential → CudaTensor → nn.Dropout → CudaTensor ×2
    // → nn.Linear → CudaTensor [1024] → CudaStorage (cut).
    const model = asObject(top.get('model'), 'nn.DeepMask');
    expect(r.incomplete.has(model)).toBe(true);
    expect([...asMap(model.fields).keys()]).toEqual(['scoreBranch']);
    const branch = asObject(model.get('scoreBranch'), 'nn.Sequential');
    expect(asTensor(branch.get('gradInput')).numel).toBe(0);
    const modules = asList(branch.get('modules'));
    expect(r.incomplete.has(modules)).toBe(true); // 2 of its 5 entries were reached
    expect(modules.map((m) => asObject(m).typename)).toEqual(['nn.Dropout', 'nn.Linear']);
    const dropout = asObject(modules[0]);
    expect(r.incomplete.has(dropout)).toBe(false);
    expect(dropout.get('p')).toBe(0.5);
    expect(dropout.get('gradInput')).toBe(branch.get('gradInput')); // a back-reference
    const linear = asObject(modules[1]);
    expect(r.incomplete.has(linear)).toBe(true);
    // The Linear's first field is gradBias: weight and bias come after the cut and are absent, not guessed.
    expect([...asMap(linear.fields).keys()]).toEqual(['gradBias']);
    const gradBias = asTensor(linear.get('gradBias'));
    expect(r.incomplete.has(gradBias)).toBe(true);
    expect([gradBias.type, gradBias.shape, gradBias.strides, gradBias.offset]).toEqual(['torch.CudaTensor', [1024], [1], 524288]);
    const storage = gradBias.storage!;
    expect(storage).toBeInstanceOf(T7Storage);
    expect([storage.type, storage.truncated, storage.declaredLength, storage.length]).toEqual(['torch.CudaStorage', true, 526337, 0]);
    expect(storage.data.byteLength).toBe(0); // nothing allocated from the declared 2,105,348 bytes
    expect(() => gradBias.toFloat32()).toThrow(/has no data: the file ends inside its torch\.CudaStorage \(declared 526337 elements/);

    // Strict reading is unchanged.
    expectWeightsError(() => readT7(bytes), /526337 elements \(2105348 bytes\) but only 746857 bytes are left \(at byte 1300\)/);
  });

  /** {config = {lr = 0.5, name = "x"}, model = nn.Linear{weight = [2, 3], bias = [2], train = true}, after = 7} */
  function smallCheckpoint(): { bytes: Uint8Array; weight: number[]; bias: number[] } {
    const weight = [1.5, 2.5, 3.5, 4.5, 5.5, 6.5];
    const bias = [7.25, 8.25];
    const w = new T7Writer().table(1, 3);
    w.string('config').table(2, 2).string('lr').num(0.5).string('name').string('x');
    w.string('model').torch(3, 'nn.Linear').table(4, 3);
    w.string('weight').torch(5, 'torch.FloatTensor').tensorBody([2, 3], [3, 1], 1).torch(6, 'torch.FloatStorage').long(6).floats(weight);
    w.string('bias').torch(7, 'torch.FloatTensor').tensorBody([2], [1], 1).torch(8, 'torch.FloatStorage').long(2).floats(bias);
    w.string('train').bool(true);
    w.string('after').num(7);
    return { bytes: w.done(), weight, bias };
  }

  /** Every reachable storage either has no data (cut) or holds bytes that lie wholly before `cut` in `full`. */
  function expectNoDataPastCut(value: T7Value | undefined, full: Uint8Array, cut: number, what: string): void {
    if (value === undefined) return;
    for (const o of reachable(value)) {
      if (!(o instanceof T7Storage)) continue;
      if (o.truncated) {
        expect(o.length, what).toBe(0);
        continue;
      }
      const raw = Buffer.from(o.data.buffer, o.data.byteOffset, o.data.byteLength);
      if (raw.length === 0) continue;
      const at = Buffer.from(full.buffer, full.byteOffset, full.byteLength).indexOf(raw);
      expect(at, what).toBeGreaterThanOrEqual(0);
      expect(at + raw.length, what).toBeLessThanOrEqual(cut);
    }
  }

  it('synthetic checkpoint cut at every byte: never throws, keeps what precedes the cut, never data after it', () => {
    const { bytes, weight, bias } = smallCheckpoint();
    const full = readT7Prefix(bytes);
    expect(full.complete).toBe(true);
    expect(full.error).toBeUndefined();
    expect(full.incomplete.size).toBe(0);
    expect(full.value).toEqual(readT7(bytes));
    // Byte offsets of a few landmarks, so that what each cut must keep is known.
    const find = (s: string): number => Buffer.from(bytes).indexOf(Buffer.from(s, 'latin1'));
    // The key "bias" (tag, length, bytes) follows the weight's floats; "train" follows the bias's.
    const weightDataEnd = find('bias') - 8;
    const biasDataEnd = find('train') - 8;
    for (let n = 0; n < bytes.length; n++) {
      const cut = bytes.subarray(0, n);
      const r = readT7Prefix(cut);
      const what = `cut at ${n}`;
      expect(r.complete, what).toBe(false);
      expect(r.endOffset, what).toBe(n);
      expect(r.error?.code, what).toBe('ERR_WEIGHTS');
      expect(r.error?.message, what).toMatch(/at byte \d+/);
      expect(r.stoppedAt!, what).toBeLessThanOrEqual(n);
      expect(() => readT7(cut), what).toThrow(FoveaError);
      expectNoDataPastCut(r.value, bytes, n, what);
      // Before the first entry is complete the top table is empty, and an empty table is a list.
      if (r.value === undefined || (Array.isArray(r.value) && r.value.length === 0)) continue;
      const top = asMap(r.value);
      const model = top.get('model');
      if (model === undefined) continue;
      const fields = asObject(model, 'nn.Linear').fields;
      if (!(fields instanceof Map)) continue;
      const wt = fields.get('weight');
      if (wt instanceof T7Tensor) {
        expect(wt.shape, what).toEqual([2, 3]);
        if (n >= weightDataEnd) expect(Array.from(wt.toFloat32()), what).toEqual(weight);
        else expect(() => wt.toFloat32(), what).toThrow(/has no data/);
      }
      const bt = fields.get('bias');
      if (bt instanceof T7Tensor && n >= biasDataEnd) expect(Array.from(bt.toFloat32()), what).toEqual(bias);
      if (n >= weightDataEnd) expect(fields.has('weight'), what).toBe(true);
    }
    // Cut inside the weight's elements: the header and the declared size are kept, not the data.
    const r = readT7Prefix(bytes.subarray(0, weightDataEnd - 5));
    const wt = asTensor(asMap(asObject(asMap(r.value).get('model')).fields).get('weight'));
    expect([wt.shape, wt.storage!.truncated, wt.storage!.declaredLength, wt.storage!.length]).toEqual([[2, 3], true, 6, 0]);
    expect(r.incomplete.has(wt)).toBe(true);
    expect(asMap(asMap(r.value).get('config')).get('name')).toBe('x');
  });

  it('every prefix of the upstream files gives a partial value, never a throw; the whole file is complete', () => {
    for (const rel of ['torchfile/gmodule_with_linear_identity.t7', 'cpp-torch-basic/net.t7', 'torchfile/tds_hash.t7', 'torchfile/function_upvals.t7']) {
      const bytes = local(rel);
      for (let n = 0; n < bytes.length; n++) {
        const r = readT7Prefix(bytes.subarray(0, n));
        expect(r.complete, `${rel} cut at ${n}`).toBe(false);
        expectNoDataPastCut(r.value, bytes, n, `${rel} cut at ${n}`);
      }
      const whole = readT7Prefix(bytes);
      expect(whole.complete).toBe(true);
      EXPECTATIONS[rel]!(whole.value!, bytes);
    }
  });

  it('hostile files: huge declared sizes allocate nothing, malformed files still throw ERR_WEIGHTS', () => {
    const storage = readT7Prefix(new T7Writer().torch(1, 'torch.FloatStorage').long(2n ** 40n).floats([1, 2]).done());
    expect(storage.complete).toBe(false);
    const s = storage.value as T7Storage;
    expect(s).toBeInstanceOf(T7Storage);
    expect([s.truncated, s.declaredLength, s.data.byteLength]).toEqual([true, 2 ** 40, 0]);
    expect(storage.error!.message).toMatch(/1099511627776 elements \(4398046511104 bytes\) but only 8 bytes are left/);
    const table = readT7Prefix(new T7Writer().table(1, 2 ** 31 - 1).done());
    expect([table.complete, table.value]).toEqual([false, []]); // an empty table, as readT7 gives it
    const vec = readT7Prefix(new T7Writer().torch(1, 'tds.Vec', 'V 0').long(2n ** 50n).num(1).done());
    expect([vec.complete, vec.value]).toEqual([false, [1]]);
    // A tensor whose header does not fit its storage's declared size is malformed, not just cut.
    const badTensor = new T7Writer().torch(1, 'torch.FloatTensor').tensorBody([10], [1], 1).torch(2, 'torch.FloatStorage').long(4).done();
    expectWeightsError(() => readT7Prefix(badTensor), /does not fit its 4-element storage/);
    expectWeightsError(() => readT7Prefix(new T7Writer().torch(1, 'torch.ByteStorage').long(-1).done()), /negative/);
    expectWeightsError(() => readT7Prefix(new T7Writer().table(1, 1).string('k').int(42).done()), /unknown type tag 42/);
    const nested = new T7Writer();
    for (let i = 1; i <= 50; i++) nested.table(i, 1).num(1);
    expectWeightsError(() => readT7Prefix(nested.done(), { maxDepth: 10 }), /nested deeper than 10/);
    // Cut before the nesting limit is reached: a partial chain, no error thrown.
    expect(readT7Prefix(nested.done(), { maxDepth: 60 }).complete).toBe(false);
    expect(() => readT7Prefix(new T7Writer().done(), { maxDepth: 0 })).toThrow(/maxDepth/);
    // Random corruption: a value (complete or not) or ERR_WEIGHTS, nothing else.
    const original = local('torchfile/gmodule_with_linear_identity.t7');
    let seed = 777;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let i = 0; i < 1000; i++) {
      const bytes = Uint8Array.from(original.subarray(0, 1 + rand(original.length)));
      for (let k = 0; k < 1 + rand(4); k++) bytes[rand(bytes.length)] = rand(256);
      try {
        const r = readT7Prefix(bytes);
        expectNoDataPastCut(r.value, bytes, bytes.length, `corruption ${i}`);
      } catch (err) {
        expect(err).toBeInstanceOf(FoveaError);
        expect((err as FoveaError).code).toBe('ERR_WEIGHTS');
      }
    }
  });
});
