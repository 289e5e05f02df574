/**
 * `fovea bench`: segment() end to end on a real photo at fixed sizes, per
 * stage (median and p95 after warm-up), streaming throughput, and peak
 * resident memory. Writes JSON, an SVG chart and its PNG rendering.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { FoveaError } from './errors';
import { info, version } from './info';
import type { Mode, SegmenterOptions, SegmentOptions } from './options';
import { createSegmenter, type Timings } from './segment';

export const BENCH_PHOTO = path.join(__dirname, '..', 'test', 'fixtures', 'photos', 'dog.jpg');

export interface BenchOptions {
  segmenter: SegmenterOptions;
  mode?: Mode;
  /** Other per-call options of every timed segment() (e.g. maxProposals, scoreThreshold). */
  call?: Omit<SegmentOptions, 'mode' | 'signal' | 'onProgress'>;
  /** [width, height] pairs. Default 640x480 and 1280x960. */
  sizes?: Array<[number, number]>;
  warmup?: number;
  repeats?: number;
  /** Images pushed through Segmenter.stream() for the throughput figure. */
  streamImages?: number;
  photo?: string;
}

export interface Spread {
  median: number;
  p95: number;
  min: number;
}

export interface SizeResult {
  width: number;
  height: number;
  instances: number;
  stages: Record<string, Spread>;
  total: Spread;
  imagesPerSecond: number;
  peakRssMB: number;
}

export interface BenchReport {
  date: string;
  command: string;
  machine: { cpu: string; cores: number; memoryGB: number; node: string; fovea: string; cpuIsa: string; threads: number };
  model: string;
  classifier: string | null;
  mode: Mode;
  device: string;
  warmup: number;
  repeats: number;
  results: SizeResult[];
}

/** Median, p95 and minimum of some timings. */
export function spread(values: number[]): Spread {
  const s = [...values].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)] as number;
  return { median: at(0.5), p95: at(0.95), min: s[0] as number };
}

export async function runBench(options: BenchOptions): Promise<BenchReport> {
  const sizes = options.sizes ?? [
    [640, 480],
    [1280, 960],
  ];
  const warmup = options.warmup ?? 2;
  const repeats = options.repeats ?? 10;
  const streamImages = options.streamImages ?? 8;
  for (const [name, v, min] of [
    ['warmup', warmup, 0],
    ['repeats', repeats, 1],
    ['streamImages', streamImages, 1],
  ] as const) {
    if (!Number.isInteger(v) || v < min || v > 10000) throw new FoveaError('ERR_OPTIONS', `${name} must be an integer >= ${min}, got ${v}`);
  }
  const segmenter = await createSegmenter(options.segmenter);
  const { hasClassifier } = segmenter;
  const mode: Mode = options.mode ?? (hasClassifier ? 'instances' : 'proposals');
  const results: SizeResult[] = [];
  try {
    for (const [width, height] of sizes) {
      // The same photo at each size (stretched), encoded once: decode is part of the measured work.
      const image = await sharp(options.photo ?? BENCH_PHOTO).resize(width, height, { fit: 'fill' }).jpeg({ quality: 90 }).toBuffer();
      const timings: Timings[] = [];
      let instances = 0;
      for (let i = 0; i < warmup + repeats; i++) {
        const r = await segmenter.segment(image, { ...options.call, mode });
        if (i >= warmup) timings.push(r.timings);
        instances = r.instances.length;
      }
      const stageNames = [...new Set(timings.flatMap((t) => Object.keys(t)))].filter((k) => k !== 'total');
      const stages: Record<string, Spread> = {};
      for (const s of stageNames) stages[s] = spread(timings.map((t) => (t as Record<string, number>)[s] ?? 0));
      const start = performance.now();
      let n = 0;
      for await (const r of segmenter.stream(
        Array.from({ length: streamImages }, () => image),
        { ...options.call, mode, concurrency: 2 },
      )) {
        n += r.width > 0 ? 1 : 0;
      }
      const imagesPerSecond = n / ((performance.now() - start) / 1000);
      results.push({
        width,
        height,
        instances,
        stages,
        total: spread(timings.map((t) => t.total)),
        imagesPerSecond,
        peakRssMB: process.resourceUsage().maxRSS / 1024,
      });
    }
  } finally {
    await segmenter.close();
  }
  const i = info();
  return {
    date: new Date().toISOString(),
    command: process.argv.slice(1).join(' '),
    machine: {
      cpu: os.cpus()[0]?.model ?? 'unknown',
      cores: os.cpus().length,
      memoryGB: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
      fovea: version(),
      cpuIsa: i.cpuIsa,
      threads: i.threads,
    },
    model: options.segmenter.model ?? 'embedded',
    classifier: !hasClassifier ? null : (options.segmenter.classifier ?? 'embedded'),
    mode,
    device: segmenter.device,
    warmup,
    repeats,
    results,
  };
}

