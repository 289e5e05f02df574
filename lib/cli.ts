#!/usr/bin/env node
import { Command } from 'commander';
import { convertFile } from './convert';
import { FoveaError } from './errors';
import { formatInfo, info, version } from './info';
import { inspectModel } from './model';
import { segmentCommand, type SegmentCommandOptions } from './cli-segment';
import { evaluate, formatEvalReport, type EvalCommandOptions } from './cli-eval';
import { formatBench, runBench, writeBench } from './bench';
import { exportOnnxFile, ONNX_PARTS, type OnnxPart } from './onnx-export';
import { segmenterOptionsFrom } from './cli-segment';

function fail(err: unknown): never {
  if (err instanceof FoveaError) {
    process.stderr.write(`fovea: ${err.message} (${err.code})\n`);
  } else {
    process.stderr.write(`fovea: ${err instanceof Error ? err.stack : String(err)}\n`);
  }
  process.exit(1);
}

/** The options every command that runs the pipeline takes. */
function withPipelineOptions(command: Command, modeHelp: string): Command {
  return command
    .option('--model <file>', 'proposal model (SharpMask/DeepMask .safetensors; default: the embedded model)')
    .option('--classifier <file>', "classifier (MultiPathNet .safetensors), or 'none'")
    .option('--device <device>', 'auto, cpu, cuda or cuda:N', 'auto')
    .option('--mode <mode>', modeHelp);
}

/** Per-call thresholds and limits, with their defaults for the command in the help. */
function withRunOptions(command: Command, defaults: { proposals: string; detections: string; score: string; nms: string }): Command {
  return command
    .option('--max-proposals <n>', `proposals taken from the score maps (${defaults.proposals})`)
    .option('--max-detections <n>', `instances kept per image (${defaults.detections})`)
    .option('--score-threshold <p>', `minimum score (${defaults.score})`)
    .option('--nms-threshold <iou>', `NMS IoU threshold (${defaults.nms})`)
    .option('--mask-threshold <p>', 'mask probability threshold (default 0.2)')
    .option('--max-side <px>', 'shrink larger images to this side for the proposal stage (default 600; 0 = never)')
    .option('--concurrency <n>', 'images decoded ahead of the one running', '2');
}

const program = new Command();
program.name('fovea').description('Instance segmentation: DeepMask, SharpMask, MultiPathNet').version(version());

program
  .command('info')
  .description('print the version, backends compiled in, CPU features used and CUDA devices found (or why none)')
  .option('--json', 'print JSON')
  .option('--model <file>', 'also load this weights file with the native loaders and describe it')
  .action(async (opts: { json?: boolean; model?: string }) => {
    const i = info();
    const model = opts.model ? await inspectModel(opts.model) : undefined;
    if (opts.json) {
      process.stdout.write(`${JSON.stringify(model ? { ...i, model } : i, null, 2)}\n`);
      return;
    }
    process.stdout.write(`${formatInfo(i)}\n`);
    if (model) {
      const trunk = model.trunk ? ` (${model.trunk})` : '';
      process.stdout.write(`model:        ${model.architecture}${trunk}, ${model.parameters} values in ${model.tensors} tensors\n`);
    }
  });

program
  .command('convert <model.t7> <out.safetensors>')
  .description('convert an official DeepMask, SharpMask or MultiPathNet (ResNet-18 integral) Torch7 checkpoint to a fovea safetensors file')
  .option('--dtype <dtype>', 'stored dtype: f32, f16 or bf16', 'f32')
  .action((input: string, output: string, opts: { dtype: string }) => {
    const dtype = ({ f32: 'F32', f16: 'F16', bf16: 'BF16' } as const)[opts.dtype as 'f32' | 'f16' | 'bf16'];
    if (dtype === undefined) throw new FoveaError('ERR_OPTIONS', `--dtype must be f32, f16 or bf16, got ${opts.dtype}`);
    const { tensors, config } = convertFile(input, output, { dtype });
    process.stdout.write(`${output}: ${String(config['architecture'])}, ${tensors.size} tensors (${opts.dtype})\n`);
  });

