// Soak test (a separate command, not part of `npm test`): many segment()
// calls on small images, then many Segmenter create/close cycles, with the
// resident memory sampled. Prints and writes a JSON summary.
// Usage: node bench/soak.mjs [calls=2000] [cycles=200] [out.json]
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createSegmenter, memoryStats } from 'fovea';

const [calls = 2000, cycles = 200] = process.argv.slice(2, 4).map(Number);
const out = process.argv[4];
const golden = fileURLToPath(new URL('../test/fixtures/golden/', import.meta.url));
const model = `${golden}sharpmask-resnet18-d16.safetensors`;
const classifier = `${golden}multipathnet-resnet18-d16.safetensors`;
const options = { scales: [0.5, 1], maxProposals: 10, scoreThreshold: 0.02 };
const mb = () => process.memoryUsage().rss / 2 ** 20;

function picture(width, height, seed) {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31 + seed * 17) & 255;
  return { data, width, height, channels: 3 };
}

const samples = [];
const seg = await createSegmenter({ model, classifier });
for (let i = 0; i < calls; i++) {
  // Bursts of 8 concurrent calls, sizes varying so the allocator sees many shapes.
  if (i % 8 === 0) {
    await Promise.all(Array.from({ length: Math.min(8, calls - i) }, (_, k) => seg.segment(picture(48 + ((i + k) % 5) * 16, 40 + ((i + k) % 3) * 12, i + k), options)));
  }
  if (i % 100 === 0) samples.push({ call: i, rssMB: mb(), inUseMB: memoryStats().bytesInUse / 2 ** 20 });
}
await seg.close();
samples.push({ call: calls, rssMB: mb(), inUseMB: memoryStats().bytesInUse / 2 ** 20 });

const cycleSamples = [];
for (let c = 0; c < cycles; c++) {
  const s = await createSegmenter({ model, classifier });
  await s.segment(picture(64, 48, c), options);
  await s.close();
  if (c % 20 === 0) {
    globalThis.gc?.();
    cycleSamples.push({ cycle: c, rssMB: mb(), inUseMB: memoryStats().bytesInUse / 2 ** 20 });
  }
}
globalThis.gc?.();
cycleSamples.push({ cycle: cycles, rssMB: mb(), inUseMB: memoryStats().bytesInUse / 2 ** 20 });

const warm = samples.find((s) => s.call >= Math.min(200, calls)) ?? samples[0];
const summary = {
  date: new Date().toISOString(),
  node: process.version,
  calls,
  cycles,
  rssAfterWarmupMB: warm.rssMB,
  rssEndMB: samples.at(-1).rssMB,
  growthAfterWarmupMB: samples.at(-1).rssMB - warm.rssMB,
  cyclesRssStartMB: cycleSamples[0].rssMB,
  cyclesRssEndMB: cycleSamples.at(-1).rssMB,
  tensorsInUseAtEndMB: cycleSamples.at(-1).inUseMB,
  samples,
  cycleSamples,
};
console.log(JSON.stringify({ ...summary, samples: undefined, cycleSamples: undefined }, null, 2));
if (out) writeFileSync(out, `${JSON.stringify(summary, null, 2)}\n`);
