// `npm install` hook. Loading never depends on it (npm 11 skips dependencies'
// install scripts unless approved): it only builds from source when no
// prebuilt or local binary loads. CMake (the full build) where available,
// node-gyp (CPU backend) otherwise.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.join(__dirname, '..');

function loads() {
  try {
    require('node-gyp-build')(root);
    return true;
  } catch {
    return false;
  }
}

function run(cmd, args) {
  console.log(`fovea: ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', shell: false });
  return r.status === 0;
}

function has(cmd) {
  return spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0;
}

function resolves(mod) {
  try {
    return require.resolve(mod, { paths: [root] });
  } catch {
    return null;
  }
}

if (process.env.FOVEA_SKIP_BUILD) process.exit(0);
if (!process.env.FOVEA_FORCE_BUILD && loads()) process.exit(0);

const cmakeJs = resolves('cmake-js/bin/cmake-js');
if (cmakeJs && has('cmake')) {
  const cuda = process.env.FOVEA_CUDA || 'AUTO';
  // Users need the addon only; the test and benchmark executables are for developers.
  if (run(process.execPath, [cmakeJs, 'compile', `--CDFOVEA_CUDA=${cuda}`, '--CDFOVEA_NATIVE_TOOLS=OFF'])) process.exit(0);
  console.error('fovea: the CMake build failed; trying node-gyp (CPU backend only)');
}
const nodeGyp = process.env.npm_config_node_gyp || resolves('node-gyp/bin/node-gyp.js');
if (nodeGyp && run(process.execPath, [nodeGyp, 'rebuild'])) process.exit(0);
console.error('fovea: could not build the native addon; see the messages above. `npx fovea info` explains how to build it.');
process.exit(1);
