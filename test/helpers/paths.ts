import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root, whether the test runs from test/ or from the compiled dist/test/. */
export const REPO_ROOT = (() => {
  const here = dirname(fileURLToPath(import.meta.url));
  return here.includes(`${'/dist/'}`) ? resolve(here, '..', '..', '..') : resolve(here, '..', '..');
})();

/** The toolchain's interpreter: Debian's python3 with python3-torch (see README). */
export const PYTHON = process.env.ACM_PYTHON ?? '/usr/bin/python3';
