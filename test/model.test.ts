import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FoveaError } from '../lib/errors';
import { inspectModel } from '../lib/model';
import { readSafetensors } from '../lib/safetensors';

const golden = path.join(__dirname, 'fixtures', 'golden');
const weightFiles = fs.readdirSync(golden).filter((f) => f.endsWith('.safetensors') && !f.endsWith('-io.safetensors'));

describe('inspectModel: the native loaders on the golden weights', () => {
  it('finds the golden weight files', () => expect(weightFiles.length).toBe(6));

  it.each(weightFiles)('%s loads, and its architecture and size agree with the file', async (file) => {
    const full = path.join(golden, file);
    const summary = await inspectModel(full);
    // Independent count through the TypeScript reader.
    const tensors = [...readSafetensors(fs.readFileSync(full)).tensors.values()];
    const values = tensors.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
    expect(summary.parameters).toBe(values);
    expect(summary.tensors).toBe(tensors.length);
    expect(file.startsWith(summary.architecture)).toBe(true);
  });

  it('rejects a missing file, a truncated file and a non-model file with ERR_WEIGHTS', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fovea-model-'));
    try {
      const bytes = fs.readFileSync(path.join(golden, 'deepmask-resnet18-d16.safetensors'));
      const truncated = path.join(dir, 'truncated.safetensors');
      fs.writeFileSync(truncated, bytes.subarray(0, bytes.length - 4096));
      const io = path.join(golden, 'deepmask-resnet18-d16-io.safetensors');
      for (const p of [path.join(dir, 'absent.safetensors'), truncated, io]) {
        const err = await inspectModel(p).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(FoveaError);
        expect((err as FoveaError).code).toBe('ERR_WEIGHTS');
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
