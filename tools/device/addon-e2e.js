#!/usr/bin/env node
// End-to-end check of the addon on CUDA (issue 6), for the GPU machine: the
// same photos through segment() on 'cpu' and on 'cuda', instance by instance
// (count, mask IoU, box IoU, score), then per-image time and streaming
// throughput on cuda against cpu, and the device errors a user can hit.
// Precision comes from FOVEA_CUDA_PRECISION (fp32 | tf32; the default is tf32
// on Ampere and later), read once per process: run once per precision.
//
//   node tools/device/addon-e2e.js [--photos a.jpg,dir/] [--model m.safetensors]
//                                  [--classifier c.safetensors] [--repeats 10] [--json out.json]
//                                  [--device cuda]   # --device cpu: a dry run of the script here
//
// Exit status 1 when CUDA is unavailable, an instance set differs (count, or a
// matched mask IoU under 0.99; in fp32 also a box IoU under 0.99: in tf32 one
// flipped edge pixel may move a box), or a device error has the wrong code.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..', '..');
const fovea = require(path.join(root, 'dist', 'index.js'));

function parseArgs(argv) {
  const opts = { photos: path.join(root, 'test', 'fixtures', 'photos'), model: '', classifier: '', repeats: 10, json: '', device: 'cuda' };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in opts) || argv[i + 1] === undefined) throw new Error(`unknown or incomplete option ${argv[i]}`);
    opts[key] = typeof opts[key] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  return opts;
}

function photoFiles(list) {
  return list.split(',').flatMap((p) =>
    fs.statSync(p).isDirectory()
      ? fs.readdirSync(p).filter((f) => /\.(jpe?g|png)$/i.test(f)).sort().map((f) => path.join(p, f))
      : [p],
  );
}

function boxIou(a, b) {
  const iw = Math.min(a[0] + a[2], b[0] + b[2]) - Math.max(a[0], b[0]);
  const ih = Math.min(a[1] + a[3], b[1] + b[3]) - Math.max(a[1], b[1]);
  if (iw <= 0 || ih <= 0) return a[2] * a[3] === 0 && b[2] * b[3] === 0 ? 1 : 0;
  const inter = iw * ih;
  return inter / (a[2] * a[3] + b[2] * b[3] - inter);
}

// Each CPU instance (in score order) takes the unmatched CUDA instance of the
// same label whose mask overlaps it most: a near tie may swap two instances'
// ranks without either being wrong.
function compareInstances(cpu, cuda, checkBoxes) {
  const used = new Set();
  const pairs = cpu.map((a, rank) => {
    let best = -1;
    let bestIou = -1;
    cuda.forEach((b, j) => {
      if (used.has(j) || b.label !== a.label) return;
      const iou = fovea.maskIou(a.mask, b.mask);
      if (iou > bestIou) [best, bestIou] = [j, iou];
    });
    if (best < 0) return { rank, maskIou: 0, boxIou: 0, scoreDiff: Infinity };
    used.add(best);
    const b = cuda[best];
    return { rank, maskIou: bestIou, boxIou: boxIou(a.box, b.box), scoreDiff: Math.abs(a.score - b.score) };
  });
  const min = (key, n) => Math.min(1, ...pairs.slice(0, n).map((p) => p[key]));
  return {
    cpuCount: cpu.length,
    cudaCount: cuda.length,
    minMaskIou: min('maskIou', pairs.length),
    minBoxIou: min('boxIou', pairs.length),
    minMaskIouTop10: min('maskIou', 10),
    below099: pairs.filter((p) => p.maskIou < 0.99 || (checkBoxes && p.boxIou < 0.99)).map((p) => p.rank),
    maxScoreDiff: Math.max(0, ...pairs.map((p) => p.scoreDiff)),
  };
}

// Device memory held by live tensors on cuda:0 (0 before fovea first uses it).
const deviceBytesInUse = () => fovea.memoryStats().cuda.find((d) => d.device === 0)?.bytesInUse ?? 0;

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function timeSegment(segmenter, image, repeats) {
  for (let i = 0; i < 2; i++) await segmenter.segment(image);
  const wall = [];
  const stages = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = process.hrtime.bigint();
    const r = await segmenter.segment(image);
    wall.push(Number(process.hrtime.bigint() - t0) / 1e6);
    stages.push(r.timings);
  }
  const perStage = {};
  for (const key of Object.keys(stages[0])) perStage[key] = median(stages.map((t) => t[key] ?? 0));
  return { wallMs: median(wall), timings: perStage };
}

async function streamRate(segmenter, images, count) {
  const inputs = Array.from({ length: count }, (_, i) => images[i % images.length]);
  const t0 = process.hrtime.bigint();
  let n = 0;
  for await (const _ of segmenter.stream(inputs, { concurrency: 3 })) n++;
  return n / (Number(process.hrtime.bigint() - t0) / 1e9);
}

