// Reliability under load: many concurrent calls (good and bad inputs) on one
// Segmenter and on Segmenters in worker threads, and aborts at random points.
// Every good call must equal its result alone, every bad one fail with its
// code, the event loop must stay responsive, and no tensor may outlive its call.
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FoveaError } from '../lib/errors';
import { memoryStats } from '../lib/info';
import type { ImageInput, RawImage } from '../lib/image';
import { createSegmenter, type Segmenter, type SegmentResult } from '../lib/segment';

const golden = path.join(__dirname, 'fixtures', 'golden');
const model = path.join(golden, 'sharpmask-resnet18-d16.safetensors');
const classifier = path.join(golden, 'multipathnet-resnet18-d16.safetensors');
const options = { scales: [0.5, 1], maxProposals: 8, scoreThreshold: 0.02 };

function picture(width: number, height: number, seed: number): RawImage {
  const data = new Uint8Array(width * height * 3);
  let s = seed * 2654435761;
  for (let i = 0; i < data.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    data[i] = (i % 3 === 0 ? (i / 3) % width : s >>> 24) & 255;
  }
  return { data, width, height, channels: 3 };
}

// Deterministic PRNG for the mix and the abort points.
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const goods = [0, 1, 2, 3, 4, 5, 6, 7].map((k) => picture(40 + k * 9, 36 + k * 5, k));
const bads: Array<[ImageInput, string]> = [
  [Buffer.from('not an image at all'), 'ERR_INPUT'],
  [Buffer.alloc(0), 'ERR_INPUT'],
  [{ data: new Uint8Array(10), width: 4, height: 4, channels: 3 }, 'ERR_INPUT'],
  [Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 16, 74, 70, 73, 70]), 'ERR_INPUT'],
];

let seg: Segmenter;
const alone: SegmentResult[] = [];
beforeAll(async () => {
  seg = await createSegmenter({ model, classifier });
  for (const g of goods) alone.push(await seg.segment(g, options));
});
afterAll(async () => {
  await seg.close();
});

describe('load', () => {
  it('200 concurrent calls, good and bad mixed: each as alone, the event loop responsive, no tensor left', async () => {
    const before = memoryStats().bytesInUse;
    const random = rng(7);
    const plan = Array.from({ length: 200 }, () => (random() < 0.2 ? -1 - Math.floor(random() * bads.length) : Math.floor(random() * goods.length)));
    let worstDelay = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      worstDelay = Math.max(worstDelay, now - last - 10);
      last = now;
    }, 10);
    const settled = await Promise.allSettled(plan.map((p) => seg.segment(p >= 0 ? goods[p]! : bads[-1 - p]![0], options)));
    clearInterval(timer);
    plan.forEach((p, i) => {
      const s = settled[i]!;
      if (p >= 0) {
        expect(s.status).toBe('fulfilled');
        expect((s as PromiseFulfilledResult<SegmentResult>).value.instances).toEqual(alone[p]!.instances);
      } else {
        expect(s.status).toBe('rejected');
        const e = (s as PromiseRejectedResult).reason as FoveaError;
        expect(e).toBeInstanceOf(FoveaError);
        expect(e.code).toBe(bads[-1 - p]![1]);
      }
    });
    console.log(`load: 200 calls (${plan.filter((p) => p < 0).length} bad), worst timer delay ${worstDelay.toFixed(1)} ms`);
    expect(worstDelay).toBeLessThan(250);
    expect(memoryStats().bytesInUse).toBe(before);
  });

  it('Segmenters in worker threads give the same results as the main thread', async () => {
    const dist = path.join(__dirname, '..', 'dist', 'index.js');
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      const { createSegmenter } = require(${JSON.stringify(dist)});
      (async () => {
        const seg = await createSegmenter({ model: workerData.model, classifier: workerData.classifier });
        const out = [];
        for (let round = 0; round < 3; round++) {
          const rs = await Promise.all(workerData.goods.map((g) => seg.segment(g, workerData.options)));
          out.push(rs.map((r) => r.instances));
        }
        await seg.close();
        parentPort.postMessage(out);
      })().catch((e) => parentPort.postMessage({ error: e.message }));`;
    const workers = [0, 1, 2].map(
      () =>
        new Promise<unknown>((resolve, reject) => {
          const w = new Worker(code, { eval: true, workerData: { model, classifier, options, goods } });
          w.once('message', resolve);
          w.once('error', reject);
        }),
    );
    const outs = (await Promise.all(workers)) as SegmentResult['instances'][][][];
    for (const out of outs) {
      expect(out).toHaveLength(3);
      for (const round of out) round.forEach((instances, i) => expect(instances).toEqual(alone[i]!.instances));
    }
  });
});

describe('abort', () => {
  it('500 calls aborted at random points: each ERR_ABORTED or complete and correct; nothing leaks', async () => {
    const before = memoryStats().bytesInUse;
    const random = rng(11);
    let aborted = 0;
    const runs = Array.from({ length: 500 }, (_, i) => {
      const c = new AbortController();
      const k = i % goods.length;
      const when = random();
      if (when < 0.1) c.abort();
      else if (when < 0.55) setTimeout(() => c.abort(), Math.floor(random() * 40));
      else if (when < 0.8) {
        let n = 0;
        const at = Math.floor(random() * 4);
        return seg
          .segment(goods[k]!, { ...options, signal: c.signal, onProgress: () => (n++ === at ? c.abort() : undefined) })
          .then((r) => ({ k, r }), (e: unknown) => ({ k, e }));
      }
      return seg.segment(goods[k]!, { ...options, signal: c.signal }).then((r) => ({ k, r }), (e: unknown) => ({ k, e }));
    });
    for (const out of await Promise.all(runs)) {
      if ('e' in out) {
        expect(out.e).toBeInstanceOf(FoveaError);
        expect((out.e as FoveaError).code).toBe('ERR_ABORTED');
        aborted++;
      } else {
        expect(out.r.instances).toEqual(alone[out.k]!.instances);
      }
    }
    console.log(`abort: ${aborted} of 500 calls aborted, the rest complete`);
    expect(aborted).toBeGreaterThan(100);
    expect(aborted).toBeLessThan(500);
    expect(memoryStats().bytesInUse).toBe(before);
    // The Segmenter still works.
    expect((await seg.segment(goods[0]!, options)).instances).toEqual(alone[0]!.instances);
  });
});
