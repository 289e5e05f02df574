#!/usr/bin/env bash
# Checks what a user gets from the npm tarball:
#  1. installed into an empty folder with install scripts skipped (npm 11's
#     default for dependencies), the prebuilt binary loads from CJS, ESM and the CLI;
#  2. with the prebuilt removed, loading fails with ERR_NATIVE_BINARY and says how to build;
#  3. `npm rebuild fovea` then builds the CPU backend with node-gyp (no cmake-js
#     in a user's install) from binding.gyp, and it loads.
#  Between 1 and 2: the CUDA variant is chosen only where a probe finds a device.
# Run after `npm run build:ts && npm run prebuild && npm run prebuild:cuda`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$root"
tarball=$(npm pack --silent --pack-destination "$work" | tail -n 1)
echo "packed $tarball ($(du -k "$work/$tarball" | cut -f1) KiB)"
listing=$(tar -tzf "$work/$tarball")
grep -qx 'package/prebuilds/linux-x64/fovea.glibc.node' <<<"$listing" || { echo "tarball has no prebuilt binary"; exit 1; }

mkdir "$work/app" && cd "$work/app"
npm init -y >/dev/null
npm install --ignore-scripts --no-audit --no-fund "$work/$tarball" >/dev/null
node -e "const f = require('fovea'); const i = f.info(); if (!i.binary.includes('prebuilds')) throw new Error('loaded ' + i.binary); console.log('cjs ok:', i.binary)"
node --input-type=module -e "import { info } from 'fovea'; console.log('esm ok:', info().backends.join(','))"
npx --no-install fovea info | head -n 1

# The CUDA variant (npm run prebuild:cuda): fovea probes it in a child process and loads it
# only where it finds a device; forced with FOVEA_VARIANT=cuda it loads without a GPU too and
# says why CUDA is unavailable.
if grep -qx 'package/variants/cuda/prebuilds/linux-x64/fovea.glibc.node' <<<"$listing"; then
    node -e "const i = require('fovea').info(); const want = i.cuda.available ? 'cuda' : 'cpu';
        if (i.variant.variant !== want || !/CUDA variant/.test(i.variant.reason)) throw new Error(JSON.stringify(i.variant));
        console.log('variant ok:', i.variant.variant, '-', i.variant.reason)"
    FOVEA_VARIANT=cuda node -e "const i = require('fovea').info();
        if (!i.binary.includes('variants/cuda') || !i.cuda.compiled) throw new Error(i.binary + ' ' + JSON.stringify(i.cuda));
        console.log('cuda variant loads:', i.cuda.available ? 'device found' : i.cuda.reason)"
else
    echo "tarball has no CUDA variant (npm run prebuild:cuda)"
    [ -z "${CI:-}" ] || exit 1
fi

pkg="$work/app/node_modules/fovea"
mv "$pkg/prebuilds" "$work/prebuilds.moved"
out=$(node -e "try { require('fovea').info(); console.log('LOADED') } catch (e) { console.log(e.code); console.log(e.message) }")
echo "$out" | head -n 1 | grep -qx ERR_NATIVE_BINARY || { echo "expected ERR_NATIVE_BINARY, got: $out"; exit 1; }
echo "$out" | grep -q 'npx node-gyp rebuild' || { echo "error does not say how to build: $out"; exit 1; }
echo "no-prebuild error ok"

npm rebuild fovea --foreground-scripts >"$work/rebuild.log" 2>&1 || { tail -n 40 "$work/rebuild.log"; exit 1; }
grep -q 'node-gyp' "$work/rebuild.log" || { echo "expected a node-gyp build"; tail -n 20 "$work/rebuild.log"; exit 1; }
node -e "const i = require('fovea').info(); if (!i.binary.includes('build/Release')) throw new Error(i.binary); console.log('node-gyp build ok:', i.backends.join(','), i.cpuIsa)"
echo "package check passed"
