// ISNet (DIS background removal) on ONNX Runtime, pre- and post-processed exactly as the labels
// of data/vtest were made: bilinear to 1024x1024, x/255 - 0.5, NCHW; the output map bilinear back
// to the frame's size and min-max normalised to 0..255.
import { createRequire } from 'node:module';
import { resizeBilinear } from './image.mjs';

const require = createRequire(import.meta.url);
const SIDE = 1024;

export class IsnetModel {
  static async load(modelPath, threads) {
    // Loaded here, not at the top: replay servers never pay for ONNX Runtime.
    const ort = require('onnxruntime-node');
    const session = await ort.InferenceSession.create(modelPath, {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
      executionProviders: ['cpu'],
    });
    return new IsnetModel(ort, session);
  }

  constructor(ort, session) {
    this.ort = ort;
    this.session = session;
    this.platform = 'onnxruntime_onnx';
    this.resized = new Float32Array(SIDE * SIDE * 3);
    this.planes = new Float32Array(3 * SIDE * SIDE);
  }

  // Returns { map: Float32Array (0..255, width x height) }.
  async infer({ rgb, width, height }) {
    resizeBilinear(rgb, width, height, 3, SIDE, SIDE, this.resized);
    const plane = SIDE * SIDE;
    for (let i = 0, j = 0; i < plane; i++, j += 3) {
      this.planes[i] = this.resized[j] / 255 - 0.5;
      this.planes[plane + i] = this.resized[j + 1] / 255 - 0.5;
      this.planes[2 * plane + i] = this.resized[j + 2] / 255 - 0.5;
    }
    const input = new this.ort.Tensor('float32', this.planes, [1, 3, SIDE, SIDE]);
    const result = await this.session.run({ input }, ['output']);
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
    return { map };
  }

  close() {
    return this.session.release();
  }
}
