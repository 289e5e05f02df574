// Batch job: segment every image of a folder, in order, and write the COCO
// results JSON (as pycocotools' loadRes reads it). Images that fail are
// reported and skipped. Usage: node examples/batch-coco.mjs <folder> [out.json]
import { readdir, writeFile } from 'node:fs/promises';
import { extname, join, basename } from 'node:path';
import { createSegmenter, toCocoResults } from 'fovea';

const [folder, out = 'results.json'] = process.argv.slice(2);
if (!folder) throw new Error('usage: node examples/batch-coco.mjs <folder> [out.json]');
const files = (await readdir(folder)).filter((f) => /\.(jpe?g|png|webp)$/i.test(f)).sort().map((f) => join(folder, f));

const segmenter = await createSegmenter();
const results = [];
// Results and failures both arrive in input order: `next` is the file each belongs to.
let next = 0;
const onError = (err) => console.error(`${files[next++]}: ${err.message} (skipped)`);
try {
  for await (const r of segmenter.stream(files, { concurrency: 2, onError })) {
    const file = files[next++];
    const id = Number(basename(file, extname(file))) || next;
    results.push(...toCocoResults(id, r.instances));
    console.log(`${file}: ${r.instances.length} instances`);
  }
} finally {
  await segmenter.close();
}
await writeFile(out, JSON.stringify(results));
console.log(`${results.length} detections written to ${out}`);
