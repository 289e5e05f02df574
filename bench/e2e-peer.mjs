#!/usr/bin/env node
// End-to-end CPU benchmark with its peer in the same run: fovea's segment()
// per stage, and onnxruntime-node (CPU execution provider, same thread count)
// running fovea's own ONNX export of the same model (`fovea export-onnx`) on
// the same work: the dense SharpMask trunk + heads + h-nets on every pyramid
// level of the same photo, the refinement of the same number of proposals,
// and MultiPathNet on the same image size with the same number of ROIs.
//
//   npm run bench                     # embedded model, 640x480 and 1280x960
//   node bench/e2e-peer.mjs [--model f] [--classifier f] [--sizes 640x480,1280x960]
//                           [--threads 2] [--repeats 7] [--out bench/results] [--name stem]
import { createRequire } from 'node:module';
import { parseArgs } from './args.mjs';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');


const opts = parseArgs(process.argv.slice(2), { model: '', classifier: '', sizes: '640x480,1280x960', threads: os.cpus().length, repeats: 7, warmup: 2, out: path.join(root, 'bench', 'results'), name: '' });
// Both libraries read their thread count before first use.
process.env.FOVEA_NUM_THREADS = String(opts.threads);
const ort = require('onnxruntime-node');
const sharp = require('sharp');
const fovea = require(path.join(root, 'dist', 'index.js'));
const { readSafetensorsHeaderFromFile } = require(path.join(root, 'dist', 'safetensors.js'));
const { DEFAULT_MODEL, DEFAULT_CLASSIFIER } = require(path.join(root, 'dist', 'options.js'));
const { BENCH_PHOTO, spread } = require(path.join(root, 'dist', 'bench.js'));

const model = opts.model || DEFAULT_MODEL;
const classifier = opts.classifier || (!opts.model && fs.existsSync(DEFAULT_CLASSIFIER) ? DEFAULT_CLASSIFIER : '');
const configOf = (file) => JSON.parse(readSafetensorsHeaderFromFile(file).metadata['fovea.config']);
const smCfg = configOf(model);
const mpnCfg = classifier ? configOf(classifier) : undefined;
if (smCfg.architecture !== 'sharpmask') throw new Error(`${model}: the peer benchmark needs a SharpMask model`);
const sizes = opts.sizes.split(',').map((s) => s.split('x').map(Number));

function seededArray(n, seed) {
  const a = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    a[i] = (s / 2 ** 32) * 2 - 1;
  }
  return a;
}

// Sessions on fovea's ONNX export of the same files.
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fovea-peer-'));
// No spinning: its idle threads would otherwise busy-wait while fovea is timed.
const sessionOptions = {
  intraOpNumThreads: opts.threads,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
  extra: { session: { intra_op: { allow_spinning: '0' } } },
};
async function session(file, part) {
  const out = path.join(tmp, `${part}.onnx`);
  fovea.exportOnnxFile(file, out, { part });
  return ort.InferenceSession.create(out, sessionOptions);
}
const dense = await session(model, 'sharpmask-dense');
const refine = await session(model, 'sharpmask-refine');
const mpn = classifier ? await session(classifier, 'multipathnet') : undefined;

// The padded, normalised pyramid inputs the pipeline builds (pipeline.h steps 1-2).
async function pyramid(width, height) {
  const maxSide = 600;
  const r = Math.max(width, height) > maxSide ? maxSide / Math.max(width, height) : 1;
  const wh = Math.max(1, Math.floor(height * r + 0.5));
  const ww = Math.max(1, Math.floor(width * r + 0.5));
  const pad = smCfg.image_pad;
  const out = [];
  for (const s of smCfg.scales) {
    const hs = Math.floor(s * wh + 0.5);
    const ws = Math.floor(s * ww + 0.5);
    const raw = await sharp(BENCH_PHOTO).resize(ws, hs, { fit: 'fill' }).removeAlpha().raw().toBuffer();
    const H = hs + 2 * pad;
    const W = ws + 2 * pad;
    const data = new Float32Array(3 * H * W);
    for (let c = 0; c < 3; c++) {
      const fill = (smCfg.image_pad_value - smCfg.mean[c]) / smCfg.std[c];
      data.fill(fill, c * H * W, (c + 1) * H * W);
      for (let y = 0; y < hs; y++) {
        for (let x = 0; x < ws; x++) data[c * H * W + (y + pad) * W + x + pad] = (raw[(y * ws + x) * 3 + c] / 255 - smCfg.mean[c]) / smCfg.std[c];
      }
    }
    out.push(new ort.Tensor('float32', data, [1, 3, H, W]));
  }
  return out;
}

