/**
 * Loads the native addon. node-gyp-build looks in build/Release (a local
 * build), then prebuilds/<platform>-<arch>. Loading never depends on an
 * install script having run: npm 11 skips dependencies' scripts unless the
 * user approves them, and the prebuilt binary in the tarball is enough.
 */
import * as path from 'node:path';
import { FoveaError } from './errors';

export interface CudaDeviceInfo {
  index: number;
  name: string;
  computeCapability: string;
  totalMemory: number;
  multiprocessors: number;
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

export interface MemoryStats {
  /** Host memory held by live tensors. */
  bytesInUse: number;
  /** Freed blocks kept for reuse (bounded by FOVEA_CPU_CACHE_MB). */
  bytesCached: number;
  peakBytesInUse: number;
  allocations: number;
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

let binding: NativeBinding | undefined;
let bindingPath: string | undefined;

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
  try {
    bindingPath = load.resolve(packageRoot);
    binding = load(packageRoot);
  } catch (err) {
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

/** Path of the loaded .node file (after native() succeeded). */
export function nativeBindingPath(): string | undefined {
  return bindingPath;
}
