// Decode the fixture-dataset JPEGs once into uint8 HxWx3 .npy files (Python has no JPEG
// decoder here: no PIL/cv2). Usage: node tools/train/decode_images.js OUT_DIR
// Decodes every image listed in shared/fixtures/datasets/splits/*.txt (train AND val: the
// val images are only used by eval_proposals.py, never by the trainer). No EXIF rotation
// (the annotations refer to the stored pixel grid).
const fs = require('fs');
const path = require('path');
const sharp = require('sharp');
const ROOT = process.env.FOVEA_DATASETS || path.resolve(__dirname, '../../../shared/fixtures/datasets');
const out = process.argv[2] || path.resolve(__dirname, 'runs/cache');
function npy(buf, h, w) {
  let hdr = `{'descr': '|u1', 'fortran_order': False, 'shape': (${h}, ${w}, 3), }`;
  const total = 10 + hdr.length + 1;
  hdr += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const pre = Buffer.alloc(10);
  Buffer.from('\x93NUMPY', 'latin1').copy(pre, 0);
  pre[6] = 1; pre[7] = 0; pre.writeUInt16LE(hdr.length, 8);
  return Buffer.concat([pre, Buffer.from(hdr, 'latin1'), buf]);
}
(async () => {
  const splits = fs.readdirSync(path.join(ROOT, 'splits')).filter((f) => f.endsWith('.txt'));
  let n = 0;
  for (const s of splits) {
    const ds = s.replace(/_(train|val)\.txt$/, '');
    const files = fs.readFileSync(path.join(ROOT, 'splits', s), 'utf8').split('\n').filter(Boolean);
    for (const f of files) {
      const dst = path.join(out, ds, f.replace(/\.[a-z]+$/i, '.npy'));
      if (fs.existsSync(dst)) continue;
      fs.mkdirSync(path.dirname(dst), { recursive: true });
      const { data, info } = await sharp(path.join(ROOT, ds, f)).removeAlpha().toColourspace('srgb')
        .raw().toBuffer({ resolveWithObject: true });
      if (info.channels !== 3) throw new Error(`${f}: ${info.channels} channels`);
      fs.writeFileSync(dst, npy(data, info.height, info.width));
      n++;
    }
  }
  console.log(`decoded ${n} images into ${out}`);
})().catch((e) => { console.error(e); process.exit(1); });
