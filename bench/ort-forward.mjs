// ort-forward.mjs: times the ONNX Runtime peer of the student (forward only).
//
//   node bench/ort-forward.mjs MODEL.onnx [--threads N] [--runs N] [--warmup N]
//                              [--input IMAGE.f32] [--logits-out LOGITS.f32]
//
// MODEL.onnx comes from bench/mirror/export_onnx.py (fixed NCHW input). The input is IMAGE.f32
// (1 x 3 x H x W float32, the model's size) or uniform values in [-0.5, 0.5). Prints one JSON
// line: the median of the timed runs in ms, and the execution provider that ran them.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

// onnxruntime-node is CommonJS; require() finds it in bench/node_modules from this file.
const ort = createRequire(import.meta.url)('onnxruntime-node');

function parseArgs(argv) {
  const opts = { threads: 2, runs: 20, warmup: 3, input: null, logitsOut: null, model: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--threads') opts.threads = parseInt(value(), 10);
    else if (a === '--runs') opts.runs = parseInt(value(), 10);
    else if (a === '--warmup') opts.warmup = parseInt(value(), 10);
    else if (a === '--input') opts.input = value();
    else if (a === '--logits-out') opts.logitsOut = value();
    else if (!a.startsWith('--') && opts.model === null) opts.model = a;
    else throw new Error(`unknown argument ${a}`);
  }
  if (opts.model === null || !(opts.runs >= 1) || !(opts.threads >= 1) || !(opts.warmup >= 0))
    throw new Error('usage: ort-forward.mjs MODEL.onnx [--threads N] [--runs N] [--warmup N] ' +
                    '[--input IMAGE.f32] [--logits-out LOGITS.f32]');
  return opts;
}

function makeInput(shape, path) {
  const count = shape.reduce((a, b) => a * b, 1);
  let data;
  if (path) {
    const buf = readFileSync(path);
    if (buf.length !== count * 4) throw new Error(`${path}: ${buf.length} bytes, want ${count * 4}`);
    data = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
  } else {
    // A fixed linear congruential sequence: the same input on every run of the benchmark.
    data = new Float32Array(count);
    let s = 12345;
    for (let i = 0; i < count; i++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      data[i] = s / 4294967296 - 0.5;
    }
  }
  return new ort.Tensor('float32', data, shape);
}

function median(values) {
  const v = [...values].sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const executionProvider = 'cpu';
  const session = await ort.InferenceSession.create(opts.model, {
    executionProviders: [executionProvider],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: opts.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
  });
  const inputName = session.inputNames[0];
  const shape = session.inputMetadata[0].shape.map(Number);
  if (shape.length !== 4 || shape.some((d) => !(d > 0)))
    throw new Error(`model input ${inputName} has no fixed NCHW shape: ${shape}`);
  const feeds = { [inputName]: makeInput(shape, opts.input) };

  let result;
  for (let i = 0; i < opts.warmup; i++) result = await session.run(feeds);
  const times = [];
  for (let i = 0; i < opts.runs; i++) {
    const t0 = process.hrtime.bigint();
    result = await session.run(feeds);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  const logits = result[session.outputNames[0]];
  if (opts.logitsOut)
    writeFileSync(opts.logitsOut, Buffer.from(logits.data.buffer, logits.data.byteOffset,
                                              logits.data.byteLength));

  console.log(JSON.stringify({
    bench: 'ort-forward',
    size: `${shape[3]}x${shape[2]}`,
    ms: Number(median(times).toFixed(3)),
    min_ms: Number(Math.min(...times).toFixed(3)),
    runs: opts.runs,
    threads: opts.threads,
    execution_provider: executionProvider,
    onnxruntime: ort.env.versions.common,
    logits_shape: logits.dims,
  }));
  await session.release();
}

main().catch((err) => {
  console.error(`ort-forward: ${err.message}`);
  process.exit(1);
});
