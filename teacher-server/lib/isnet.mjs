// The ISNet model as the server sees it: frames go to the worker thread (isnet-worker.mjs) that
// owns the ONNX Runtime session; the server's queue sends one at a time.
import { Worker } from 'node:worker_threads';

export class IsnetModel {
  static load(modelPath, threads) {
    const worker = new Worker(new URL('./isnet-worker.mjs', import.meta.url),
      { workerData: { modelPath, threads } });
    return new Promise((resolve, reject) => {
      worker.once('message', (message) => {
        if (message.ready)
          resolve(new IsnetModel(worker));
        else
          reject(new Error(message.error));
      });
      worker.once('error', reject);
    });
  }

  constructor(worker) {
    this.worker = worker;
    this.platform = 'onnxruntime_onnx';
    this.pending = new Map();
    this.nextId = 0;
    worker.on('message', ({ id, map, error }) => {
      const job = this.pending.get(id);
      this.pending.delete(id);
      if (error)
        job.reject(new Error(`ISNet inference failed: ${error}`));
      else
        job.resolve({ map });
    });
    // A dead worker fails its jobs and every later one, rather than leaving the queue stuck.
    worker.on('exit', (code) => {
      this.failure = new Error(`the ISNet worker stopped (exit ${code})`);
      for (const job of this.pending.values())
        job.reject(this.failure);
      this.pending.clear();
    });
  }

  // Returns { map: Float32Array (0..255, width x height) }.
  infer({ rgb, width, height }) {
    if (this.failure)
      return Promise.reject(this.failure);
    const id = this.nextId++;
    // A copy the worker can own: the request's bytes are a view into its body.
    const copy = new Uint8Array(rgb);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, rgb: copy, width, height }, [copy.buffer]);
    });
  }

  close() {
    return this.worker.terminate();
  }
}
