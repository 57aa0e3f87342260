// The HTTP side of the teacher: KServe v2 routes, bearer token, a bounded queue in front of the
// model (one inference at a time), /metrics, and the fault injection of replay test servers.
import { timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { encodeInferResponse, parseInferRequest, RequestError } from './kserve.mjs';
import { frameFromInputs, INPUT_NAME } from './frame.mjs';
import { Metrics } from './metrics.mjs';

const OUTPUT_NAME = 'mask';
const MODEL_VERSION = '1';
// 64 MiB holds a 4K RGB frame with room to spare.
const MAX_BODY = 64 << 20;
const SERVER_NAME = 'gst-distill-teacher';
const SERVER_VERSION = '0.1.0';

// mulberry32: a small seeded generator, so that fault runs repeat exactly.
function seededRandom(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Runs one job at a time; at most maxQueue wait behind it, more get 503 with Retry-After.
class InferenceQueue {
  constructor(maxQueue, metrics) {
    this.maxQueue = maxQueue;
    this.metrics = metrics;
    this.busy = false;
    this.waiting = [];
  }

  run(job) {
    if (this.busy && this.waiting.length >= this.maxQueue) {
      const wait = Math.max(1, Math.ceil(this.metrics.meanInferenceSeconds() * (this.waiting.length + 1)));
      return Promise.reject(new RequestError(503, `the model is busy (${this.waiting.length} ` +
        'requests queued): retry later', { 'Retry-After': String(wait) }));
    }
    return new Promise((resolve, reject) => {
      this.waiting.push({ job, resolve, reject });
      this.metrics.queueLength = this.waiting.length;
      this.next();
    });
  }

  next() {
    if (this.busy || !this.waiting.length)
      return;
    const { job, resolve, reject } = this.waiting.shift();
    this.metrics.queueLength = this.waiting.length;
    this.busy = true;
    Promise.resolve().then(job).then(resolve, reject).finally(() => {
      this.busy = false;
      this.next();
    });
  }
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (declared > MAX_BODY) {
      reject(new RequestError(413, `body of ${declared} bytes is over the ${MAX_BODY}-byte ` +
        'limit: downscale the frame or send it as JPEG'));
      return;
    }
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new RequestError(413, `body is over the ${MAX_BODY}-byte limit: downscale the ` +
          'frame or send it as JPEG'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks, size)));
    req.on('error', reject);
  });
}

// The model's 0..255 map as the output tensor the server was started for.
function maskTensor(map, width, height, output) {
  if (output === 'probabilities') {
    const data = new Float32Array(width * height);
    for (let i = 0; i < data.length; i++)
      data[i] = map[i] / 255;
    return { datatype: 'FP32', shape: [1, 1, height, width], data };
  }
  const data = new Uint8Array(width * height);
  for (let i = 0; i < data.length; i++)
    data[i] = map[i] >= 127.5 ? 1 : 0;
  return { datatype: 'UINT8', shape: [1, height, width], data };
}

// --wrong-labels: a bad teacher's map, well-formed but wrong. 'inverted' swaps foreground and
// background (a model with its classes in the other order); 'noise' is a fixed pattern of
// foreground and background pixels, half each, drawn from --seed (the same for every answer of a
// size).
function wrongMap(map, width, height, kind, seed) {
  const wrong = new Float32Array(width * height);
  const random = seededRandom(seed);
  for (let i = 0; i < wrong.length; i++)
    wrong[i] = kind === 'inverted' ? 255 - map[i] : random() < 0.5 ? 0 : 255;
  return wrong;
}

