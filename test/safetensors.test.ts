import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  bfloat16ToFloat32,
  CONFIG_METADATA_KEY,
  float16ToFloat32,
  float32ToBfloat16,
  float32ToFloat16,
  parseSafetensorsHeader,
  readSafetensors,
  readSafetensorsHeaderFromFile,
  toBfloat16Bits,
  toFloat16Bits,
  writeSafetensors,
  type SafetensorsWriteTensor,
} from '../lib/safetensors';

import { expectFoveaError } from './expect-error';

const FIXTURES = path.join(__dirname, 'fixtures', 'safetensors');

function expectWeightsError(fn: () => unknown, message?: RegExp): void {
  const e = expectFoveaError(fn, 'ERR_WEIGHTS', message);
  expect(e.message).toMatch(/^safetensors: /);
}

/** 8-byte length + header text + data, with no padding or checks: for hostile files. */
function rawFile(header: string, data: Uint8Array | number = 0): Uint8Array {
  const h = Buffer.from(header, 'utf8');
  const d = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + h.length + d.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(d, 8 + h.length);
  return out;
}

const f32 = (values: number[]): Float32Array => Float32Array.from(values);

// The committed test/fixtures/safetensors/tiny.safetensors is exactly this, as
// written by writeSafetensors (native/test/test_safetensors.cc reads it too).
const TINY_CONFIG = {
  architecture: 'deepmask',
  trunk: 'resnet-50',
  iSz: 160,
  classes: ['person', 'dog'],
  note: 'tiny test file, ünïcödé "quoted"',
};
function tinyFile(): Uint8Array {
  return writeSafetensors(
    {
      'conv.weight': { shape: [2, 1, 2, 2], data: f32([0.5, -1.25, 3, 1 / 3, -0, 1e-8, 65504, -2.5]) },
      half: { shape: [4], data: f32([1, 1 / 3, -65520, 2 ** -24]), dtype: 'F16' },
      brain: { shape: [2, 2], data: f32([1, 1 / 3, 1 + 2 ** -8, 1 + 3 * 2 ** -8]), dtype: 'BF16' },
      scalar: { shape: [], data: f32([42]) },
      empty: { shape: [0, 3], data: f32([]) },
    },
    { metadata: { [CONFIG_METADATA_KEY]: JSON.stringify(TINY_CONFIG), format: 'pt' } },
  );
}

