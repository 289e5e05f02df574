#!/usr/bin/env node
// Stands in for node-gyp when prebuildify builds the prebuilt binary
// (PREBUILD_NODE_GYP): the prebuild comes from the one real build, CMake via
// cmake-js, CPU backend only (the CUDA variant is built separately).
// prebuildify's node-gyp arguments (rebuild, --target, --devdir...) do not
// apply to an N-API build and are ignored.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.join(__dirname, '..');
const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
const r = spawnSync(process.execPath, [cmakeJs, 'rebuild', '--CDFOVEA_CUDA=OFF', '--CDFOVEA_NATIVE_TOOLS=OFF'], {
  cwd: root,
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