// A malformed escape stays as sent: it then names no route or model, which gives a clear 404.
function decodePathPart(part) {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

function bearerMatches(header, token) {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  if (!m)
    return false;
  const given = Buffer.from(m[1]);
  return given.length === token.length && timingSafeEqual(given, token);
}

// options: parseOptions()'s result plus { token: Buffer | null, tls: { cert, key } | null }. model: a promise of the loaded
// model, so that the server listens (live, not ready) while a heavy model loads.
export function createTeacherServer(options, modelPromise, log) {
  const metrics = new Metrics(options.name);
  const queue = new InferenceQueue(options.maxQueue, metrics);
  const random = seededRandom(options.seed ?? 1);
  let model = null;
  let loadError = null;
  let inferRequests = 0;
  let down = false;

  modelPromise.then((m) => {
    model = m;
    metrics.ready = 1;
  }, (err) => {
    loadError = err;
  });

  const onRequest = (req, res) => {
    handle(req, res).catch((err) => {
      log(`internal error: ${err.stack ?? err}`);
      if (!res.headersSent)
        send(req, res, 500, { error: `internal error: ${err.message}` });
    });
  };
  const server = options.tls ? https.createServer(options.tls, onRequest)
    : http.createServer(onRequest);

  function send(req, res, status, body, headers = {}) {
    if (status >= 400)
      metrics.countError(req.route ?? 'unknown', status);
    const payload = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': payload.length,
      ...headers });
    // A refused request may still be sending its body (a frame for an unknown model, without a
    // token): read the rest before answering, or the connection closes under the client, which
    // sees EPIPE instead of the reason. A body over the limit (413) is not read.
    if (status >= 400 && status !== 413 && !req.complete) {
      req.once('end', () => res.end(payload));
      req.resume();
      return;
    }
    res.end(payload);
  }

  function fail(req, res, err) {
    if (err instanceof RequestError)
      send(req, res, err.status, { error: err.message }, err.headers);
    else
      throw err;
  }

  function modelMetadata() {
    const mask = options.output === 'probabilities' ?
      { name: OUTPUT_NAME, datatype: 'FP32', shape: [1, 1, -1, -1] } :
      { name: OUTPUT_NAME, datatype: 'UINT8', shape: [1, -1, -1] };
    return {
      name: options.name, versions: [MODEL_VERSION], platform: model?.platform ?? options.model,
      inputs: [{ name: INPUT_NAME, datatype: 'UINT8', shape: [1, -1, -1, 3] },
        { name: INPUT_NAME, datatype: 'BYTES', shape: [1] }],
      outputs: [mask],
    };
  }

  function checkModelReady() {
    if (loadError)
      throw new RequestError(500, `the model failed to load: ${loadError.message}`);
    if (!model)
      throw new RequestError(503, 'the model is still loading', { 'Retry-After': '1' });
  }

  // The replay server's injected faults: the fault drawn for this request, as a function that
  // answers it (or leaves it hanging), or null.
  function drawFault(req, res) {
    const draw = random();
    let edge = options.failRate;
    if (draw < edge) {
      if (random() < 0.5)
        return () => send(req, res, 503, { error: 'injected failure (--fail-rate)' },
          { 'Retry-After': '1' });
      return () => send(req, res, 500, { error: 'injected failure (--fail-rate)' });
    }
    if (draw < (edge += options.garbageRate)) {
      const cut = random() < 0.5;
      return () => {
        metrics.countError(req.route, 'garbage');
        const header = Buffer.from(`{"model_name":"${options.name}","outputs":[{"name":"mask",` +
          '"datatype":"UINT8","shape":[1,4,4],"parameters":{"binary_data_size":16}}]}');
        // Either a cut JSON body or a binary reply whose tensor is shorter than announced.
        const body = cut ? header.subarray(0, header.length >> 1) :
          Buffer.concat([header, Buffer.alloc(5)]);
        res.writeHead(200, { 'Content-Type': 'application/octet-stream',
          'Inference-Header-Content-Length': String(header.length), 'Content-Length': body.length });
        res.end(body);
      };
    }
    if (draw < edge + options.hangRate)
      return () => metrics.countError(req.route, 'hang');
    return null;
  }

  async function infer(req, res) {
    const number = ++inferRequests;
    if (options.downAfter && inferRequests >= options.downAfter) {
      res.on('finish', goDown);
      // A hung request never finishes: it takes the server down when its client gives up.
      res.on('close', goDown);
    }
    const delay = options.latencyMs ? new Promise((r) => setTimeout(r, options.latencyMs)) : null;
    const fault = drawFault(req, res);
    if (fault) {
      await delay;
      fault();
      return;
    }
    checkModelReady();
    const parsed = parseInferRequest(await readBody(req), req.headers['inference-header-content-length']);
    const outputs = parsed.outputs ?? [{ name: OUTPUT_NAME, binary: parsed.binaryByDefault }];
    for (const o of outputs)
      if (o.name !== OUTPUT_NAME)
        throw new RequestError(400, `unknown output '${o.name}': model '${options.name}' has ` +
          `only '${OUTPUT_NAME}'`);
    const frame = frameFromInputs(parsed.inputs);
    const result = await queue.run(async () => {
      const start = process.hrtime.bigint();
      const r = await model.infer(frame);
      metrics.observeInference(Number(process.hrtime.bigint() - start) / 1e9);
      return r;
    });
    const map = options.wrongLabelsAfter && number > options.wrongLabelsAfter ?
      wrongMap(result.map, frame.width, frame.height, options.wrongLabels, options.seed ?? 1) :
      result.map;
    const tensor = maskTensor(map, frame.width, frame.height, options.output);
    const { body, headers } = encodeInferResponse({
      modelName: options.name, modelVersion: MODEL_VERSION, id: parsed.id,
      parameters: result.parameters,
      outputs: outputs.map((o) => ({ name: o.name, binary: o.binary, ...tensor })),
    });
    await delay;
    res.writeHead(200, { ...headers, 'Content-Length': body.length });
    res.end(body);
  }

  // --down-after: the listener closes and open connections drop, so new requests are refused.
  function goDown() {
    if (down)
      return;
    down = true;
    log(`going down after ${inferRequests} inference requests (--down-after)`);
    server.close();
    server.closeAllConnections();
  }

  const NO_ROUTE = 'routes are /v2, /v2/health/live, /v2/health/ready, /v2/models/{name}, ' +
    '/v2/models/{name}/ready, /v2/models/{name}/infer and /metrics';

  // Splits a path into { route (the metrics label), model, version }.
  function classify(path) {
    if (path === '/metrics')
      return { route: 'metrics' };
    const parts = path.split('/').filter(Boolean).map(decodePathPart);
    if (parts[0] !== 'v2')
      return { route: 'other' };
    if (parts.length === 1)
      return { route: 'server' };
    if (parts[1] === 'health' && parts.length === 3 && ['live', 'ready'].includes(parts[2]))
      return { route: `health/${parts[2]}` };
    if (parts[1] !== 'models' || parts.length < 3)
      return { route: 'other' };
    // /v2/models/{name}[/versions/{v}][/ready|/infer]
    let rest = parts.slice(3);
    let version = MODEL_VERSION;
    if (rest[0] === 'versions' && rest.length >= 2) {
      version = rest[1];
      rest = rest.slice(2);
    }
    const action = rest.length === 0 ? 'metadata' : rest.length === 1 ? rest[0] : null;
    if (!['metadata', 'ready', 'infer'].includes(action))
      return { route: 'other' };
    return { route: `models/${action}`, model: parts[2], version };
  }

  function expectMethod(req, method) {
    if (req.method !== method)
      throw new RequestError(405, `${req.method} ${req.url}: use ${method}`, { Allow: method });
  }

  async function handle(req, res) {
    if (down) {
      req.socket.destroy();
      return;
    }
    const path = new URL(req.url, 'http://teacher').pathname.replace(/\/+$/, '') || '/';
    const { route, model: modelName, version } = classify(path);
    req.route = route;
    metrics.countRequest(route);
    try {
      if (options.token && !route.startsWith('health/') &&
          !bearerMatches(req.headers.authorization, options.token))
        throw new RequestError(401, 'missing or wrong bearer token: send "Authorization: ' +
          'Bearer <token>"', { 'WWW-Authenticate': 'Bearer' });
      await dispatch(req, res, path, route, modelName, version);
    } catch (err) {
      fail(req, res, err);
    }
  }

  async function dispatch(req, res, path, route, modelName, version) {
    if (route === 'other')
      throw new RequestError(404, `no route ${path}: ${NO_ROUTE}`);
    if (route === 'metrics') {
      expectMethod(req, 'GET');
      const text = Buffer.from(metrics.render());
      res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8',
        'Content-Length': text.length });
      res.end(text);
      return;
    }
    if (route === 'server') {
      expectMethod(req, 'GET');
      send(req, res, 200, { name: SERVER_NAME, version: SERVER_VERSION,
        extensions: ['binary_tensor_data'] });
      return;
    }
    if (route === 'health/live') {
      expectMethod(req, 'GET');
      send(req, res, 200, { live: true });
      return;
    }
    if (route === 'health/ready') {
      expectMethod(req, 'GET');
      checkModelReady();
      send(req, res, 200, { ready: true });
      return;
    }
    if (modelName !== options.name)
      throw new RequestError(404, `unknown model '${modelName}': this server serves ` +
        `'${options.name}'`);
    if (version !== MODEL_VERSION)
      throw new RequestError(404, `model '${modelName}' has no version '${version}': only ` +
        `'${MODEL_VERSION}'`);
    if (route === 'models/metadata') {
      expectMethod(req, 'GET');
      send(req, res, 200, modelMetadata());
    } else if (route === 'models/ready') {
      expectMethod(req, 'GET');
      checkModelReady();
      send(req, res, 200, { name: options.name, ready: true });
    } else {
      expectMethod(req, 'POST');
      await infer(req, res);
    }
  }

  server.metrics = metrics;
  return server;
}
