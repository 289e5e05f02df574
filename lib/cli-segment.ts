/**
 * `fovea segment <images…|dir>`: segments files in input order with one
 * Segmenter, writes one JSON per image (and overlays, and a COCO results
 * file on request), shows a progress bar for more than one image, and keeps
 * going past images that fail (exit code 1 at the end if any did).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SingleBar } from 'cli-progress';
import { toCocoResults } from './coco';
import { FoveaError } from './errors';
import type { Mode, SegmenterOptions } from './options';
import { renderOverlay } from './render';
import { createSegmenter, type SegmentResult } from './segment';

export const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.avif', '.heic', '.bmp']);

export interface SegmentCommandOptions {
  model?: string;
  classifier?: string;
  device?: string;
  mode?: string;
  out: string;
  json?: boolean;
  overlay?: boolean;
  coco?: string;
  maxProposals?: string;
  maxDetections?: string;
  scoreThreshold?: string;
  nmsThreshold?: string;
  maskThreshold?: string;
  maxSide?: string;
  concurrency: string;
}

/** Files named on the command line, folders expanded to their images (sorted by name, not recursive). */
export function listImages(args: string[]): string[] {
  const files: string[] = [];
  for (const arg of args) {
    let stat: fs.Stats;
    try {
      stat = fs.statSync(arg);
    } catch {
      throw new FoveaError('ERR_INPUT', `${arg}: no such file or folder`);
    }
    if (stat.isDirectory()) {
      const found = fs
        .readdirSync(arg)
        .filter((name) => IMAGE_EXTENSIONS.has(path.extname(name).toLowerCase()))
        .sort()
        .map((name) => path.join(arg, name));
      if (found.length === 0) throw new FoveaError('ERR_INPUT', `${arg}: no image files (${[...IMAGE_EXTENSIONS].join(' ')})`);
      files.push(...found);
    } else {
      files.push(arg);
    }
  }
  return files;
}

function numberArg(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new FoveaError('ERR_OPTIONS', `${flag} must be a number, got '${value}'`);
  return n;
}

/** The SegmenterOptions the flags ask for (validated again by createSegmenter). */
export function segmenterOptionsFrom(opts: Omit<SegmentCommandOptions, 'out' | 'concurrency'>): SegmenterOptions {
  const o: Record<string, unknown> = {};
  if (opts.model !== undefined) o['model'] = opts.model;
  if (opts.classifier !== undefined) o['classifier'] = opts.classifier === 'none' ? null : opts.classifier;
  if (opts.device !== undefined) o['device'] = opts.device;
  if (opts.mode !== undefined) o['mode'] = opts.mode as Mode;
  const numbers: Array<[keyof Omit<SegmentCommandOptions, 'out' | 'concurrency'>, string, string]> = [
    ['maxProposals', 'maxProposals', '--max-proposals'],
    ['maxDetections', 'maxDetections', '--max-detections'],
    ['scoreThreshold', 'scoreThreshold', '--score-threshold'],
    ['nmsThreshold', 'nmsThreshold', '--nms-threshold'],
    ['maskThreshold', 'maskThreshold', '--mask-threshold'],
    ['maxSide', 'maxSide', '--max-side'],
  ];
  for (const [flag, key, name] of numbers) {
    const v = numberArg(opts[flag] as string | undefined, name);
    if (v !== undefined) o[key] = v;
  }
  return o as SegmenterOptions;
}

/** COCO image id of a file: its number for COCO-style names (000000139.jpg), else its position from 1. */
export function imageIdOf(file: string, index: number): number {
  const stem = path.basename(file, path.extname(file));
  return /^\d{1,15}$/.test(stem) ? Number(stem) : index + 1;
}

function summary(file: string, r: SegmentResult): string {
  const top = r.instances
    .slice(0, 5)
    .map((i) => `${i.label} ${i.score.toFixed(2)}`)
    .join(', ');
  const more = r.instances.length > 5 ? `, …` : '';
  return `${file}: ${r.instances.length} instance${r.instances.length === 1 ? '' : 's'}${top ? ` (${top}${more})` : ''} in ${r.timings.total.toFixed(0)} ms on ${r.device}`;
}

export async function segmentCommand(inputs: string[], opts: SegmentCommandOptions): Promise<number> {
  const files = listImages(inputs);
  const concurrency = Number(opts.concurrency);
  const segmenter = await createSegmenter(segmenterOptionsFrom(opts));
  fs.mkdirSync(opts.out, { recursive: true });
  const bar =
    files.length > 1 && process.stderr.isTTY
      ? new SingleBar({ format: 'segment [{bar}] {value}/{total} images | {eta_formatted} left | {file}', hideCursor: true })
      : undefined;
  bar?.start(files.length, 0, { file: '' });
  const coco: unknown[] = [];
  const failures: string[] = [];
  // Results and failures both arrive in input order: `index` is the next file's.
  let index = 0;
  const log = (line: string, stream: NodeJS.WriteStream) => {
    if (bar) bar.stop();
    stream.write(`${line}\n`);
    if (bar) bar.start(files.length, index, { file: '' });
  };
  try {
    const names = new Map<string, number>();
    const stem = (file: string) => {
      // Same base name in two folders: keep both outputs.
      const base = path.basename(file, path.extname(file));
      const seen = names.get(base) ?? 0;
      names.set(base, seen + 1);
      return seen === 0 ? base : `${base}-${seen}`;
    };
    const onError = (e: FoveaError, i: number) => {
      failures.push(`${files[i]}: ${e.message} (${e.code})`);
      log(`fovea: ${files[i]}: ${e.message} (${e.code})`, process.stderr);
      index = i + 1;
      bar?.update(index, { file: path.basename(files[i] ?? '') });
    };
    for await (const result of segmenter.stream(files, { concurrency, onError })) {
      const file = files[index] as string;
      const base = stem(file);
      const record = { file, ...result };
      fs.writeFileSync(path.join(opts.out, `${base}.json`), `${JSON.stringify(record)}\n`);
      if (opts.overlay) fs.writeFileSync(path.join(opts.out, `${base}.overlay.png`), await renderOverlay(file, result.instances));
      if (opts.coco) coco.push(...toCocoResults(imageIdOf(file, index), result.instances));
      if (opts.json) process.stdout.write(`${JSON.stringify(record)}\n`);
      else if (!bar) process.stdout.write(`${summary(file, result)}\n`);
      index++;
      bar?.update(index, { file: path.basename(file) });
    }
  } finally {
    bar?.stop();
    await segmenter.close();
  }
  if (opts.coco) fs.writeFileSync(opts.coco, `${JSON.stringify(coco)}\n`);
  if (bar) process.stderr.write(`fovea: ${files.length - failures.length} of ${files.length} images segmented into ${opts.out}\n`);
  return failures.length > 0 ? 1 : 0;
}