const STAGE_ORDER = ['decode', 'pyramid', 'trunk', 'proposals', 'refine', 'paste', 'classify', 'postprocess'];
const STAGE_COLORS = ['#8dd3c7', '#ffffb3', '#bebada', '#fb8072', '#80b1d3', '#fdb462', '#b3de69', '#fccde5'];

export function formatBench(report: BenchReport): string {
  const lines = [
    `fovea ${report.machine.fovea} on ${report.machine.cpu} (${report.machine.cores} cores, ${report.machine.cpuIsa}, ${report.machine.threads} threads), node ${report.machine.node}`,
    `model ${report.model}, classifier ${report.classifier ?? 'none'}, mode ${report.mode}, device ${report.device}; ${report.warmup} warm-up + ${report.repeats} runs; ms median (p95)`,
  ];
  const header = ['stage', ...report.results.map((r) => `${r.width}x${r.height}`)];
  const rows: string[][] = [header];
  for (const s of STAGE_ORDER) {
    if (!report.results.some((r) => r.stages[s])) continue;
    rows.push([s, ...report.results.map((r) => (r.stages[s] ? `${r.stages[s]!.median.toFixed(1)} (${r.stages[s]!.p95.toFixed(1)})` : '-'))]);
  }
  rows.push(['total', ...report.results.map((r) => `${r.total.median.toFixed(1)} (${r.total.p95.toFixed(1)})`)]);
  rows.push(['images/s (stream)', ...report.results.map((r) => r.imagesPerSecond.toFixed(2))]);
  rows.push(['peak RSS MB', ...report.results.map((r) => r.peakRssMB.toFixed(0))]);
  rows.push(['instances', ...report.results.map((r) => String(r.instances))]);
  const widths = header.map((_, c) => Math.max(...rows.map((row) => (row[c] ?? '').length)));
  for (const row of rows) lines.push(row.map((cell, c) => cell.padEnd(widths[c] as number)).join('  '));
  return lines.join('\n');
}

/** A stacked bar per image size: median ms of each stage. */
export function benchChartSvg(report: BenchReport): string {
  const barWidth = 120;
  const gap = 60;
  const height = 320;
  const left = 60;
  const top = 40;
  const maxTotal = Math.max(...report.results.map((r) => STAGE_ORDER.reduce((a, s) => a + (r.stages[s]?.median ?? 0), 0)), 1);
  const width = left + report.results.length * (barWidth + gap) + 160;
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height + top + 60}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${left}" y="20" font-size="14">${esc(`fovea segment() per stage, median ms (${report.machine.cpu}, ${report.device})`)}</text>`,
  ];
  report.results.forEach((r, i) => {
    const x = left + i * (barWidth + gap);
    let y = top + height;
    STAGE_ORDER.forEach((s, k) => {
      const ms = r.stages[s]?.median ?? 0;
      const h = (ms / maxTotal) * height;
      y -= h;
      if (h > 0) parts.push(`<rect x="${x}" y="${y.toFixed(1)}" width="${barWidth}" height="${h.toFixed(1)}" fill="${STAGE_COLORS[k]}" stroke="#333" stroke-width="0.5"/>`);
    });
    parts.push(`<text x="${x + barWidth / 2}" y="${top + height + 18}" text-anchor="middle">${r.width}x${r.height}</text>`);
    parts.push(`<text x="${x + barWidth / 2}" y="${(y - 6).toFixed(1)}" text-anchor="middle">${r.total.median.toFixed(0)} ms</text>`);
  });
  STAGE_ORDER.forEach((s, k) => {
    const x = left + report.results.length * (barWidth + gap);
    const y = top + k * 20;
    parts.push(`<rect x="${x}" y="${y}" width="12" height="12" fill="${STAGE_COLORS[k]}" stroke="#333" stroke-width="0.5"/>`);
    parts.push(`<text x="${x + 18}" y="${y + 11}">${s}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}

/** Writes <dir>/<name>.json, .svg and .png; returns their paths. */
export async function writeBench(report: BenchReport, dir: string, name: string): Promise<string[]> {
  fs.mkdirSync(dir, { recursive: true });
  const base = path.join(dir, name);
  const svg = benchChartSvg(report);
  fs.writeFileSync(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`);
  fs.writeFileSync(`${base}.svg`, svg);
  await sharp(Buffer.from(svg)).png().toFile(`${base}.png`);
  return [`${base}.json`, `${base}.svg`, `${base}.png`];
}
