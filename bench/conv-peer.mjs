#!/usr/bin/env node
// Side-by-side CPU benchmark of one convolution layer at a time: fovea's
// conv2d (through the addon) against onnxruntime-node's CPU execution provider
// running a one-node ONNX model of the same layer, same inputs, same thread
// count, in the same process and run. The layer shapes come from the native
// benchmark (`fovea_bench --list-json`), so both benches time the same list.
//
//   node bench/conv-peer.mjs [--threads 2] [--size 224] [--net resnet50,vgg16]
//                            [--repeats 7] [--rounds 3] [--filter 3x3] [--json out.json]
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { parseArgs } from './args.mjs';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');


const opts = parseArgs(process.argv.slice(2), { threads: 2, size: 224, net: 'resnet50,vgg16', repeats: 7, rounds: 3, filter: '', json: '', bench: '' });
// Both libraries read their thread count before first use.
process.env.FOVEA_NUM_THREADS = String(opts.threads);
const ort = require('onnxruntime-node');
const { onnx } = require('onnx-proto');
const { native } = require(path.join(root, 'dist', 'native.js'));
const { info } = require(path.join(root, 'dist', 'index.js'));

const benchExe = opts.bench || path.join(root, 'build', 'fovea_bench');
const layers = JSON.parse(
  execFileSync(benchExe, ['--list-json', '--size', String(opts.size), '--net', opts.net], { encoding: 'utf8' }),
).filter((l) => !opts.filter || l.name.includes(opts.filter) || `${l.kh}x${l.kw}`.includes(opts.filter));

function randomArray(n, seed) {
  const a = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    a[i] = ((s >>> 0) / 4294967296) * 2 - 1;
  }
  return a;
}

function tensorProto(name, dims, data) {
  return onnx.TensorProto.create({
    name,
    dims,
    dataType: onnx.TensorProto.DataType.FLOAT,
    rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  });
}

function valueInfo(name, dims) {
  return onnx.ValueInfoProto.create({
    name,
    type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim: dims.map((d) => ({ dimValue: d })) } } },
  });
}

