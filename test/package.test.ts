import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FoveaError, info, memoryStats } from '../lib/index';
import { chooseVariant, native, probeBinary, type ProbeResult } from '../lib/native';
import { toFoveaError } from '../lib/errors';

const root = path.join(__dirname, '..');

describe('package surface', () => {
  it('info() reports the version, backends, CPU kernels and CUDA status', () => {
    const i = info();
    expect(i.version).toBe(JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version);
    expect(i.backends).toContain('cpu');
    expect(['scalar', 'avx2', 'avx512']).toContain(i.cpuIsa);
    expect(i.threads).toBeGreaterThanOrEqual(1);
    expect(i.napiVersion).toBe(8);
    // Either a device list or the reason there is none; never a silent nothing.
    if (i.cuda.available) expect(i.cuda.devices.length).toBeGreaterThan(0);
    else expect(i.cuda.reason).toMatch(/\w+/);
    expect(i.cuda.compiled).toBe(i.backends.includes('cuda'));
  });

  it('memoryStats() lists the CUDA devices in use: none without a usable device', () => {
    const m = memoryStats();
    expect(m.bytesInUse).toBeGreaterThanOrEqual(0);
    expect(Array.isArray(m.cuda)).toBe(true);
    if (!info().cuda.available) expect(m.cuda).toEqual([]);
    for (const d of m.cuda) expect(Object.keys(d).sort()).toEqual(['bytesCached', 'bytesInUse', 'deviceMallocs', 'device', 'peakBytesInUse']);
  });

  it('is the same module from require and import', () => {
    // A real Node process, not vitest's module runner, resolves the package
    // through its "exports" map the way users do.
    const script = [
      "import { createRequire } from 'node:module';",
      "import * as esm from 'fovea';",
      'const cjs = createRequire(import.meta.url)(\'fovea\');',
      "const names = Object.keys(esm).filter((k) => k !== 'default').sort();",
      "if (JSON.stringify(names) !== JSON.stringify(Object.keys(cjs).sort())) throw new Error('names differ');",
      "for (const n of names) if (esm[n] !== cjs[n]) throw new Error('not the same object: ' + n);",
      "console.log(names.join(','));",
    ].join('\n');
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: root, encoding: 'utf8' });
    expect(out).toMatch(/FoveaError/);
    expect(out).toMatch(/info/);
  });

  it('`fovea info --json` prints what info() returns', () => {
    const out = execFileSync(process.execPath, [path.join(root, 'dist', 'cli.js'), 'info', '--json'], {
      encoding: 'utf8',
    });
    const parsed = JSON.parse(out);
    expect(parsed.backends).toEqual(info().backends);
    expect(parsed.cuda.compiled).toBe(info().cuda.compiled);
  });
});

describe('native errors become FoveaError with a code', () => {
  const run = (name: string, inputs: Parameters<ReturnType<typeof native>['runOp']>[1], attrs = {}) =>
    native()
      .runOp(name, inputs, attrs)
      .catch((e: unknown) => {
        throw toFoveaError(e);
      });

  it('unknown op is ERR_OPTIONS', async () => {
    await expect(run('no_such_op', [], {})).rejects.toMatchObject({ code: 'ERR_OPTIONS' });
  });

  it('data that does not fill the shape is ERR_INPUT', async () => {
    const err = await run('relu', [{ data: new Float32Array(3), shape: [2, 2] }]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FoveaError);
    expect((err as FoveaError).code).toBe('ERR_INPUT');
    expect((err as FoveaError).message).toMatch(/3 values for shape \[2, 2\]/);
  });

  it('bad op parameters are ERR_OPTIONS, bad shapes ERR_INPUT', async () => {
    const x = { data: new Float32Array(16), shape: [1, 1, 4, 4] };
    const w = { data: new Float32Array(9), shape: [1, 1, 3, 3] };
    await expect(run('conv2d', [x, w, null], { strides: [0, 1] })).rejects.toMatchObject({ code: 'ERR_OPTIONS' });
    await expect(run('conv2d', [x, { data: new Float32Array(18), shape: [1, 2, 3, 3] }, null])).rejects.toMatchObject({
      code: 'ERR_INPUT',
    });
  });
});

