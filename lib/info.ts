import * as fs from 'node:fs';
import * as path from 'node:path';
import { native, nativeBindingPath, nativeVariant, packageRoot, type MemoryStats, type NativeInfo, type VariantChoice } from './native';

export interface FoveaInfo extends NativeInfo {
  version: string;
  node: string;
  platform: string;
  binary: string;
  /** Which binary was loaded ('local' build, prebuilt 'cpu' or 'cuda' variant) and why. */
  variant: VariantChoice;
}

export function version(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/** What this installation can do: version, backends, CPU features, CUDA devices (or why none). */
export function info(): FoveaInfo {
  const n = native().info();
  return {
    version: version(),
    node: process.versions.node,
    platform: `${process.platform}-${process.arch}`,
    binary: nativeBindingPath() ?? '',
    variant: nativeVariant() ?? { variant: 'local', reason: '' },
    ...n,
  };
}

/** Human-readable form of info(), as `fovea info` prints it. */
export function formatInfo(i: FoveaInfo): string {
  const lines = [
    `fovea ${i.version} (node ${i.node}, ${i.platform}, N-API ${i.napiVersion})`,
    `binary:       ${i.binary}`,
    `variant:      ${i.variant.variant} (${i.variant.reason})`,
    `backends:     ${i.backends.join(', ')}`,
    `cpu:          ${i.cpuIsa} kernels, ${i.threads} threads (features: ${i.cpuFeatures || 'none'})`,
  ];
  const c = i.cuda;
  if (!c.compiled) {
    lines.push(`cuda:         not available: ${c.reason}`);
  } else {
    const rt = `${Math.floor(c.runtimeVersion / 1000)}.${(c.runtimeVersion % 1000) / 10}`;
    lines.push(`cuda:         compiled (runtime ${rt}, ${c.architectures.join(' ')})`);
    if (c.available) {
      for (const d of c.devices) {
        const gib = (d.totalMemory / 2 ** 30).toFixed(1);
        const note = d.supported ? '' : ' (no kernels for it in this binary)';
        lines.push(`  cuda:${d.index}      ${d.name}, compute ${d.computeCapability}, ${gib} GiB, ${d.multiprocessors} SMs${note}`);
      }
    } else {
      lines.push(`  no device:  ${c.reason}`);
    }
  }
  return lines.join('\n');
}

/** The native host allocator's counters (memory held by fovea's tensors). */
export function memoryStats(): MemoryStats {
  return native().memoryStats();
}