withRunOptions(
  withPipelineOptions(
    program
      .command('segment <images...>')
      .description('segment images (files or folders of images): one JSON per image, optional overlays and COCO results'),
    "'instances' (classified) or 'proposals' (class-agnostic)",
  ),
  { proposals: 'default 100', detections: 'default 100', score: 'default 0.5', nms: 'default 0.3 instances, 0.5 proposals' },
)
  .option('--out <dir>', 'folder for the outputs', '.')
  .option('--json', 'print each result as one JSON line instead of a summary')
  .option('--overlay', 'also write <name>.overlay.png with masks, boxes and labels drawn')
  .option('--coco <file>', 'also write all results as a COCO results JSON file')
  .action(async (images: string[], opts: SegmentCommandOptions) => {
    process.exitCode = await segmentCommand(images, opts);
  });

withRunOptions(
  withPipelineOptions(
    program
      .command('eval [images...]')
      .description('COCO evaluation on annotated images: AR@10/100/1000 of proposals, or AP/AR of instances, for masks and boxes'),
    "'instances' or 'proposals' (default: instances when there is a classifier)",
  ),
  { proposals: 'default 1000 in proposals mode, 100 otherwise', detections: 'default 1000 proposals, 100 instances', score: 'default 0.05 instances, 0 proposals', nms: 'default 0.3 instances, off for proposals' },
)
  .requiredOption('--gt <instances.json>', 'COCO instances ground truth (images matched by file name)')
  .option('--results <file>', 'evaluate this COCO results file instead of segmenting')
  .option('--iou-type <type>', 'segm, bbox or both', 'both')
  .option('--json', 'print the metrics as JSON')
  .action(async (images: string[], opts: EvalCommandOptions & { json?: boolean }) => {
    const report = await evaluate(images, opts);
    process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatEvalReport(report)}\n`);
  });

program
  .command('export-onnx <model.safetensors> <out.onnx>')
  .description('export a part of a fovea model as ONNX (opset 17), the same graph and weights as the native runtime')
  .requiredOption('--part <part>', `one of: ${ONNX_PARTS.join(', ')}`)
  .action((input: string, output: string, opts: { part: string }) => {
    const bytes = exportOnnxFile(input, output, { part: opts.part as OnnxPart });
    process.stdout.write(`${output}: ${opts.part}, ${bytes} bytes\n`);
  });

withPipelineOptions(
  program
    .command('bench')
    .description('benchmark segment() end to end per stage on a real photo at 640x480 and 1280x960; writes JSON and a chart'),
  "'instances' or 'proposals'",
)
  .option('--sizes <list>', 'image sizes, e.g. 640x480,1280x960', '640x480,1280x960')
  .option('--warmup <n>', 'untimed runs per size', '2')
  .option('--repeats <n>', 'timed runs per size', '10')
  .option('--stream <n>', 'images streamed for the throughput figure', '8')
  .option('--out <dir>', 'folder for <name>.json/.svg/.png', 'bench/results')
  .option('--name <name>', 'file name stem (default: cpu-e2e-<date>)')
  .option('--json', 'print the report as JSON')
  .action(
    async (opts: {
      model?: string;
      classifier?: string;
      device?: string;
      mode?: string;
      sizes: string;
      warmup: string;
      repeats: string;
      stream: string;
      out: string;
      name?: string;
      json?: boolean;
    }) => {
      const sizes = opts.sizes.split(',').map((s) => {
        const m = /^(\d+)x(\d+)$/.exec(s.trim());
        if (!m) throw new FoveaError('ERR_OPTIONS', `--sizes: expected WIDTHxHEIGHT, got '${s}'`);
        return [Number(m[1]), Number(m[2])] as [number, number];
      });
      const { mode, ...segmenter } = segmenterOptionsFrom(opts);
      const report = await runBench({
        segmenter,
        ...(mode ? { mode } : {}),
        sizes,
        warmup: Number(opts.warmup),
        repeats: Number(opts.repeats),
        streamImages: Number(opts.stream),
      });
      const name = opts.name ?? `${report.device.split(':')[0]}-e2e-${report.date.slice(0, 10)}`;
      const files = await writeBench(report, opts.out, name);
      process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatBench(report)}\nwrote ${files.join(', ')}\n`);
    },
  );

program.parseAsync(process.argv).catch(fail);
