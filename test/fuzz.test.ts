// Random-input fuzzing of the TypeScript parsers that read untrusted data:
// the Torch7 reader, the safetensors header reader, RLE decoding and the
// options objects. Seeded from real files; every input must either parse or
// throw a FoveaError (never another exception, never a hang). The native
// parsers have coverage-guided libFuzzer targets (native/fuzz/).
// FOVEA_FUZZ_ITERATIONS raises the budget for a longer run by hand.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FoveaError } from '../lib/errors';
import { resolveSegmenterOptions, resolveSegmentOptions } from '../lib/options';
import { decodeMask, maskArea, maskToBox, type Rle } from '../lib/rle';
import { parseSafetensorsHeader } from '../lib/safetensors';
import { readT7 } from '../lib/t7';

const ITERATIONS = Number(process.env['FOVEA_FUZZ_ITERATIONS'] ?? 3000);

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

// Byte-level mutations in the style of libFuzzer's: flips, interesting values, cuts, splices.
function mutate(seed: Uint8Array, random: () => number): Uint8Array {
  let out = Uint8Array.from(seed);
  const rounds = 1 + Math.floor(random() * 4);
  for (let r = 0; r < rounds; r++) {
    const at = Math.floor(random() * Math.max(1, out.length));
    switch (Math.floor(random() * 6)) {
      case 0:
        if (out.length) out[at] = out[at]! ^ (1 << Math.floor(random() * 8));
        break;
      case 1:
        if (out.length) out[at] = [0, 1, 0x7f, 0x80, 0xff][Math.floor(random() * 5)]!;
        break;
      case 2: {
        // An int32/int64 field set to an extreme value.
        const v = [0xffffffff, 0x7fffffff, 0x80000000, 0][Math.floor(random() * 4)]!;
        for (let k = 0; k < 4 && at + k < out.length; k++) out[at + k] = (v >>> (8 * k)) & 0xff;
        break;
      }
      case 3:
        out = out.subarray(0, at);
        break;
      case 4: {
        const len = Math.floor(random() * 16);
        out = Uint8Array.from([...out.subarray(0, at), ...out.subarray(at, at + len), ...out.subarray(at)]);
        break;
      }
      default:
        out = Uint8Array.from([...out.subarray(0, at), ...out.subarray(Math.min(out.length, at + 1 + Math.floor(random() * 8)))]);
    }
  }
  return out;
}

function expectParsesOrFoveaError(fn: () => unknown, input: () => string): void {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof FoveaError)) throw new Error(`not a FoveaError on input ${input()}: ${String(err)}`);
  }
}

const hex = (b: Uint8Array) => Buffer.from(b.subarray(0, 64)).toString('hex');

describe(`fuzz (${ITERATIONS} inputs per parser)`, () => {
  it('readT7 on mutated real Torch7 files', () => {
    const dir = path.join(__dirname, 'fixtures', 't7');
    const seeds = fs
      .readdirSync(dir)
      .flatMap((d) => (fs.statSync(path.join(dir, d)).isDirectory() ? fs.readdirSync(path.join(dir, d)).map((f) => path.join(dir, d, f)) : []))
      .filter((f) => f.endsWith('.t7'))
      .map((f) => new Uint8Array(fs.readFileSync(f)));
    expect(seeds.length).toBeGreaterThan(10);
    const random = rng(1);
    for (let i = 0; i < ITERATIONS; i++) {
      const input = mutate(seeds[i % seeds.length]!, random);
      expectParsesOrFoveaError(() => readT7(input), () => hex(input));
    }
  });

  it('parseSafetensorsHeader on mutated real weight files', () => {
    const files = ['safetensors/tiny.safetensors', 'safetensors/python.safetensors', 'golden/multipathnet-resnet18-d16.safetensors'];
    const seeds = files.map((f) => new Uint8Array(fs.readFileSync(path.join(__dirname, 'fixtures', f))).subarray(0, 64 * 1024));
    const random = rng(2);
    for (let i = 0; i < ITERATIONS; i++) {
      const input = mutate(seeds[i % seeds.length]!, random);
      expectParsesOrFoveaError(() => parseSafetensorsHeader(input, input.length + Math.floor(random() * 4096)), () => hex(input));
    }
  });

  it('decodeMask on mutated and random RLE strings and sizes', () => {
    const golden = JSON.parse(fs.readFileSync(path.join(__dirname, 'fixtures', 'rle-golden.json'), 'utf8')) as {
      cases: Array<{ height: number; width: number; counts: string }>;
    };
    const random = rng(3);
    for (let i = 0; i < ITERATIONS; i++) {
      const c = golden.cases[i % golden.cases.length]!;
      const chars = [...c.counts];
      for (let k = 0; k < 1 + Math.floor(random() * 3); k++) {
        const at = Math.floor(random() * (chars.length + 1));
        const ch = String.fromCharCode(40 + Math.floor(random() * 100));
        if (random() < 0.5) chars.splice(at, 1);
        else chars.splice(at, 0, ch);
      }
      const size: unknown = random() < 0.9 ? [c.height, c.width] : [c.height * 2 ** 30, -1];
      const rle = { size, counts: chars.join('') } as unknown as Rle;
      expectParsesOrFoveaError(
        () => {
          const m = decodeMask(rle);
          // A decoded mask is consistent with the other readers of the same RLE.
          let area = 0;
          for (const v of m.data) area += v;
          if (area !== maskArea(rle)) throw new Error('area disagrees');
          maskToBox(rle);
        },
        () => JSON.stringify(rle),
      );
    }
  });

  it('options objects: random keys, types and values are ERR_OPTIONS or accepted', () => {
    const random = rng(4);
    const keys = ['mode', 'maxProposals', 'maxDetections', 'scoreThreshold', 'nmsThreshold', 'maskThreshold', 'scales', 'maxSide', 'signal', 'onProgress', 'model', 'classifier', 'device', 'limitInputPixels', 'bogus', '__proto__', 'constructor'];
    const values = [undefined, null, 0, -1, 0.5, 1, 2, 1e308, Number.NaN, Infinity, '', 'cpu', 'cuda:1', 'instances', 'proposals', [], [0.5], [0, -1], {}, () => 1, true, 2 ** 53, '/no/such/file'];
    for (let i = 0; i < ITERATIONS; i++) {
      const o: Record<string, unknown> = {};
      for (let k = 0; k < Math.floor(random() * 5); k++) o[keys[Math.floor(random() * keys.length)]!] = values[Math.floor(random() * values.length)];
      expectParsesOrFoveaError(() => resolveSegmenterOptions(o), () => String(Object.entries(o)));
      expectParsesOrFoveaError(() => resolveSegmentOptions(o, {}, random() < 0.5), () => String(Object.entries(o)));
      for (const odd of [null, 5, 'x', [], new Date()]) expectParsesOrFoveaError(() => resolveSegmentOptions(odd, {}, true), () => String(odd));
    }
  });
});
