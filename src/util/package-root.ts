// Where the package is installed: the addon, package.json and the vocabularies are found from it.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

/** Repository (or installed package) root: the first folder above this file with a package.json. */
export const packageRoot: string = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('rrr-native: cannot find the package root');
    dir = up;
  }
  return dir;
})();