describe('prepareOp keeps constants as a model keeps its weights', () => {
  const random = (n: number, seed: number) => {
    const a = new Float32Array(n);
    let s = seed;
    for (let i = 0; i < n; i++) {
      s = (s * 1103515245 + 12345) % 2147483648;
      a[i] = s / 2147483648 - 0.5;
    }
    return a;
  };

  it('a prepared conv (channels last with its packed weights kept) matches runOp, call after call, async and sync', async () => {
    // 14x14 maps of 64 channels: the shape where fovea packs constant weights.
    const x = { data: random(32 * 14 * 14, 1), shape: [1, 32, 14, 14] };
    const w = { data: random(64 * 32 * 9, 2), shape: [64, 32, 3, 3] };
    const b = { data: random(64, 3), shape: [64] };
    const attrs = { pads: [1, 1, 1, 1], activation: 'relu' };
    const expected = (await native().runOp('conv2d', [x, w, b], attrs)) as { data: Float32Array; shape: number[] };
    const prepared = native().prepareOp('conv2d', [w, b], attrs);
    w.data.fill(0); // copied when prepared: later changes to the caller's array do not leak in
    for (let call = 0; call < 3; call++) {
      const got = (call === 2 ? prepared.runSync([x]) : await prepared.run([x])) as { data: Float32Array; shape: number[] };
      expect(got.shape).toEqual(expected.shape);
      let maxDiff = 0;
      for (let i = 0; i < got.data.length; i++) maxDiff = Math.max(maxDiff, Math.abs(got.data[i] - expected.data[i]));
      expect(maxDiff).toBeLessThan(1e-4);
    }
  });

  it('bad arguments are FoveaErrors', async () => {
    expect(() => native().prepareOp('conv2d', {} as never, {})).toThrow(expect.objectContaining({ code: 'ERR_OPTIONS' }));
    const prepared = native().prepareOp('relu', [], {});
    await expect(prepared.run([{ data: new Float32Array(3), shape: [2, 2] }])).rejects.toMatchObject({
      code: 'ERR_INPUT',
    });
    expect(() => prepared.runSync([{ data: new Float32Array(3), shape: [2, 2] }])).toThrow(
      expect.objectContaining({ code: 'ERR_INPUT' }),
    );
  });
});

describe('native source lists', () => {
  // CMake and node-gyp both read native/sources.gypi; this makes sure no
  // source file in the tree is missing from it.
  it('every native source file is listed in native/sources.gypi', () => {
    const gypi = fs.readFileSync(path.join(root, 'native', 'sources.gypi'), 'utf8');
    const listed = new Set(gypi.match(/native\/[\w/.-]+\.(cc|cu)/g));
    const onDisk: string[] = [];
    const walk = (dir: string) => {
      for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
        const rel = `${dir}/${e.name}`;
        if (e.isDirectory()) walk(rel);
        else if (/\.(cc|cu)$/.test(e.name)) onDisk.push(rel);
      }
    };
    walk('native');
    expect(onDisk.filter((f) => !listed.has(f))).toEqual([]);
    expect([...listed].filter((f) => !fs.existsSync(path.join(root, f)))).toEqual([]);
  });
});

describe('prebuilt variants: CUDA where a probe finds a device, else the CPU', () => {
  const never = (): ProbeResult => {
    throw new Error('probed although the choice needs no probe');
  };
  const seen = (result: ProbeResult) => () => result;

  it('chooses by local build, FOVEA_VARIANT and the probe', () => {
    expect(chooseVariant(true, '/x/cuda.node', undefined, never).variant).toBe('local');
    expect(chooseVariant(false, null, undefined, never)).toEqual({ variant: 'cpu', reason: 'this install has no CUDA variant' });
    expect(chooseVariant(false, '/x/cuda.node', 'cpu', never).variant).toBe('cpu');
    expect(chooseVariant(false, '/x/cuda.node', 'cuda', never).variant).toBe('cuda');
    expect(chooseVariant(false, '/x/cuda.node', '', seen({ ok: true, available: true, reason: '' })).variant).toBe('cuda');
    const noDevice = chooseVariant(false, '/x/cuda.node', undefined, seen({ ok: true, available: false, reason: 'no CUDA driver found' }));
    expect(noDevice.variant).toBe('cpu');
    expect(noDevice.reason).toMatch(/no usable device: no CUDA driver found/);
    const crashed = chooseVariant(false, '/x/cuda.node', undefined, seen({ ok: false, reason: 'loading it killed the probe process (SIGSEGV)' }));
    expect(crashed.variant).toBe('cpu');
    expect(crashed.reason).toMatch(/SIGSEGV/);
    expect(() => chooseVariant(false, null, 'cuda', never)).toThrow(/no CUDA variant/);
    expect(() => chooseVariant(false, null, 'gpu', never)).toThrow(/FOVEA_VARIANT must be/);
  });

  it('the probe reports the real binary\'s CUDA status, and survives a binary that kills its process', () => {
    const real = probeBinary(path.join(root, 'build', 'Release', 'fovea.node'));
    expect(real.ok).toBe(true);
    if (real.ok && !real.available) expect(real.reason.length).toBeGreaterThan(0);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fovea-probe-'));
    try {
      const segv = path.join(dir, 'segv.js');
      fs.writeFileSync(segv, "process.kill(process.pid, 'SIGSEGV');");
      expect(probeBinary(segv)).toEqual({ ok: false, reason: 'loading it killed the probe process (SIGSEGV)' });
      const throws = path.join(dir, 'throws.js');
      fs.writeFileSync(throws, "throw new Error('libcuda.so.1: cannot open shared object file');");
      const failed = probeBinary(throws);
      expect(failed.ok).toBe(false);
      expect(failed.reason).toMatch(/exit 1.*libcuda\.so\.1/);
      expect(probeBinary(path.join(dir, 'missing.node')).ok).toBe(false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