const K = 100; // segment()'s default maxProposals: the refinement and classification batch
function refineFeeds() {
  const feeds = { embedding: new ort.Tensor('float32', seededArray(K * smCfg.embed_dim, 1), [K, smCfg.embed_dim]) };
  for (let i = 0; i < 4; i++) {
    const c = (smCfg.km >> i) / 2;
    const side = smCfg.fSz * 2 ** i;
    feeds[`h${i + 1}`] = new ort.Tensor('float32', seededArray(K * c * side * side, i + 2), [K, c, side, side]);
  }
  return feeds;
}

function mpnFeeds(width, height) {
  let s = mpnCfg.test_scale / Math.min(width, height);
  if (Math.floor(s * Math.max(width, height) + 0.5) > mpnCfg.test_max_size) s = mpnCfg.test_max_size / Math.max(width, height);
  const h = Math.floor(height * s);
  const w = Math.floor(width * s);
  const rois = new Float32Array(K * 5);
  const r = seededArray(K * 4, 9);
  for (let k = 0; k < K; k++) {
    const x1 = ((r[k * 4] + 1) / 2) * w * 0.6;
    const y1 = ((r[k * 4 + 1] + 1) / 2) * h * 0.6;
    rois.set([0, x1, y1, x1 + 16 + ((r[k * 4 + 2] + 1) / 2) * w * 0.4, y1 + 16 + ((r[k * 4 + 3] + 1) / 2) * h * 0.4], k * 5);
  }
  return { image: new ort.Tensor('float32', seededArray(3 * h * w, 5), [1, 3, h, w]), rois: new ort.Tensor('float32', rois, [K, 5]) };
}

const mode = classifier ? 'instances' : 'proposals';
const segmenter = await fovea.createSegmenter({ model, classifier: classifier || null });
const results = [];
for (const [width, height] of sizes) {
  // The same photo at each size (stretched), encoded once, as `fovea bench` does.
  const image = await sharp(BENCH_PHOTO).resize(width, height, { fit: 'fill' }).jpeg({ quality: 90 }).toBuffer();
  const inputs = await pyramid(width, height);
  const rf = refineFeeds();
  const mf = mpn ? mpnFeeds(width, height) : undefined;
  // onnxruntime on the same work as fovea's model stages, stage by stage.
  const ortOnce = async () => {
    const t0 = performance.now();
    for (const input of inputs) await dense.run({ image: input });
    const t1 = performance.now();
    await refine.run(rf);
    const t2 = performance.now();
    if (mf) await mpn.run(mf);
    return { trunk: t1 - t0, refine: t2 - t1, classify: performance.now() - t2 };
  };
  // One segment() (scoreThreshold 0 so the classifier sees every proposal),
  // then one onnxruntime pass, repeat after repeat: load from other tenants
  // of a shared machine falls on both alike, where timing all of one and
  // then all of the other moved the ratios by up to 10% between runs.
  const foveaRuns = [];
  const ortRuns = [];
  for (let i = 0; i < opts.warmup + opts.repeats; i++) {
    const r = await segmenter.segment(image, { scoreThreshold: 0, maxProposals: K, mode });
    const o = await ortOnce();
    if (i < opts.warmup) continue;
    foveaRuns.push(r.timings);
    ortRuns.push(o);
  }
  const foveaStage = (name) => spread(foveaRuns.map((t) => t[name] ?? 0)).median;
  const ortStage = (name) => spread(ortRuns.map((t) => t[name])).median;
  const rows = [
    { stage: 'trunk + heads + h-nets (all scales)', fovea: foveaStage('trunk'), ort: ortStage('trunk') },
    { stage: `refinement (${K} proposals)`, fovea: foveaStage('refine'), ort: ortStage('refine') },
  ];
  if (mpn) rows.push({ stage: `MultiPathNet (${K} ROIs)`, fovea: foveaStage('classify'), ort: ortStage('classify') });
  const modelTotal = { stage: 'model stages together', fovea: rows.reduce((a, r) => a + r.fovea, 0), ort: rows.reduce((a, r) => a + r.ort, 0) };
  rows.push(modelTotal);
  const total = foveaStage('total');
  // The rest per run, then its median (a difference of medians can come out negative).
  const other = spread(foveaRuns.map((t) => t.total - (t.trunk ?? 0) - (t.refine ?? 0) - (t.classify ?? 0))).median;
  results.push({ width, height, rows, foveaTotal: total, foveaOther: other });
}
await segmenter.close();

