// Smoke tests of examples/: each script runs in a child process against the
// built package (dist/, which `npm install` builds) with the embedded model.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_MODEL } from '../lib/options';

const root = path.join(__dirname, '..');
const examples = path.join(root, 'examples');
const photo = path.join(__dirname, 'fixtures', 'photos', 'dog.jpg');
const ready = fs.existsSync(DEFAULT_MODEL) && fs.existsSync(path.join(root, 'dist', 'index.js'));
if (!ready) console.warn(`Skipping examples/: ${DEFAULT_MODEL} or dist/ is missing (run npm install)`);
const itReady = ready ? it : it.skip;

function copyPhoto(dir: string, name = 'photo.jpg'): string {
  const file = path.join(dir, name);
  fs.copyFileSync(photo, file);
  return file;
}

describe('examples', () => {
  itReady('segment-photo.mjs prints instances and writes an overlay', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fovea-ex-'));
    const file = copyPhoto(dir);
    const r = spawnSync(process.execPath, [path.join(examples, 'segment-photo.mjs'), file], { encoding: 'utf8', timeout: 120_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const png = fs.readFileSync(`${file}.overlay.png`);
    expect(png.subarray(1, 4).toString()).toBe('PNG');
  });

  itReady('batch-coco.mjs writes COCO results for a folder and reports a bad file', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fovea-ex-'));
    copyPhoto(dir, '000000000001.jpg');
    copyPhoto(dir, '000000000002.jpg');
    fs.writeFileSync(path.join(dir, '000000000003.jpg'), 'not a jpeg');
    const out = path.join(dir, 'results.json');
    const r = spawnSync(process.execPath, [path.join(examples, 'batch-coco.mjs'), dir, out], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/000000000003\.jpg: .*skipped/);
    const results = JSON.parse(fs.readFileSync(out, 'utf8')) as Array<{ image_id: number; segmentation: { size: number[] } }>;
    const ids = new Set(results.map((d) => d.image_id));
    expect([...ids].every((id) => id === 1 || id === 2)).toBe(true);
    expect(results.filter((d) => d.image_id === 1).length).toBe(results.filter((d) => d.image_id === 2).length);
  });

  itReady('http-service.mjs segments an upload and answers 400 for junk', async () => {
    const child = spawn(process.execPath, [path.join(examples, 'http-service.mjs')], { env: { ...process.env, PORT: '0' } });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /listening on (\S+)/.exec(out);
          if (m) resolve(m[1] as string);
        });
        child.on('exit', (code) => reject(new Error(`server exited with ${code}`)));
      });
      const ok = await fetch(url, { method: 'POST', body: fs.readFileSync(photo) });
      expect(ok.status).toBe(200);
      const result = (await ok.json()) as { width: number; instances: unknown[] };
      expect(result.width).toBeGreaterThan(0);
      expect(Array.isArray(result.instances)).toBe(true);
      const bad = await fetch(url, { method: 'POST', body: 'junk' });
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as { code: string }).code).toBe('ERR_INPUT');
    } finally {
      child.kill('SIGTERM');
    }
  });
});
