// The CLI as a shell user runs it (dist/cli.js in a child process): outputs,
// exit codes and messages of `segment` and `eval`.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.join(__dirname, '..');
const cli = path.join(root, 'dist', 'cli.js');
const golden = path.join(__dirname, 'fixtures', 'golden');
const photo = path.join(__dirname, 'fixtures', 'photos', 'dog.jpg');
const modelArgs = [
  '--model',
  path.join(golden, 'sharpmask-resnet18-d16.safetensors'),
  '--classifier',
  path.join(golden, 'multipathnet-resnet18-d16.safetensors'),
];
const built = fs.existsSync(cli);
if (!built) console.warn('Skipping the CLI tests: dist/cli.js is missing (run npm install or npm run build:ts)');
const itBuilt = built ? it : it.skip;

function fovea(args: string[]) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 120_000 });
}

function folderWithPhotos(names: string[]): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fovea-cli-'));
  for (const n of names) fs.copyFileSync(photo, path.join(dir, n));
  return dir;
}

describe('fovea segment', () => {
  itBuilt('writes one JSON per image, overlays and COCO results; exit 0', () => {
    const dir = folderWithPhotos(['000000000007.jpg', 'b.jpg']);
    const out = path.join(dir, 'out');
    const r = fovea(['segment', dir, ...modelArgs, '--out', out, '--overlay', '--coco', path.join(out, 'coco.json'), '--score-threshold', '0.05']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/000000000007\.jpg: \d+ instances? .* on cpu/);
    const one = JSON.parse(fs.readFileSync(path.join(out, 'b.json'), 'utf8')) as { file: string; width: number; instances: unknown[] };
    expect(one.file).toBe(path.join(dir, 'b.jpg'));
    expect(one.width).toBe(288);
    expect(fs.readFileSync(path.join(out, 'b.overlay.png')).subarray(1, 4).toString()).toBe('PNG');
    const coco = JSON.parse(fs.readFileSync(path.join(out, 'coco.json'), 'utf8')) as Array<{ image_id: number }>;
    // COCO-style names give their number as image id, others their position.
    expect(new Set(coco.map((d) => d.image_id))).toEqual(new Set([7, 2]));
  });

  itBuilt('--json prints one JSON line per image', () => {
    const dir = folderWithPhotos(['a.jpg']);
    const r = fovea(['segment', path.join(dir, 'a.jpg'), ...modelArgs, '--out', dir, '--json', '--mode', 'proposals', '--max-proposals', '5', '--score-threshold', '0', '--nms-threshold', '1']);
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect((JSON.parse(lines[0]!) as { instances: unknown[] }).instances).toHaveLength(5);
  });

  itBuilt('goes on past a bad image, reports it on stderr and exits 1', () => {
    const dir = folderWithPhotos(['a.jpg', 'c.jpg']);
    fs.writeFileSync(path.join(dir, 'b.jpg'), 'not a jpeg');
    const r = fovea(['segment', dir, ...modelArgs, '--out', path.join(dir, 'out')]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/b\.jpg: could not decode .*\(ERR_INPUT\)/);
    expect(fs.existsSync(path.join(dir, 'out', 'a.json'))).toBe(true);
    expect(fs.existsSync(path.join(dir, 'out', 'c.json'))).toBe(true);
  });

  itBuilt('bad options and missing files: a message naming the problem and exit 1', () => {
    let r = fovea(['segment', photo, ...modelArgs, '--max-proposals', 'lots']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/--max-proposals must be a number.*ERR_OPTIONS/);
    r = fovea(['segment', '/no/such/file.jpg', ...modelArgs]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/no such file or folder \(ERR_INPUT\)/);
    r = fovea(['segment', photo, '--model', '/no/such/model.safetensors']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/ERR_WEIGHTS/);
  });
});

describe('fovea eval', () => {
  itBuilt('segments the ground truth images and prints both tables; --results evaluates a file', () => {
    const dir = folderWithPhotos(['x.jpg', 'y.jpg']);
    const gt = {
      images: [
        { id: 1, file_name: 'x.jpg', width: 288, height: 384 },
        { id: 2, file_name: 'y.jpg', width: 288, height: 384 },
        { id: 3, file_name: 'absent.jpg', width: 288, height: 384 },
      ],
      categories: [{ id: 1, name: 'object' }],
      annotations: [1, 2].map((id) => ({
        id,
        image_id: id,
        category_id: 1,
        iscrowd: 0,
        area: 120 * 150,
        bbox: [80, 150, 120, 150],
        segmentation: [[80, 150, 200, 150, 200, 300, 80, 300]],
      })),
    };
    const gtFile = path.join(dir, 'gt.json');
    fs.writeFileSync(gtFile, JSON.stringify(gt));
    const r = fovea(['eval', '--gt', gtFile, dir, ...modelArgs, '--mode', 'proposals', '--max-proposals', '50']);
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/evaluating the 2 of 3 ground-truth images/);
    expect(r.stdout).toMatch(/2 images, 100 proposals \(class-agnostic\)/);
    expect(r.stdout).toMatch(/masks \(iouType=segm\)[\s\S]*Average Recall {5}\(AR\) @\[ IoU=0\.50:0\.95 \| area= {3}all \| maxDets=100 \] = \d\.\d{3}/);
    expect(r.stdout).toMatch(/boxes \(iouType=bbox\)/);
    // The ground truth itself as results: perfect recall.
    const perfect = gt.annotations.map((a) => ({ image_id: a.image_id, category_id: 1, bbox: a.bbox, score: 1 }));
    const resultsFile = path.join(dir, 'results.json');
    fs.writeFileSync(resultsFile, JSON.stringify(perfect));
    const p = fovea(['eval', '--gt', gtFile, '--results', resultsFile, '--iou-type', 'bbox', '--json']);
    expect(p.status).toBe(0);
    const report = JSON.parse(p.stdout) as { tables: Array<{ named: Record<string, number> }> };
    expect(report.tables[0]!.named['AP']).toBe(1);
  });
});