async function expectCode(promise, code) {
  try {
    const s = await promise;
    await s.close?.();
    return `resolved (expected ${code})`;
  } catch (err) {
    return err.code === code ? 'ok' : `${err.code}: ${err.message} (expected ${code})`;
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const info = fovea.info();
  console.log(fovea.formatInfo(info));
  const report = { machine: { host: os.hostname(), cpus: os.cpus().length, node: process.version }, precision: process.env.FOVEA_CUDA_PRECISION || 'default', photos: [], failures: [] };
  if (opts.device !== 'cpu' && !info.cuda?.available) {
    console.error(`CUDA unavailable: ${info.cuda?.reason}`);
    process.exit(1);
  }
  const base = { ...(opts.model && { model: opts.model }), ...(opts.classifier && { classifier: opts.classifier }) };
  const cpu = await fovea.createSegmenter({ ...base, device: 'cpu' });
  const deviceBaseline = deviceBytesInUse();
  const cuda = await fovea.createSegmenter({ ...base, device: opts.device });
  const files = photoFiles(opts.photos);
  const images = files.map((f) => fs.readFileSync(f));
  for (const [i, file] of files.entries()) {
    const rc = await cpu.segment(images[i]);
    const rg = await cuda.segment(images[i]);
    const cmp = compareInstances(rc.instances, rg.instances, report.precision === 'fp32');
    const gpuTime = await timeSegment(cuda, images[i], opts.repeats);
    const cpuTime = await timeSegment(cpu, images[i], 3);
    const entry = { file: path.basename(file), size: `${rc.width}x${rc.height}`, device: rg.device, ...cmp, cuda: gpuTime, cpu: cpuTime };
    report.photos.push(entry);
    console.log(
      `${entry.file} ${entry.size}: instances cpu ${cmp.cpuCount} cuda ${cmp.cudaCount}; min mask IoU ${cmp.minMaskIou.toFixed(4)} ` +
        `(top 10: ${cmp.minMaskIouTop10.toFixed(4)}), min box IoU ${cmp.minBoxIou.toFixed(4)}, max score diff ${cmp.maxScoreDiff.toExponential(2)}; ` +
        `ms/image ${rg.device} ${gpuTime.wallMs.toFixed(1)}, cpu ${cpuTime.wallMs.toFixed(1)}`,
    );
    console.log(`  cuda stages ${JSON.stringify(gpuTime.timings)}`);
    if (cmp.cpuCount !== cmp.cudaCount || cmp.below099.length > 0) {
      report.failures.push(`${entry.file}: counts ${cmp.cpuCount}/${cmp.cudaCount}, ranks under 0.99: ${cmp.below099.join(',')}`);
    }
  }
  report.streamImagesPerSecond = { cuda: await streamRate(cuda, images, 30), cpu: await streamRate(cpu, images, 4) };
  console.log(`stream (concurrency 3): cuda ${report.streamImagesPerSecond.cuda.toFixed(1)} images/s, cpu ${report.streamImagesPerSecond.cpu.toFixed(2)} images/s`);
  // An absurd request (a 4000x3000 image at 16x: a 64000x48000 pyramid level)
  // must fail cleanly and leave the Segmenter usable, its memory released.
  const open = deviceBytesInUse();
  let absurd = 'skipped (a dry run on the CPU)';
  if (opts.device !== 'cpu') {
    try {
      const huge = { data: new Uint8Array(4000 * 3000 * 3), width: 4000, height: 3000, channels: 3 };
      await cuda.segment(huge, { scales: [16], maxSide: 0 });
      absurd = 'completed (it fit in memory)';
    } catch (err) {
      absurd = err.code === 'ERR_OUT_OF_MEMORY' ? 'ok' : `${err.code}: ${err.message}`;
    }
  }
  const next = await cuda.segment(images[0]);
  const afterAbsurd = deviceBytesInUse();
  await cuda.close();
  await cpu.close();
  report.deviceMemory = { baseline: deviceBaseline, open, afterAbsurd, closed: deviceBytesInUse() };
  console.log(`device memory in use: before ${deviceBaseline}, open ${open}, after the absurd call ${afterAbsurd}, closed ${report.deviceMemory.closed} bytes`);
  report.errors = {
    outOfMemory: absurd,
    usableAfterOutOfMemory: next.instances.length === report.photos[0].cudaCount ? 'ok' : `count ${next.instances.length}`,
    memoryAfterOutOfMemory: opts.device === 'cpu' || afterAbsurd === open ? 'ok' : `${afterAbsurd - open} bytes more in use`,
    memoryAfterClose: report.deviceMemory.closed === deviceBaseline ? 'ok' : `${report.deviceMemory.closed - deviceBaseline} bytes still in use`,
    missingDevice: await expectCode(fovea.createSegmenter({ ...base, device: `cuda:${info.cuda.devices.length}` }), 'ERR_DEVICE'),
  };
  // device 'auto' (the default) takes the GPU.
  const auto = await fovea.createSegmenter(base);
  report.errors.autoPicksCuda = opts.device === 'cpu' || auto.device === 'cuda:0' ? 'ok' : `auto ran on ${auto.device}`;
  await auto.close();
  // The device still serves a new Segmenter after the old one closed.
  const again = await fovea.createSegmenter({ ...base, device: opts.device });
  const rerun = await again.segment(images[0]);
  report.errors.reopen = rerun.instances.length === report.photos[0].cudaCount ? 'ok' : `count ${rerun.instances.length}`;
  await again.close();
  for (const [k, v] of Object.entries(report.errors)) {
    console.log(`error check ${k}: ${v}`);
    if (v !== 'ok' && !v.startsWith('skipped')) report.failures.push(`${k}: ${v}`);
  }
  if (opts.json) fs.writeFileSync(opts.json, JSON.stringify(report, null, 2));
  console.log(report.failures.length ? `FAILED:\n  ${report.failures.join('\n  ')}` : 'all checks passed');
  process.exit(report.failures.length ? 1 : 0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
