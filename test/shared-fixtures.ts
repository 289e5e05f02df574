import * as fs from 'node:fs';
import * as path from 'node:path';
import { it } from 'vitest';

/** ../shared/fixtures, next to the checkout on developer machines and in CI. */
export const SHARED_FIXTURES = path.join(__dirname, '..', '..', 'shared', 'fixtures');

/**
 * A test that needs a file under ../shared/fixtures: skipped with a visible
 * warning when the folder is absent (a fresh clone), failed in CI, where it
 * must be present.
 */
export function itShared(name: string, rel: string, fn: (file: string) => void | Promise<void>): void {
  const file = path.join(SHARED_FIXTURES, rel);
  if (fs.existsSync(file)) {
    it(name, () => fn(file));
  } else if (process.env['CI']) {
    it(name, () => {
      throw new Error(`missing shared fixture ${file}`);
    });
  } else {
    console.warn(`Skipping "${name}": ${file} is absent (../shared/fixtures is not next to this checkout)`);
    it.skip(`${name} (skipped: ${rel} absent)`, () => undefined);
  }
}