const info = fovea.info();
const report = {
  date: new Date().toISOString(),
  command: `node bench/e2e-peer.mjs ${process.argv.slice(2).join(' ')}`.trim(),
  machine: { cpu: os.cpus()[0]?.model, cores: os.cpus().length, node: process.version, fovea: fovea.version(), cpuIsa: info.cpuIsa, ort: require('onnxruntime-node/package.json').version },
  threads: opts.threads,
  model,
  classifier: classifier || null,
  repeats: opts.repeats,
  results,
};
const lines = [
  `fovea ${report.machine.fovea} vs onnxruntime-node ${report.machine.ort} (CPU EP), ${opts.threads} threads each, ${report.machine.cpu}; median of ${opts.repeats} after ${opts.warmup} warm-up, the two alternating`,
  `model ${path.relative(root, model)}${classifier ? `, classifier ${path.relative(root, classifier)}` : ''}`,
];
for (const r of results) {
  lines.push('', `${r.width}x${r.height}: fovea segment() total ${r.foveaTotal.toFixed(1)} ms (of which ${r.foveaOther.toFixed(1)} ms decode, pyramid, top-k, paste, NMS: no peer)`);
  lines.push(`${'stage'.padEnd(38)}${'fovea ms'.padStart(10)}${'ort ms'.padStart(10)}${'fovea/ort'.padStart(11)}`);
  for (const row of r.rows) lines.push(`${row.stage.padEnd(38)}${row.fovea.toFixed(1).padStart(10)}${row.ort.toFixed(1).padStart(10)}${(row.fovea / row.ort).toFixed(2).padStart(11)}`);
}
const text = lines.join('\n');
console.log(text);
const stem = opts.name || `cpu-e2e-peer-${report.date.slice(0, 10)}`;
fs.mkdirSync(opts.out, { recursive: true });
fs.writeFileSync(path.join(opts.out, `${stem}.json`), `${JSON.stringify(report, null, 2)}\n`);
fs.writeFileSync(path.join(opts.out, `${stem}.md`), `# ${stem}\n\nCommand: \`${report.command}\`\n\n\`\`\`\n${text}\n\`\`\`\n`);

// Grouped bars: fovea and onnxruntime per stage and size.
const bars = results.flatMap((r) => r.rows.slice(0, -1).map((row) => ({ label: `${r.width}x${r.height} ${row.stage.split(' ')[0]}`, ...row })));
const max = Math.max(...bars.flatMap((b) => [b.fovea, b.ort]), 1);
const bw = 26;
const svg = [
  `<svg xmlns="http://www.w3.org/2000/svg" width="${80 + bars.length * 90}" height="360" font-family="sans-serif" font-size="11">`,
  '<rect width="100%" height="100%" fill="white"/>',
  `<text x="10" y="18" font-size="13">fovea (blue) vs onnxruntime (orange), ms per stage, ${opts.threads} threads, ${report.machine.cpu}</text>`,
  ...bars.flatMap((b, i) => {
    const x = 60 + i * 90;
    const hf = (b.fovea / max) * 260;
    const ho = (b.ort / max) * 260;
    return [
      `<rect x="${x}" y="${300 - hf}" width="${bw}" height="${hf}" fill="#4c78a8"/>`,
      `<rect x="${x + bw + 2}" y="${300 - ho}" width="${bw}" height="${ho}" fill="#f58518"/>`,
      `<text x="${x}" y="${315}">${b.label.split(' ')[0]}</text>`,
      `<text x="${x}" y="${328}">${b.label.split(' ')[1]}</text>`,
      `<text x="${x}" y="${295 - Math.max(hf, ho)}">${(b.fovea / b.ort).toFixed(2)}x</text>`,
    ];
  }),
  '</svg>',
].join('\n');
fs.writeFileSync(path.join(opts.out, `${stem}.svg`), svg);
await sharp(Buffer.from(svg)).png().toFile(path.join(opts.out, `${stem}.png`));
console.log(`wrote ${path.join(path.relative(root, opts.out), stem)}.{json,md,svg,png}`);
