#!/usr/bin/env node
// How segment()'s cost grows: time and peak memory versus image size (0.25 to
// 4 megapixels, maxSide 0 so the proposal stage sees every pixel) and versus
// the number of proposals (10 to 1000, at 1 megapixel). Each point runs in a
// fresh child process so its peak resident memory is its own.
//
//   node bench/scaling.mjs [--model f] [--classifier f] [--repeats 3] [--out bench/results] [--name stem]
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from './args.mjs';

const require = createRequire(import.meta.url);
const self = fileURLToPath(import.meta.url);
const root = path.join(path.dirname(self), '..');
const opts = parseArgs(process.argv.slice(2), { model: '', classifier: '', repeats: 3, out: path.join(root, 'bench', 'results'), name: '', point: '' });

if (opts.point) {
  // Child: one measurement, printed as JSON.
  const fovea = require(path.join(root, 'dist', 'index.js'));
  const sharp = require('sharp');
  const { BENCH_PHOTO } = require(path.join(root, 'dist', 'bench.js'));
  const { megapixels, proposals } = JSON.parse(opts.point);
  const width = Math.round(Math.sqrt((megapixels * 1e6 * 4) / 3));
  const height = Math.round((width * 3) / 4);
  const seg = await fovea.createSegmenter({ ...(opts.model ? { model: opts.model } : {}), ...(opts.classifier ? { classifier: opts.classifier } : {}) });
  const image = await sharp(BENCH_PHOTO).resize(width, height, { fit: 'fill' }).jpeg({ quality: 90 }).toBuffer();
  const call = { maxSide: 0, maxProposals: proposals, scoreThreshold: 0 };
  await seg.segment(image, call);
  const times = [];
  for (let i = 0; i < opts.repeats; i++) times.push((await seg.segment(image, call)).timings.total);
  await seg.close();
  times.sort((a, b) => a - b);
  console.log(
    JSON.stringify({
      megapixels,
      proposals,
      width,
      height,
      ms: times[Math.floor((times.length - 1) / 2)],
      peakRssMB: process.resourceUsage().maxRSS / 1024,
      peakTensorMB: fovea.memoryStats().peakBytesInUse / 2 ** 20,
    }),
  );
  process.exit(0);
}

function measure(point) {
  const args = [self, '--point', JSON.stringify(point), '--repeats', String(opts.repeats)];
  if (opts.model) args.push('--model', opts.model);
  if (opts.classifier) args.push('--classifier', opts.classifier);
  const out = JSON.parse(execFileSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 1 << 20 }).trim().split('\n').at(-1));
  console.log(`${point.megapixels} MP, ${point.proposals} proposals: ${out.ms.toFixed(0)} ms, peak RSS ${out.peakRssMB.toFixed(0)} MB, tensors ${out.peakTensorMB.toFixed(0)} MB`);
  return out;
}

const bySize = [0.25, 0.5, 1, 2, 4].map((megapixels) => measure({ megapixels, proposals: 100 }));
const byProposals = [10, 30, 100, 300, 1000].map((proposals) => measure({ megapixels: 1, proposals }));

function lineChart(title, points, x, xLabel) {
  const W = 560;
  const H = 300;
  const L = 60;
  const T = 40;
  const maxX = Math.max(...points.map(x));
  const maxMs = Math.max(...points.map((p) => p.ms));
  const maxMb = Math.max(...points.map((p) => p.peakRssMB));
  const px = (v) => L + (v / maxX) * (W - 2 * L);
  const line = (key, max, color) =>
    `<polyline fill="none" stroke="${color}" stroke-width="2" points="${points.map((p) => `${px(x(p)).toFixed(1)},${(T + H - (p[key] / max) * H).toFixed(1)}`).join(' ')}"/>` +
    points.map((p) => `<circle cx="${px(x(p)).toFixed(1)}" cy="${(T + H - (p[key] / max) * H).toFixed(1)}" r="3" fill="${color}"/>`).join('');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H + T + 50}" font-family="sans-serif" font-size="11">`,
    '<rect width="100%" height="100%" fill="white"/>',
    `<text x="10" y="18" font-size="13">${title}</text>`,
    `<line x1="${L}" y1="${T + H}" x2="${W - L}" y2="${T + H}" stroke="#333"/>`,
    line('ms', maxMs, '#4c78a8'),
    line('peakRssMB', maxMb, '#f58518'),
    ...points.map((p) => `<text x="${px(x(p)).toFixed(1)}" y="${T + H + 15}" text-anchor="middle">${x(p)}</text>`),
    `<text x="${W / 2}" y="${T + H + 32}" text-anchor="middle">${xLabel}</text>`,
    `<text x="${L}" y="${T - 6}" fill="#4c78a8">time (max ${maxMs.toFixed(0)} ms)</text>`,
    `<text x="${W - L}" y="${T - 6}" fill="#f58518" text-anchor="end">peak RSS (max ${maxMb.toFixed(0)} MB)</text>`,
    '</svg>',
  ].join('\n');
}

const sharp = require('sharp');
const stem = opts.name || `cpu-scaling-${new Date().toISOString().slice(0, 10)}`;
fs.mkdirSync(opts.out, { recursive: true });
const report = {
  date: new Date().toISOString(),
  command: `node bench/scaling.mjs ${process.argv.slice(2).join(' ')}`.trim(),
  machine: { cpu: os.cpus()[0]?.model, cores: os.cpus().length, node: process.version },
  model: opts.model || 'embedded',
  classifier: opts.classifier || (opts.model ? null : 'embedded'),
  repeats: opts.repeats,
  bySize,
  byProposals,
};
fs.writeFileSync(path.join(opts.out, `${stem}.json`), `${JSON.stringify(report, null, 2)}\n`);
for (const [suffix, svg] of [
  ['size', lineChart('segment() vs image size (100 proposals, maxSide 0)', bySize, (p) => p.megapixels, 'megapixels')],
  ['proposals', lineChart('segment() vs proposals (1 MP)', byProposals, (p) => p.proposals, 'proposals')],
]) {
  fs.writeFileSync(path.join(opts.out, `${stem}-${suffix}.svg`), svg);
  await sharp(Buffer.from(svg)).png().toFile(path.join(opts.out, `${stem}-${suffix}.png`));
}
console.log(`wrote ${path.relative(root, path.join(opts.out, stem))}.json, -size.svg/.png, -proposals.svg/.png`);
