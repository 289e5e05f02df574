/**
 * Loads the native addon. node-gyp-build looks in build/Release (a local
 * build), then prebuilds/<platform>-<arch>. Loading never depends on an
 * install script having run: npm 11 skips dependencies' install scripts unless the
 * user approves them, and the prebuilt binary in the tarball is enough.
 *
 * The CUDA variant of the prebuilt binary lives apart, in
 * variants/cuda/prebuilds/<platform>-<arch>: node-gyp-build cannot tell two
 * builds of one platform apart, so fovea chooses. Without a local build, the
 * CUDA variant is loaded where a child process could load it and it found a
 * device (a broken driver then takes down the child, not the user's process);
 * otherwise the CPU binary, with the reason kept for `fovea info`.
 * FOVEA_VARIANT=cpu|cuda skips the choice.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FoveaError } from './errors';

export interface CudaDeviceInfo {
  index: number;
  name: string;
  computeCapability: string;
  totalMemory: number;
  multiprocessors: number;
  /** Whether this binary has kernels for the device's compute capability. */
  supported: boolean;
}

export interface NativeInfo {
  backends: string[];
  cpuFeatures: string;
  cpuIsa: string;
  threads: number;
  napiVersion: number;
  cuda: {
    compiled: boolean;
    available: boolean;
    reason: string;
    driverVersion: number;
    runtimeVersion: number;
    architectures: string[];
    devices: CudaDeviceInfo[];
  };
}

export interface NativeTensor {
  data: Float32Array | Int32Array | BigInt64Array;
  shape: number[];
}

export interface NativeModelSummary {
  architecture: string;
  trunk: string;
  parameters: number;
  tensors: number;
}

export interface DeviceMemoryStats {
  device: number;
  /** Device memory held by live tensors (weights of open Segmenters, runs in flight). */
  bytesInUse: number;
  /** Freed blocks kept for reuse (bounded by FOVEA_CUDA_CACHE_MB). */
  bytesCached: number;
  peakBytesInUse: number;
  /** cudaMalloc calls so far (none more once a Segmenter's sizes have been seen). */
  deviceMallocs: number;
}

export interface MemoryStats {
  /** Host memory held by live tensors. */
  bytesInUse: number;
  /** Freed blocks kept for reuse (bounded by FOVEA_CPU_CACHE_MB). */
  bytesCached: number;
  peakBytesInUse: number;
  allocations: number;
  /** Each CUDA device fovea has used in this process (none before the first). */
  cuda: DeviceMemoryStats[];
}

export interface PreparedOp {
  /** Runs the op on `inputs` followed by the prepared constants. */
  run(inputs: Array<NativeTensor | null>): Promise<unknown>;
  /** The same on the calling thread, blocking it (as onnxruntime-node's session.run does); for benchmarks. */
  runSync(inputs: Array<NativeTensor | null>): unknown;
}

export interface NativeBinding {
  info(): NativeInfo;
  memoryStats(): MemoryStats;
  inspectModel(path: string): Promise<NativeModelSummary>;
  runOp(name: string, inputs: Array<NativeTensor | null>, attrs: Record<string, unknown>): Promise<unknown>;
  /** The op with its trailing inputs (a conv's weights) fixed, copied once and kept as a model keeps its weights. */
  prepareOp(name: string, constants: Array<NativeTensor | null>, attrs: Record<string, unknown>): PreparedOp;
}

export const packageRoot = path.join(__dirname, '..');
export const cudaVariantRoot = path.join(packageRoot, 'variants', 'cuda');

/** Which binary was loaded and why. */
export interface VariantChoice {
  /** 'local' (build/Release), 'cpu' or 'cuda' (prebuilt variants). */
  variant: 'local' | 'cpu' | 'cuda';
  reason: string;
}

/** What a child process saw when it loaded a binary: its CUDA status, or how it failed. */
export type ProbeResult = { ok: true; available: boolean; reason: string } | { ok: false; reason: string };

const PROBE_SCRIPT =
  'const c = require(process.argv[1]).info().cuda; process.stdout.write(JSON.stringify({ available: c.available, reason: c.reason }))';

