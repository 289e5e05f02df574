// A small HTTP service: POST an image (any format sharp reads) to /segment and
// get the instances back as JSON. One Segmenter is shared by all requests; it
// queues them, so concurrent uploads are safe. Usage:
//   node examples/http-service.mjs        # PORT=8080 by default
//   curl --data-binary @photo.jpg http://localhost:8080/segment
import { createServer } from 'node:http';
import { createSegmenter, FoveaError } from 'fovea';

const MAX_UPLOAD = 20 * 1024 * 1024;
const segmenter = await createSegmenter({ limitInputPixels: 40_000_000 });

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_UPLOAD) throw Object.assign(new Error('upload too large'), { status: 413 });
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

const server = createServer(async (req, res) => {
  const reply = (status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  if (req.method !== 'POST' || req.url !== '/segment') return reply(404, { error: 'POST an image to /segment' });
  // A client that goes away cancels its segmentation.
  const abort = new AbortController();
  res.on('close', () => abort.abort());
  try {
    const image = await readBody(req);
    const result = await segmenter.segment(image, { signal: abort.signal });
    reply(200, result);
  } catch (err) {
    if (err.status) return reply(err.status, { error: err.message });
    const status = err instanceof FoveaError && (err.code === 'ERR_INPUT' || err.code === 'ERR_OPTIONS') ? 400 : 500;
    if (!res.destroyed) reply(status, { error: err.message, code: err.code });
  }
});

server.listen(Number(process.env.PORT ?? 8080), () => {
  console.log(`listening on http://localhost:${server.address().port}/segment`);
});
const shutdown = async () => {
  server.close();
  await segmenter.close();
};
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
