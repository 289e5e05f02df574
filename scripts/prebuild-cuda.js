#!/usr/bin/env node
// Builds the CUDA variant of the prebuilt binary (cudart linked statically,
// SASS for sm_80 and sm_90 plus compute_90 PTX for newer GPUs) into
// variants/cuda/prebuilds/<platform>-<arch>/fovea.<libc>.node, where
// lib/native.ts looks for it. It loads on a machine without a GPU and then
// reports CUDA as unavailable; fovea picks it only where a probe finds a
// device. Needs nvcc.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const out = path.join(root, 'build-variant-cuda');
const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
const run = (cmd, args) => {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
};
run(process.execPath, [
  cmakeJs,
  'rebuild',
  '-O',
  out,
  '--CDFOVEA_CUDA=ON',
  '--CDFOVEA_NATIVE_TOOLS=OFF',
  '--CDCMAKE_CUDA_ARCHITECTURES=80-real;90',
]);
// The same libc tag as prebuildify --tag-libc gives the CPU binary.
const libc = process.report.getReport().header.glibcVersionRuntime ? 'glibc' : 'musl';
const dir = path.join(root, 'variants', 'cuda', 'prebuilds', `${process.platform}-${process.arch}`);
fs.mkdirSync(dir, { recursive: true });
const target = path.join(dir, `fovea.${libc}.node`);
fs.copyFileSync(path.join(out, 'Release', 'fovea.node'), target);
run('strip', ['--strip-unneeded', target]);
console.log(`fovea: CUDA variant at ${path.relative(root, target)} (${(fs.statSync(target).size / 2 ** 20).toFixed(1)} MiB)`);