describe('float16 / bfloat16 conversion', () => {
  it('rounds to nearest, ties to even, with the edge cases', () => {
    const f16: Array<[number, number]> = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [1 / 3, 0x3555],
      [1 + 2 ** -11, 0x3c00], // tie: down to the even mantissa
      [1 + 3 * 2 ** -11, 0x3c02], // tie: up to the even mantissa
      [65504, 0x7bff],
      [65519, 0x7bff],
      [65520, 0x7c00], // tie between the largest half and 2^16: even is infinity
      [-1e6, 0xfc00],
      [2 ** -24, 0x0001],
      [2 ** -25, 0x0000], // tie: even is zero
      [1.5 * 2 ** -24, 0x0002],
      [2 ** -25 + 2 ** -40, 0x0001],
      [2 ** -14 - 2 ** -25, 0x0400], // rounds up out of the subnormals into the smallest normal
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
    ];
    for (const [v, bits] of f16) expect(toFloat16Bits(v), `f16(${v})`).toBe(bits);
    expect(toFloat16Bits(NaN) & 0x7c00).toBe(0x7c00);
    expect(toFloat16Bits(NaN) & 0x3ff).not.toBe(0);

    const bf16: Array<[number, number]> = [
      [1, 0x3f80],
      [1 / 3, 0x3eab],
      [1 + 2 ** -8, 0x3f80],
      [1 + 3 * 2 ** -8, 0x3f82],
      [3.3895313892515355e38, 0x7f7f],
      [3.4028234663852886e38, 0x7f80], // past the largest bfloat16 by more than half an ulp
      [-1.1754943508222875e-38, 0x8080],
      [1e-40, 0x0001],
      [-Infinity, 0xff80],
    ];
    for (const [v, bits] of bf16) expect(toBfloat16Bits(v), `bf16(${v})`).toBe(bits);
    expect(toBfloat16Bits(NaN) & 0x7fc0).toBe(0x7fc0);
  });

  it('every float16 and bfloat16 value survives the round trip through float32', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    for (const [decode, encode] of [
      [float16ToFloat32, float32ToFloat16],
      [bfloat16ToFloat32, float32ToBfloat16],
    ] as const) {
      const back = encode(decode(all));
      for (let i = 0; i < 65536; i++) {
        const isNaN = decode === float16ToFloat32 ? (i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0 : (i & 0x7f80) === 0x7f80 && (i & 0x7f) !== 0;
        if (isNaN) expect(Number.isNaN(decode(Uint16Array.of(back[i]!))[0])).toBe(true);
        else if (back[i] !== i) expect.fail(`bits 0x${i.toString(16)} came back as 0x${back[i]!.toString(16)}`);
      }
    }
    expect(Array.from(float16ToFloat32(Uint16Array.of(0x0001, 0x03ff, 0x0400, 0x7bff, 0xc000)))).toEqual([
      2 ** -24, 1023 * 2 ** -24, 2 ** -14, 65504, -2,
    ]);
  });

  it('float32 → float16 matches an exact nearest-value search on random inputs', () => {
    // All finite non-negative halves in order; the nearest one (ties to even bits) is the answer.
    const halves = float16ToFloat32(new Uint16Array(0x7c00).map((_, i) => i));
    const reference = (x: number): number => {
      const a = Math.abs(x);
      const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
      if (a >= 65520) return sign | 0x7c00;
      let lo = 0;
      let hi = 0x7bff;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (halves[mid]! <= a) lo = mid;
        else hi = mid - 1;
      }
      if (lo === 0x7bff || halves[lo] === a) return sign | lo;
      const dlo = a - halves[lo]!;
      const dhi = halves[lo + 1]! - a;
      return sign | (dlo < dhi || (dlo === dhi && lo % 2 === 0) ? lo : lo + 1);
    };
    const bits = new Uint32Array(1);
    const asF32 = new Float32Array(bits.buffer);
    let seed = 7;
    const mismatches: string[] = [];
    for (let i = 0; i < 200_000; i++) {
      seed = (seed * 1664525 + 1013904223) >>> 0;
      // Exponents around the float16 range (2^-30 .. 2^17), random sign and mantissa.
      const exp = 97 + (seed % 48);
      bits[0] = ((seed & 0x80000000) | (exp << 23) | (Math.imul(seed, 2654435761) & 0x7fffff)) >>> 0;
      const v = asF32[0]!;
      if (toFloat16Bits(v) !== reference(v)) mismatches.push(`f16(${v})`);
    }
    expect(mismatches).toEqual([]);
  });
});