/** Loads `binary` in a child process and reports its CUDA status; never throws. */
export function probeBinary(binary: string, timeoutMs = 30_000): ProbeResult {
  const r = spawnSync(process.execPath, ['-e', PROBE_SCRIPT, binary], { encoding: 'utf8', timeout: timeoutMs });
  if (r.error) return { ok: false, reason: `the probe could not run: ${r.error.message}` };
  if (r.signal) return { ok: false, reason: `loading it killed the probe process (${r.signal})` };
  if (r.status !== 0) {
    // Node prints the error's own line ("Error: ...") among the stack and its version.
    const lines = (r.stderr || '').split('\n').map((l) => l.trim()).filter(Boolean);
    const message = lines.find((l) => /^[A-Za-z]*Error\b/.test(l)) ?? lines.filter((l) => !/^Node\.js v/.test(l)).pop() ?? '';
    return { ok: false, reason: `loading it failed (exit ${r.status}): ${message}` };
  }
  try {
    const c = JSON.parse(r.stdout) as { available: boolean; reason: string };
    return { ok: true, available: c.available === true, reason: String(c.reason ?? '') };
  } catch {
    return { ok: false, reason: `the probe printed no status: ${r.stdout.slice(0, 200)}` };
  }
}

/**
 * The choice between the prebuilt variants, given whether there is a local
 * build, the CUDA variant's path (or null) and a probe.
 */
export function chooseVariant(
  hasLocalBuild: boolean,
  cudaBinary: string | null,
  forced: string | undefined,
  probe: (binary: string) => ProbeResult,
): VariantChoice {
  if (forced !== undefined && forced !== '' && forced !== 'cpu' && forced !== 'cuda') {
    throw new FoveaError('ERR_OPTIONS', `FOVEA_VARIANT must be 'cpu' or 'cuda', got '${forced}'`);
  }
  if (hasLocalBuild) return { variant: 'local', reason: 'a local build (build/Release) takes precedence' };
  if (forced === 'cpu') return { variant: 'cpu', reason: 'FOVEA_VARIANT=cpu' };
  if (!cudaBinary) {
    if (forced === 'cuda') throw new FoveaError('ERR_NATIVE_BINARY', 'FOVEA_VARIANT=cuda, but this install has no CUDA variant');
    return { variant: 'cpu', reason: 'this install has no CUDA variant' };
  }
  if (forced === 'cuda') return { variant: 'cuda', reason: 'FOVEA_VARIANT=cuda' };
  const seen = probe(cudaBinary);
  if (!seen.ok) return { variant: 'cpu', reason: `the CUDA variant was not used: ${seen.reason}` };
  if (!seen.available) return { variant: 'cpu', reason: `the CUDA variant found no usable device: ${seen.reason}` };
  return { variant: 'cuda', reason: 'the CUDA variant loaded and found a device' };
}

let binding: NativeBinding | undefined;
let bindingPath: string | undefined;
let choice: VariantChoice | undefined;

function buildInstructions(): string {
  return [
    'To build it from source (needs a C++17 compiler and Python; CMake for the full build):',
    `  cd ${packageRoot}`,
    '  npx cmake-js compile            # the full build (CPU, and CUDA where nvcc is found)',
    '  # or, without CMake:',
    '  npx node-gyp rebuild            # CPU backend only',
    'Or let npm run the install script: npm rebuild fovea --foreground-scripts',
  ].join('\n');
}

/** The loaded addon; throws FoveaError(ERR_NATIVE_BINARY) with build instructions. */
export function native(): NativeBinding {
  if (binding) return binding;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const load = require('node-gyp-build') as ((dir: string) => NativeBinding) & { resolve(dir: string): string };
  const resolveIn = (dir: string): string | null => {
    try {
      return load.resolve(dir);
    } catch {
      return null;
    }
  };
  try {
    const hasLocalBuild = fs.existsSync(path.join(packageRoot, 'build', 'Release', 'fovea.node'));
    const cudaBinary = fs.existsSync(cudaVariantRoot) ? resolveIn(cudaVariantRoot) : null;
    choice = chooseVariant(hasLocalBuild, cudaBinary, process.env['FOVEA_VARIANT'], (b) => probeBinary(b));
    bindingPath = choice.variant === 'cuda' && cudaBinary ? cudaBinary : load.resolve(packageRoot);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    binding = require(bindingPath) as NativeBinding;
  } catch (err) {
    if (err instanceof FoveaError) throw err;
    const detail = err instanceof Error ? err.message : String(err);
    throw new FoveaError(
      'ERR_NATIVE_BINARY',
      `fovea could not load its native addon for ${process.platform}-${process.arch} ` +
        `(node ${process.versions.node}, N-API ${process.versions.napi}): ${detail}\n${buildInstructions()}`,
      { cause: err },
    );
  }
  return binding;
}

/** Which binary variant native() loaded, and why (after native() succeeded). */
export function nativeVariant(): VariantChoice | undefined {
  return choice;
}

/** Path of the loaded .node file (after native() succeeded). */
export function nativeBindingPath(): string | undefined {
  return bindingPath;
}
