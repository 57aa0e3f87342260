// Entry point of the reference teacher (teacher-server/run installs the packages first).
// Prints one line on stdout when listening: "teacher-server: listening on http://HOST:PORT/v2 ..."
// (https:// with --tls-cert).
import fs from 'node:fs';
import { MODEL_PATH, isInstalled } from './lib/install.mjs';
import { parseOptions, USAGE } from './lib/options.mjs';
import { createTeacherServer } from './lib/server.mjs';

function log(message) {
  process.stderr.write(`teacher-server: ${message}\n`);
}

function readToken(file) {
  let token;
  try {
    token = fs.readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new Error(`--token-file ${file}: cannot read it (${err.code ?? err.message})`);
  }
  if (!token || /\s/.test(token))
    throw new Error(`--token-file ${file}: expected one token on one line, without spaces`);
  return Buffer.from(token);
}

// https:// with --tls-cert and --tls-key (PEM).
function readTls(options) {
  const read = (flag, file) => {
    try {
      return fs.readFileSync(file);
    } catch (err) {
      throw new Error(`--${flag} ${file}: cannot read it (${err.code ?? err.message})`);
    }
  };
  return { cert: read('tls-cert', options.tlsCert), key: read('tls-key', options.tlsKey) };
}

async function loadModel(options) {
  if (options.model === 'isnet') {
    const { IsnetModel } = await import('./lib/isnet.mjs');
    return IsnetModel.load(MODEL_PATH, options.threads);
  }
  const { ReplayModel } = await import('./lib/replay.mjs');
  return ReplayModel.load(options.video, options.labels);
}

function main() {
  let options;
  try {
    options = parseOptions(process.argv.slice(2));
    options.token = options.tokenFile ? readToken(options.tokenFile) : null;
    options.tls = options.tlsCert ? readTls(options) : null;
    if (options.model === 'isnet' && !isInstalled())
      throw new Error('the ISNet model is not assembled: start the server with teacher-server/run');
  } catch (err) {
    log(err.message);
    process.stderr.write(`${USAGE}\n`);
    process.exit(2);
  }
  // Checked before listening, so that a typo never shows up as a server that stays unready.
  for (const file of options.model === 'replay' ? [options.video, options.labels] : []) {
    if (!fs.existsSync(file)) {
      log(`${file}: no such file`);
      process.exit(1);
    }
  }
  const started = Date.now();
  const modelPromise = loadModel(options);
  let server;
  try {
    server = createTeacherServer(options, modelPromise, log);
  } catch (err) {  // a key that is not the certificate's, a file that is not PEM
    log(`--tls-cert ${options.tlsCert} / --tls-key ${options.tlsKey}: ${err.message}`);
    process.exit(2);
  }
  modelPromise.then((model) => {
    const detail = model.frames ? ` (${model.frames} frames)` : ` (${options.threads} threads)`;
    log(`model '${options.name}' ready: ${options.model}${detail}, output ${options.output}, ` +
      `loaded in ${Date.now() - started} ms`);
  }, (err) => {
    log(`cannot load the model: ${err.message}`);
    process.exit(1);
  });
  server.on('error', (err) => {
    log(`cannot listen on ${options.host}:${options.port}: ${err.message}`);
    process.exit(1);
  });
  server.listen(options.port, options.host, () => {
    const { address, port } = server.address();
    const host = address.includes(':') ? `[${address}]` : address;
    const scheme = options.tls ? 'https' : 'http';
    process.stdout.write(`teacher-server: listening on ${scheme}://${host}:${port}/v2 (model ` +
      `'${options.name}': ${options.model}, output ${options.output})\n`);
  });
  for (const signal of ['SIGINT', 'SIGTERM'])
    process.on(signal, () => {
      server.close();
      server.closeAllConnections();
      process.exit(0);
    });
}

main();
