#!/usr/bin/env node
import { Command } from 'commander';
import { FoveaError } from './errors';
import { formatInfo, info, version } from './info';

function fail(err: unknown): never {
  if (err instanceof FoveaError) {
    process.stderr.write(`fovea: ${err.message} (${err.code})\n`);
  } else {
    process.stderr.write(`fovea: ${err instanceof Error ? err.stack : String(err)}\n`);
  }
  process.exit(1);
}

const program = new Command();
program.name('fovea').description('Instance segmentation: DeepMask, SharpMask, MultiPathNet').version(version());

program
  .command('info')
  .description('print the version, backends compiled in, CPU features used and CUDA devices found (or why none)')
  .option('--json', 'print JSON')
  .action((opts: { json?: boolean }) => {
    const i = info();
    process.stdout.write(opts.json ? `${JSON.stringify(i, null, 2)}\n` : `${formatInfo(i)}\n`);
  });

program.parseAsync(process.argv).catch(fail);
