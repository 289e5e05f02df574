/**
 * `fovea eval --gt instances.json <images…|dir>`: segments the annotated
 * images (matched to the ground truth by file name) and prints COCO's tables:
 * class-agnostic AR@10/100/1000 in proposals mode, AP/AR per class in
 * instances mode, for masks and boxes. `--results` evaluates an existing
 * COCO results file instead of segmenting.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SingleBar } from 'cli-progress';
import { listImages, segmenterOptionsFrom, type SegmentCommandOptions } from './cli-segment';
import { evaluateCoco, formatCocoStats, toCocoResults, type CocoDataset, type CocoEvalResult, type CocoResult } from './coco';
import { FoveaError } from './errors';
import { createSegmenter } from './segment';

export interface EvalCommandOptions extends Omit<SegmentCommandOptions, 'out' | 'overlay' | 'coco'> {
  gt: string;
  results?: string;
  iouType: string;
}

function readJson(file: string, what: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new FoveaError('ERR_INPUT', `${what} ${file}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new FoveaError('ERR_INPUT', `${what} ${file} is not JSON: ${(err as Error).message}`);
  }
}

export interface EvalReport {
  mode: 'instances' | 'proposals';
  images: number;
  detections: number;
  tables: CocoEvalResult[];
}

/** Segments the ground truth's images found among `inputs`. */
async function segmentImages(
  gt: CocoDataset,
  inputs: string[],
  opts: EvalCommandOptions,
): Promise<{ imageIds: number[]; results: CocoResult[]; mode: 'instances' | 'proposals' }> {
  const byName = new Map<string, string>();
  for (const file of listImages(inputs)) byName.set(path.basename(file), file);
  const work = gt.images.flatMap((img) => {
    const file = img.file_name === undefined ? undefined : byName.get(path.basename(img.file_name));
    return file ? [{ id: img.id, file }] : [];
  });
  if (work.length === 0) {
    throw new FoveaError('ERR_INPUT', `none of the ${gt.images.length} images of ${opts.gt} was found among the inputs (matched by file name)`);
  }
  if (work.length < gt.images.length) {
    process.stderr.write(`fovea: evaluating the ${work.length} of ${gt.images.length} ground-truth images found among the inputs\n`);
  }
  const flags = segmenterOptionsFrom(opts);
  const segmenter = await createSegmenter(flags);
  const mode = flags.mode ?? (segmenter.hasClassifier ? 'instances' : 'proposals');
  // Evaluation defaults: every proposal up to AR@1000, no threshold, no NMS (how
  // DeepMask's AR is measured); a low class threshold for AP.
  const callOptions =
    mode === 'proposals'
      ? {
          maxProposals: flags.maxProposals ?? 1000,
          maxDetections: flags.maxDetections ?? 1000,
          scoreThreshold: flags.scoreThreshold ?? 0,
          nmsThreshold: flags.nmsThreshold ?? 1,
        }
      : { scoreThreshold: flags.scoreThreshold ?? 0.05 };
  const bar = process.stderr.isTTY ? new SingleBar({ format: 'eval [{bar}] {value}/{total} images | {eta_formatted} left', hideCursor: true }) : undefined;
  bar?.start(work.length, 0);
  const results: CocoResult[] = [];
  let next = 0;
  try {
    const files = work.map((w) => w.file);
    const onError = (e: FoveaError) => {
      throw new FoveaError(e.code, `${files[next]}: ${e.message}`, { cause: e });
    };
    for await (const r of segmenter.stream(files, { ...callOptions, concurrency: Number(opts.concurrency), onError })) {
      const found = toCocoResults(work[next++]!.id, r.instances);
      // Proposals are class-agnostic: one category for all.
      results.push(...(mode === 'proposals' ? found.map((d) => ({ ...d, category_id: 1 })) : found));
      bar?.update(next);
    }
  } finally {
    bar?.stop();
    await segmenter.close();
  }
  return { imageIds: work.map((w) => w.id), results, mode };
}

export async function evaluate(inputs: string[], opts: EvalCommandOptions): Promise<EvalReport> {
  const gt = readJson(opts.gt, 'ground truth') as CocoDataset;
  if (!gt || !Array.isArray(gt.images) || !Array.isArray(gt.annotations) || !Array.isArray(gt.categories)) {
    throw new FoveaError('ERR_INPUT', `${opts.gt} is not a COCO instances file (images, annotations, categories)`);
  }
  const iouTypes = opts.iouType === 'both' ? (['segm', 'bbox'] as const) : [opts.iouType];
  for (const t of iouTypes) {
    if (t !== 'segm' && t !== 'bbox') throw new FoveaError('ERR_OPTIONS', `--iou-type must be segm, bbox or both, got ${t}`);
  }
  let imageIds: number[];
  let results: CocoResult[];
  let mode: 'instances' | 'proposals';
  if (opts.results) {
    if (inputs.length > 0) throw new FoveaError('ERR_OPTIONS', 'give either images to segment or --results, not both');
    results = readJson(opts.results, 'results') as CocoResult[];
    if (!Array.isArray(results)) throw new FoveaError('ERR_INPUT', `${opts.results} is not a COCO results array`);
    mode = opts.mode === 'proposals' ? 'proposals' : 'instances';
    imageIds = [...new Set(results.map((r) => r.image_id))];
  } else {
    if (inputs.length === 0) throw new FoveaError('ERR_OPTIONS', 'give the annotated images (files or folders), or --results');
    ({ imageIds, results, mode } = await segmentImages(gt, inputs, opts));
  }
  const proposals = mode === 'proposals';
  const tables = iouTypes.map((iouType) =>
    evaluateCoco(gt, results, {
      iouType: iouType as 'segm' | 'bbox',
      useCats: !proposals,
      maxDets: proposals ? [10, 100, 1000] : [1, 10, 100],
      imageIds,
    }),
  );
  return { mode, images: imageIds.length, detections: results.length, tables };
}

export function formatEvalReport(report: EvalReport): string {
  const head = `${report.images} images, ${report.detections} ${report.mode === 'proposals' ? 'proposals (class-agnostic)' : 'detections'}`;
  return [head, ...report.tables.map((t) => `\n${t.iouType === 'segm' ? 'masks' : 'boxes'} (iouType=${t.iouType}):\n${formatCocoStats(t)}`)].join('\n');
}
