import { createSegmenter } from 'fovea';
import sharp from 'sharp';
const [model, classifier, maxSide] = process.argv.slice(2);
const seg = await createSegmenter({ model, classifier });
const img = await sharp('/work/shared/fixtures/images/darknet/dog.jpg').resize(1024, 768, { fit: 'fill' }).png().toBuffer();
const before = process.memoryUsage().rss;
const r = await seg.segment(img, { maxSide: Number(maxSide), scoreThreshold: 0 });
console.log(JSON.stringify({ instances: r.instances.length, timings: r.timings, rssBeforeMB: before / 2**20 }));
await seg.close();