describe('writeSafetensors + readSafetensors', () => {
  it('round-trips F32, F16 and BF16 tensors and string metadata', () => {
    const bytes = tinyFile();
    // Header padded to a multiple of 8, so every tensor is aligned to its element size.
    const headerLen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(headerLen % 8).toBe(0);
    const file = readSafetensors(bytes);
    expect(JSON.parse(file.metadata[CONFIG_METADATA_KEY]!)).toEqual(TINY_CONFIG);
    expect(file.metadata['format']).toBe('pt');
    // Largest element size first, then by name.
    expect([...file.tensors.keys()]).toEqual(['conv.weight', 'empty', 'scalar', 'brain', 'half']);
    const w = file.tensors.get('conv.weight')!;
    expect([w.dtype, w.shape]).toEqual(['F32', [2, 1, 2, 2]]);
    const wv = w.toFloat32();
    expect(Array.from(wv)).toEqual(Array.from(f32([0.5, -1.25, 3, 1 / 3, -0, 1e-8, 65504, -2.5])));
    expect(wv.buffer).toBe(bytes.buffer); // a view, not a copy
    expect(Array.from(file.tensors.get('half')!.toFloat32())).toEqual([1, 0.333251953125, -Infinity, 2 ** -24]);
    expect(Array.from(file.tensors.get('half')!.toTypedArray() as Uint16Array)).toEqual([0x3c00, 0x3555, 0xfc00, 0x0001]);
    expect(Array.from(file.tensors.get('brain')!.toFloat32())).toEqual([1, 0.333984375, 1, 1.015625]);
    expect(file.tensors.get('scalar')!.shape).toEqual([]);
    expect(Array.from(file.tensors.get('scalar')!.toFloat32())).toEqual([42]);
    expect(file.tensors.get('empty')!.toFloat32()).toEqual(new Float32Array(0));
    for (const t of file.tensors.values()) {
      expect((parseSafetensorsHeader(bytes).dataOffset + t.begin) % (t.dtype === 'F32' ? 4 : 2)).toBe(0);
    }
  });

  it('the committed tiny.safetensors is exactly what the writer produces', () => {
    const fixture = path.join(FIXTURES, 'tiny.safetensors');
    // Regenerate with FOVEA_WRITE_FIXTURES=1 npx vitest run test/safetensors.test.ts
    if (process.env['FOVEA_WRITE_FIXTURES'] === '1') fs.writeFileSync(fixture, tinyFile());
    const committed = fs.readFileSync(fixture);
    expect(Buffer.from(tinyFile()).equals(committed)).toBe(true);
  });

  it('copies misaligned data instead of making an unaligned view', () => {
    // Header of 54 bytes: the F32 data starts at file offset 62.
    const header = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
    expect(header.length).toBe(54);
    const bytes = rawFile(header, new Uint8Array(new Float32Array([1.5, -2]).buffer));
    const a = readSafetensors(bytes).tensors.get('a')!;
    expect(Array.from(a.toFloat32())).toEqual([1.5, -2]);
    expect(a.toFloat32().buffer).not.toBe(bytes.buffer);
  });

  it('reads only the header of a file, and reports a bad file as ERR_WEIGHTS', () => {
    const file = path.join(FIXTURES, 'tiny.safetensors');
    const header = readSafetensorsHeaderFromFile(file);
    expect(header).toEqual(parseSafetensorsHeader(fs.readFileSync(file)));
    expect(header.tensors.map((t) => t.name)).toEqual(['conv.weight', 'empty', 'scalar', 'brain', 'half']);
    expectWeightsError(() => readSafetensorsHeaderFromFile(path.join(FIXTURES, 'absent.safetensors')), /cannot open/);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fovea-st-'));
    try {
      const cut = path.join(dir, 'cut.safetensors');
      fs.writeFileSync(cut, fs.readFileSync(file).subarray(0, 100));
      expectWeightsError(() => readSafetensorsHeaderFromFile(cut), /runs past the end/);
      fs.writeFileSync(cut, new Uint8Array(3));
      expectWeightsError(() => readSafetensorsHeaderFromFile(cut), /too short/);
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  });

  it('rejects what it cannot write faithfully', () => {
    const t = { shape: [1], data: f32([1]) };
    expectWeightsError(() => writeSafetensors({ a: t }, { metadata: { k: 1 as unknown as string } }), /must be a string/);
    expectWeightsError(() => writeSafetensors({ a: t }, { metadata: { k: 'bad \ud800' } }), /lone UTF-16 surrogate/);
    expectWeightsError(() => writeSafetensors({ __metadata__: t }), /cannot be a tensor name/);
    expectWeightsError(() => writeSafetensors([['a', t], ['a', t]] as Array<[string, SafetensorsWriteTensor]>), /duplicate/);
    expectWeightsError(() => writeSafetensors({ a: { shape: [2], data: f32([1]) } }), /has 2 elements, data has 1/);
    expectWeightsError(() => writeSafetensors({ a: { shape: [1, 1, 1, 1, 1, 1, 1, 1, 1], data: f32([1]) } }), /rank 9/);
    expectWeightsError(() => writeSafetensors({ a: { shape: [-1], data: f32([]) } }), /invalid shape/);
    expectWeightsError(() => writeSafetensors({ a: { ...t, dtype: 'F64' as 'F32' } }), /cannot write dtype F64/);
    expectWeightsError(() => writeSafetensors({ a: { shape: [1], data: [1] as unknown as Float32Array } }), /Float32Array/);
    // A name like "__proto__" is just a name.
    expect([...readSafetensors(writeSafetensors({ ['__proto__']: t })).tensors.keys()]).toEqual(['__proto__']);
  });
});

describe('files written by the reference implementation (Python safetensors)', () => {
  it('reads python.safetensors, and its float16/bfloat16 rounding agrees with ours', () => {
    const file = readSafetensors(fs.readFileSync(path.join(FIXTURES, 'python.safetensors')));
    expect(JSON.parse(file.metadata[CONFIG_METADATA_KEY]!)).toEqual({
      architecture: 'deepmask',
      note: 'written by make_python_fixture.py',
    });
    const t = (name: string) => file.tensors.get(name)!;
    expect(Array.from(t('f32').toFloat32())).toEqual(Array.from({ length: 12 }, (_, i) => Math.fround(i / 7)));
    expect(t('f32').shape).toEqual([3, 4]);
    const f16src = t('f16_src').toFloat32();
    expect(t('f16').dtype).toBe('F16');
    expect(Array.from(t('f16').toTypedArray() as Uint16Array)).toEqual(Array.from(float32ToFloat16(f16src)));
    expect(t('bf16').dtype).toBe('BF16');
    expect(Array.from(t('bf16').toTypedArray() as Uint16Array)).toEqual(Array.from(float32ToBfloat16(t('bf16_src').toFloat32())));
    expect(Array.from(t('f64').toFloat32())).toEqual([Math.fround(0.1), Math.fround(-1e-3)]);
    expect(t('i64').toTypedArray()).toEqual(BigInt64Array.from([-(2n ** 40n), 0n, 7n]));
    expect(Array.from(t('u8').toTypedArray() as Uint8Array)).toEqual([0, 255, 17]);
    expectWeightsError(() => t('u8').toFloat32(), /not a float dtype/);
    expect([t('scalar').shape, Array.from(t('scalar').toFloat32())]).toEqual([[], [2.5]]);
    expect([t('empty').shape, t('empty').bytes.length]).toEqual([[0, 4], 0]);
  });

  const python = (() => {
    try {
      execFileSync('python3', ['-c', 'import safetensors, numpy'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();
  if (!python) console.warn('Skipping the live Python cross-check: python3 with safetensors and numpy is not installed');
  it.runIf(python)('Python safetensors reads a file written here, and numpy agrees with our float16', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fovea-st-'));
    try {
      const file = path.join(dir, 'ts.safetensors');
      const src = f32([0.1, 1 / 3, 65519, 65520, 2 ** -25, 1.5 * 2 ** -24, -7.25, 1e-7]);
      fs.writeFileSync(
        file,
        writeSafetensors(
          {
            src: { shape: [2, 4], data: src },
            f16: { shape: [2, 4], data: src, dtype: 'F16' },
            bf16: { shape: [8], data: src, dtype: 'BF16' },
            scalar: { shape: [], data: f32([3]) },
          },
          { metadata: { [CONFIG_METADATA_KEY]: JSON.stringify({ a: [1, 2] }) } },
        ),
      );
      const script = [
        'import json, sys, numpy as np',
        'from safetensors import deserialize, safe_open',
        'raw = dict(deserialize(open(sys.argv[1], "rb").read()))',
        'with safe_open(sys.argv[1], "np") as f:',
        '    meta = f.metadata()',
        '    src = f.get_tensor("src")',
        '    f16 = f.get_tensor("f16")',
        'with np.errstate(over="ignore"):',
        '    same = bool((src.astype(np.float16).view(np.uint16) == f16.view(np.uint16)).all())',
        'print(json.dumps({"meta": meta, "f16_matches_numpy": same,',
        '  "tensors": {k: [v["dtype"], v["shape"], bytes(v["data"]).hex()] for k, v in raw.items()}}))',
      ].join('\n');
      const out = JSON.parse(execFileSync('python3', ['-c', script, file], { encoding: 'utf8' }));
      expect(out.meta).toEqual({ [CONFIG_METADATA_KEY]: '{"a":[1,2]}' });
      expect(out.f16_matches_numpy).toBe(true);
      const hex = (a: ArrayBufferView): string => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('hex');
      expect(out.tensors).toEqual({
        src: ['F32', [2, 4], hex(src)],
        f16: ['F16', [2, 4], hex(float32ToFloat16(src))],
        bf16: ['BF16', [8], hex(float32ToBfloat16(src))],
        scalar: ['F32', [], hex(f32([3]))],
      });
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  });
});

describe('hostile headers', () => {
  const entry = (o: Record<string, unknown>): string => JSON.stringify({ a: { dtype: 'U8', shape: [2], data_offsets: [0, 2], ...o } });

  it('lengths that lie', () => {
    expectWeightsError(() => readSafetensors(new Uint8Array(7)), /too short/);
    const big = new Uint8Array(16);
    new DataView(big.buffer).setBigUint64(0, 2n ** 64n - 1n, true);
    expectWeightsError(() => readSafetensors(big), /over the 100000000-byte limit/);
    new DataView(big.buffer).setBigUint64(0, 100_000_001n, true);
    expectWeightsError(() => readSafetensors(big), /over the 100000000-byte limit/);
    new DataView(big.buffer).setBigUint64(0, 9n, true);
    expectWeightsError(() => readSafetensors(big), /runs past the end of the 16-byte file/);
  });

  it('offsets past the end, overlapping, gaps and trailing bytes', () => {
    expectWeightsError(() => readSafetensors(rawFile(entry({ data_offsets: [0, 3] }), 2)), /outside the 2-byte data buffer/);
    expectWeightsError(() => readSafetensors(rawFile(entry({ data_offsets: [2, 0] }), 2)), /outside/);
    expectWeightsError(() => readSafetensors(rawFile(entry({ data_offsets: [0, 1] }), 2)), /needs 2 bytes, data_offsets give 1/);
    expectWeightsError(() => readSafetensors(rawFile(entry({ data_offsets: [0, 2, 4] }), 2)), /\[begin, end\]/);
    const two = (b: [number, number]): string =>
      `{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[${b[0]},${b[1]}]}}`;
    expectWeightsError(() => readSafetensors(rawFile(two([1, 3]), 3)), /"b" \[1, 3\] overlaps/);
    expectWeightsError(() => readSafetensors(rawFile(two([3, 5]), 5)), /bytes \[2, 3\) of the data buffer belong to no tensor/);
    expectWeightsError(() => readSafetensors(rawFile(entry({}), 3)), /bytes \[2, 3\)/);
    expect(readSafetensors(rawFile(two([2, 4]), 4)).tensors.size).toBe(2);
  });

  it('bad shapes and dtypes', () => {
    const bad: Array<[string, RegExp]> = [
      ['{"a":{"dtype":"U8","shape":[NaN],"data_offsets":[0,0]}}', /unexpected "N"/],
      ['{"a":{"dtype":"U8","shape":[2.0],"data_offsets":[0,2]}}', /only integers/],
      ['{"a":{"dtype":"U8","shape":[2e0],"data_offsets":[0,2]}}', /only integers/],
      ['{"a":{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}}', /invalid dimension/],
      ['{"a":{"dtype":"U8","shape":[02],"data_offsets":[0,2]}}', /leading zero/],
      ['{"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,2],"data_offsets":[0,2]}}', /rank 9 is over 8/],
      ['{"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,2]}}', /overflows/],
      ['{"a":{"dtype":"U8","shape":[99999999999999999999],"data_offsets":[0,2]}}', /integer too large/],
      ['{"a":{"dtype":"F31","shape":[2],"data_offsets":[0,2]}}', /unknown dtype "F31"/],
      ['{"a":{"dtype":8,"shape":[2],"data_offsets":[0,2]}}', /non-string "dtype"/],
      ['{"a":{"shape":[2],"data_offsets":[0,2]}}', /missing or non-string "dtype"/],
      ['{"a":{"dtype":"U8","data_offsets":[0,2]}}', /"shape"/],
      ['{"a":{"dtype":"U8","shape":[2]}}', /"data_offsets"/],
      ['{"a":[1]}', /entry is not an object/],
      ['{"a":{"dtype":"U8","dtype":"U8","shape":[2],"data_offsets":[0,2]}}', /duplicate key "dtype"/],
      ['{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', /duplicate key "a"/],
      ['{"__metadata__":{"k":1},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', /value of "k" is not a string/],
      ['{"__metadata__":[],"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', /__metadata__ is not an object/],
      ['[]', /not a JSON object/],
      ['{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":true}}', /unexpected "t"/],
      ['{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},}', /expected a string key/],
      ['{"a":{"dtype":"U8","shape":[2,],"data_offsets":[0,2]}}', /unexpected "]"/],
      ['{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}} x', /unexpected data after/],
      ['{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}', /expected ',' or '}'/],
      ['{"a":{"dtype":"U8\u0001","shape":[2],"data_offsets":[0,2]}}', /control character/],
      ['{"a":{"dtype":"U8', /unterminated string/],
      ['{"a\\q":{}}', /invalid escape/],
      ['{"a\\ud800":{}}', /lone high surrogate/],
      ['{"a\\udc00":{}}', /lone low surrogate/],
      ['{"a\\u12":{}}', /invalid \\u escape/],
    ];
    for (const [header, message] of bad) expectWeightsError(() => readSafetensors(rawFile(header, 2)), message);
    // Unknown keys are ignored, as the reference implementation does (with values in the strict subset).
    expect(readSafetensors(rawFile(entry({ extra: [1, { b: 'c' }] }), 2)).tensors.get('a')!.shape).toEqual([2]);
    // Escapes decode; "\u00e9" and a surrogate pair are fine.
    expect([...readSafetensors(rawFile('{"\\u00e9\\ud83d\\ude00\\n":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}', 1)).tensors.keys()]).toEqual([
      'é😀\n',
    ]);
  });

  it('invalid UTF-8 and deep nesting', () => {
    const h = Buffer.from('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}');
    const bad = rawFile(h.toString('latin1'), 2);
    bad[8 + 2] = 0xff; // inside the name
    expectWeightsError(() => readSafetensors(bad), /not valid UTF-8/);
    const deep = `{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"x":${'['.repeat(100)}${']'.repeat(100)}}}`;
    expectWeightsError(() => readSafetensors(rawFile(deep, 2)), /nesting deeper than 32/);
    const veryDeep = '['.repeat(1_000_000);
    expectWeightsError(() => readSafetensors(rawFile(veryDeep, 0)), /nesting deeper than 32/);
  });

  it('every truncation of a small file is ERR_WEIGHTS', () => {
    const bytes = tinyFile();
    for (let n = 0; n < bytes.length; n++) {
      expectWeightsError(() => readSafetensors(bytes.subarray(0, n)));
    }
    // And so is the header of every prefix read against the full file size (a file cut in transit).
    const headerEnd = parseSafetensorsHeader(bytes).dataOffset;
    for (let n = 0; n < headerEnd; n++) {
      expectWeightsError(() => parseSafetensorsHeader(bytes.subarray(0, n), bytes.length));
    }
  });
});