function convModel(l, w, b) {
  const ints = (name, v) => ({ name, type: onnx.AttributeProto.AttributeType.INTS, ints: v });
  const node = onnx.NodeProto.create({
    opType: 'Conv',
    input: ['x', 'w', 'b'],
    output: ['y'],
    attribute: [
      ints('kernel_shape', [l.kh, l.kw]),
      ints('strides', [l.stride, l.stride]),
      ints('pads', [l.pad, l.pad, l.pad, l.pad]),
      ints('dilations', [l.dilation, l.dilation]),
      { name: 'group', type: onnx.AttributeProto.AttributeType.INT, i: l.groups },
    ],
  });
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'fovea-bench',
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: l.name,
      node: [node],
      initializer: [tensorProto('w', [l.oc, l.c / l.groups, l.kh, l.kw], w), tensorProto('b', [l.oc], b)],
      input: [valueInfo('x', [l.n, l.c, l.h, l.w])],
      output: [valueInfo('y', [l.n, l.oc, l.oh, l.ow])],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const now = () => Number(process.hrtime.bigint()) / 1e6;

// Times a and b in turn, `repeats` times each after one warm-up call of each.
async function timeAlternating(a, b, repeats) {
  await a();  // warm-up: first-call allocation and packing
  await b();
  const ta = [];
  const tb = [];
  for (let i = 0; i < repeats; i++) {
    for (const [fn, times] of [[a, ta], [b, tb]]) {
      const t0 = now();
      await fn();
      times.push(now() - t0);
    }
  }
  const stats = (t) => ({ median: median(t), min: Math.min(...t), max: Math.max(...t) });
  return [stats(ta), stats(tb)];
}

// Calls alternate, fovea then onnxruntime, layer by layer and repeat by
// repeat, so load from other tenants of a shared machine falls on both alike.
// onnxruntime's intra-op threads must not spin for that (its default
// allow_spinning busy-waits after each run and took fovea's cores, making
// fovea look up to 2x slower when interleaved), so spinning is off; fovea's
// own pool spins only 50 us before it sleeps. Rounds repeat the whole list; each layer keeps
// the lowest median over the rounds for each library.
const repeatsFor = (l) => (l.gflop > 10 ? Math.max(3, Math.ceil(opts.repeats / 2)) : opts.repeats);
const cases = [];
for (const l of layers) {
  const x = randomArray(l.n * l.c * l.h * l.w, 1);
  const w = randomArray((l.oc * l.c * l.kh * l.kw) / l.groups, 2).map((v) => v * 0.05);
  const b = randomArray(l.oc, 3);
  const attrs = { strides: [l.stride, l.stride], pads: [l.pad, l.pad, l.pad, l.pad], dilations: [l.dilation, l.dilation], groups: l.groups };
  const inputs = [
    { data: x, shape: [l.n, l.c, l.h, l.w] },
    { data: w, shape: [l.oc, l.c / l.groups, l.kh, l.kw] },
    { data: b, shape: [l.oc] },
  ];
  const session = await ort.InferenceSession.create(convModel(l, w, b), {
    intraOpNumThreads: opts.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  });
  const feeds = { x: new ort.Tensor('float32', x, [l.n, l.c, l.h, l.w]) };
  // Weights fixed beforehand on both sides: onnxruntime holds them as
  // initializers (and packs them when the session is made), fovea as a
  // prepared op (packed on the first call and kept, as a model's weights).
  // Both run on the JS thread: onnxruntime-node's session.run computes
  // synchronously (inside a setImmediate), so fovea's runSync, not its
  // worker-thread run(), times the same thing.
  const prepared = native().prepareOp('conv2d', inputs.slice(1), attrs);
  const runFovea = async () => prepared.runSync(inputs.slice(0, 1));
  cases.push({ l, session, feeds, runFovea, fovea: undefined, ort: undefined });
}
const better = (a, b) => (!b || a.median < b.median ? a : b);
for (let round = 0; round < opts.rounds; round++) {
  for (const c of cases) {
    const [f, o] = await timeAlternating(c.runFovea, () => c.session.run(c.feeds), repeatsFor(c.l));
    c.fovea = better(f, c.fovea);
    c.ort = better(o, c.ort);
  }
}
const rows = [];
for (const { l, session, feeds, runFovea, fovea: tf, ort: to } of cases) {
  const ours = (await runFovea()).data;
  const theirs = (await session.run(feeds)).y;
  await session.release();
  let maxErr = 0;
  let maxRef = 0;
  for (let i = 0; i < theirs.data.length; i++) {
    maxErr = Math.max(maxErr, Math.abs(ours[i] - theirs.data[i]));
    maxRef = Math.max(maxRef, Math.abs(theirs.data[i]));
  }
  const row = {
    ...l,
    foveaMs: tf.median,
    foveaSpread: [tf.min, tf.max],
    ortMs: to.median,
    ortSpread: [to.min, to.max],
    ratio: tf.median / to.median,
    maxRelErr: maxErr / (maxRef || 1),
  };
  rows.push(row);
  console.log(
    `${l.net.padEnd(9)} ${l.name.padEnd(22)} ${`${l.c}->${l.oc} ${l.kh}x${l.kw}/${l.stride} @${l.h}x${l.w}`.padEnd(26)}` +
      ` fovea ${tf.median.toFixed(2).padStart(8)} ms  ort ${to.median.toFixed(2).padStart(8)} ms  ratio ${row.ratio.toFixed(2)}` +
      `  (${(l.gflop / (tf.median / 1e3)).toFixed(0)} vs ${(l.gflop / (to.median / 1e3)).toFixed(0)} GFLOP/s, rel err ${row.maxRelErr.toExponential(1)})`,
  );
}

const geo = Math.exp(rows.reduce((s, r) => s + Math.log(r.ratio), 0) / rows.length);
const slower = rows.filter((r) => r.ratio > 1);
console.log(`\n${rows.length} layers, ${opts.threads} threads, best median of ${opts.rounds} rounds: geometric mean fovea/ort time ratio ${geo.toFixed(3)}; ` +
  `fovea slower on ${slower.length}: ${slower.map((r) => `${r.net}/${r.name} ${r.ratio.toFixed(2)}`).join(', ') || 'none'}`);
if (opts.json) {
  const machine = { cpu: os.cpus()[0]?.model, cores: os.cpus().length, node: process.version, fovea: info().cpuIsa, ort: ort.env.versions };
  fs.writeFileSync(opts.json, JSON.stringify({ command: ['node', path.relative(root, process.argv[1]), ...process.argv.slice(2)].join(' '), date: new Date().toISOString(), machine, threads: opts.threads, rounds: opts.rounds, rows, geomeanRatio: geo }, null, 2));
}
