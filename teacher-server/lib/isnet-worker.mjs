// ISNet (DIS background removal) on ONNX Runtime, in a worker thread: onnxruntime-node runs a
// session synchronously, and seconds of inference on the main thread would stall health probes,
// metrics and the queue's 503s. Pre- and post-processing are exactly those of data/vtest's labels:
// bilinear to 1024x1024, x/255 - 0.5, NCHW; the output map bilinear back to the frame's size and
// min-max normalised to 0..255.
import { createRequire } from 'node:module';
import { parentPort, workerData } from 'node:worker_threads';
import { resizeBilinear } from './image.mjs';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node');
const SIDE = 1024;

const resized = new Float32Array(SIDE * SIDE * 3);
const planes = new Float32Array(3 * SIDE * SIDE);

// Returns the 0..255 foreground map of an RGB frame, width x height.
async function segment(session, rgb, width, height) {
  resizeBilinear(rgb, width, height, 3, SIDE, SIDE, resized);
  const plane = SIDE * SIDE;
  for (let i = 0, j = 0; i < plane; i++, j += 3) {
    planes[i] = resized[j] / 255 - 0.5;
    planes[plane + i] = resized[j + 1] / 255 - 0.5;
    planes[2 * plane + i] = resized[j + 2] / 255 - 0.5;
  }
  const input = new ort.Tensor('float32', planes, [1, 3, SIDE, SIDE]);
  const result = await session.run({ input }, ['output']);
  const map = resizeBilinear(result.output.data, SIDE, SIDE, 1, width, height,
    new Float32Array(width * height));
  let low = Infinity;
  let high = -Infinity;
  for (const v of map) {
    if (v < low)
      low = v;
    if (v > high)
      high = v;
  }
  const scale = high > low ? 255 / (high - low) : 0;
  for (let i = 0; i < map.length; i++)
    map[i] = (map[i] - low) * scale;
  return map;
}

let session;
try {
  session = await ort.InferenceSession.create(workerData.modelPath, {
    intraOpNumThreads: workerData.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionProviders: ['cpu'],
    // The arena keeps every peak of ISNet's 1024x1024 activations: 2.3 GB resident after two
    // frames against 0.5 GB without it, for about the same time a frame (2.0 s against 1.9 s
    // on 2 quiet cores).
    enableCpuMemArena: false,
  });
  parentPort.postMessage({ ready: true });
} catch (err) {
  parentPort.postMessage({ error: `${workerData.modelPath}: ${err.message}` });
}

parentPort.on('message', async ({ id, rgb, width, height }) => {
  try {
    const map = await segment(session, rgb, width, height);
    parentPort.postMessage({ id, map }, [map.buffer]);
  } catch (err) {
    parentPort.postMessage({ id, error: err.message });
  }
});
