// `fovea bench` machinery on the small golden weights (not a timing test:
// only the report's shape, the stage list and the written files are checked).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { formatBench, runBench, writeBench } from '../lib/bench';
import { expectFoveaRejection } from './expect-error';

const golden = path.join(__dirname, 'fixtures', 'golden');
const segmenter = {
  model: path.join(golden, 'sharpmask-resnet18-d16.safetensors'),
  classifier: path.join(golden, 'multipathnet-resnet18-d16.safetensors'),
};

describe('bench', () => {
  it('reports every stage per size, throughput and memory, and writes JSON, SVG and PNG', async () => {
    const report = await runBench({ segmenter, sizes: [[96, 64], [64, 96]], warmup: 1, repeats: 3, streamImages: 2 });
    expect(report.mode).toBe('instances');
    expect(report.results.map((r) => [r.width, r.height])).toEqual([[96, 64], [64, 96]]);
    for (const r of report.results) {
      for (const s of ['decode', 'pyramid', 'trunk', 'refine', 'paste', 'classify', 'postprocess']) {
        expect(r.stages[s]!.median).toBeGreaterThanOrEqual(0);
        expect(r.stages[s]!.p95).toBeGreaterThanOrEqual(r.stages[s]!.median);
      }
      expect(r.total.median).toBeGreaterThan(0);
      expect(r.imagesPerSecond).toBeGreaterThan(0);
      expect(r.peakRssMB).toBeGreaterThan(10);
    }
    const table = formatBench(report);
    expect(table).toMatch(/trunk/);
    expect(table).toMatch(/96x64/);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fovea-bench-'));
    const files = await writeBench(report, dir, 'x');
    expect(JSON.parse(fs.readFileSync(files[0]!, 'utf8')).results.length).toBe(2);
    const png = await sharp(files[2]!).metadata();
    expect(png.format).toBe('png');
  });

  it('rejects bad counts', async () => {
    await expectFoveaRejection(runBench({ segmenter, repeats: 0 }), 'ERR_OPTIONS', /repeats/);
  });
});
