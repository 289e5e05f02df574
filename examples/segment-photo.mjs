// Segment one photo with the embedded model and save an overlay next to it.
// Usage: node examples/segment-photo.mjs photo.jpg
import { writeFile } from 'node:fs/promises';
import { segment, renderOverlay } from 'fovea';

const file = process.argv[2];
const result = await segment(file);
for (const o of result.instances) console.log(`${o.label} ${o.score.toFixed(2)} at [${o.box.map(Math.round)}]`);
await writeFile(`${file}.overlay.png`, await renderOverlay(file, result.instances));
