// Installs a folder's npm packages from its committed package-lock.json on first use: teacher-server
// (lib/install.mjs) and bench/ (bench/compare) each install their own this way.
//
//   node teacher-server/lib/npm-ci.mjs FOLDER
//
// Idempotent: a stamp in FOLDER/node_modules holding the lock's hash says the install is complete
// and current, so that a later run needs no network.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// An install takes seconds to a minute; a lock older than this was left by a killed process.
const STALE_LOCK_MS = 10 * 60 * 1000;
const DEFAULT_STAMP = '.npm-ci-installed';

function lockHash(folder) {
  const lock = fs.readFileSync(path.join(folder, 'package-lock.json'));
  return createHash('sha256').update(lock).digest('hex');
}

function stampPath(folder, stamp) {
  return path.join(folder, 'node_modules', stamp);
}

// True when the packages of folder's lock are installed (and complete() agrees).
export function isInstalled(folder, { stamp = DEFAULT_STAMP, complete = () => true } = {}) {
  try {
    return fs.readFileSync(stampPath(folder, stamp), 'utf8').trim() === lockHash(folder) &&
      complete();
  } catch {
    return false;
  }
}

function sleep(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

// Processes started side by side (tests do) must not run two `npm ci` in one folder: the first
// installs under a lock directory (mkdir is atomic), the others wait for it.
function withInstallLock(folder, work) {
  const lock = path.join(folder, '.install-lock');
  for (;;) {
    try {
      fs.mkdirSync(lock);
      break;
    } catch (err) {
      if (err.code !== 'EEXIST')
        throw err;
    }
    try {
      if (Date.now() - fs.statSync(lock).mtimeMs > STALE_LOCK_MS)
        fs.rmSync(lock, { recursive: true, force: true });
    } catch {
      // gone already: try again
    }
    sleep(200);
  }
  try {
    work();
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

// Runs `npm ci --ignore-scripts` in folder unless its lock's packages are installed, then
// finish() (e.g. to assemble files from the packages), then writes the stamp. The lifecycle
// scripts stay off: onnxruntime-node's would download CUDA libraries, sharp's a libvips build;
// neither is used. What it does goes to stderr, prefixed with name.
export function installFromLock(folder, { name, stamp = DEFAULT_STAMP, complete = () => true,
  finish = () => {} } = {}) {
  const options = { stamp, complete };
  if (isInstalled(folder, options))
    return;
  const log = (msg) => process.stderr.write(`${name ?? path.basename(folder)}: ${msg}\n`);
  withInstallLock(folder, () => {
    if (isInstalled(folder, options))
      return;
    log(`installing npm packages in ${folder} (npm ci --ignore-scripts)`);
    execFileSync('npm', ['ci', '--ignore-scripts', '--no-audit', '--no-fund'],
      { cwd: folder, stdio: ['ignore', process.stderr, 'inherit'] });
    finish(log);
    fs.writeFileSync(stampPath(folder, stamp), `${lockHash(folder)}\n`);
  });
}

// What a failed install says: the first line of the error, and how to see the rest.
export function installFailure(folder, err) {
  return `install failed: ${err.message.split('\n')[0]}\n` +
    '  (the first run needs the npm registry; retry, or run `npm ci --ignore-scripts` in ' +
    `${folder} to see why)`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const folder = path.resolve(process.argv[2] ?? '.');
  try {
    installFromLock(folder);
  } catch (err) {
    process.stderr.write(`${path.basename(folder)}: ${installFailure(folder, err)}\n`);
    process.exit(1);
  }
}
