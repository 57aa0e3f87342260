// Counters exported at /metrics in the Prometheus text format (version 0.0.4).
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class Metrics {
  constructor(modelName) {
    this.modelName = modelName;
    this.requests = new Map();
    this.errors = new Map();
    this.bucketCounts = new Array(BUCKETS.length).fill(0);
    this.inferenceCount = 0;
    this.inferenceSum = 0;
    this.queueLength = 0;
    this.ready = 0;
  }

  countRequest(route) {
    this.requests.set(route, (this.requests.get(route) ?? 0) + 1);
  }

  countError(route, status) {
    const key = `${route}\u0000${status}`;
    this.errors.set(key, (this.errors.get(key) ?? 0) + 1);
  }

  observeInference(seconds) {
    this.inferenceCount++;
    this.inferenceSum += seconds;
    BUCKETS.forEach((bound, i) => {
      if (seconds <= bound)
        this.bucketCounts[i]++;
    });
  }

  meanInferenceSeconds() {
    return this.inferenceCount ? this.inferenceSum / this.inferenceCount : 0;
  }

  render() {
    const model = `model="${this.modelName}"`;
    const lines = [
      '# HELP teacher_requests_total HTTP requests received, by route.',
      '# TYPE teacher_requests_total counter',
    ];
    for (const [route, n] of this.requests)
      lines.push(`teacher_requests_total{route="${route}"} ${n}`);
    lines.push('# HELP teacher_errors_total Requests answered with an error status (4xx/5xx) ' +
      'or not answered properly (injected faults), by route and status.',
    '# TYPE teacher_errors_total counter');
    for (const [key, n] of this.errors) {
      const [route, status] = key.split('\u0000');
      lines.push(`teacher_errors_total{route="${route}",status="${status}"} ${n}`);
    }
    lines.push('# HELP teacher_inference_seconds Time of one inference, pre- and ' +
      'post-processing included, queueing excluded.', '# TYPE teacher_inference_seconds histogram');
    BUCKETS.forEach((bound, i) =>
      lines.push(`teacher_inference_seconds_bucket{${model},le="${bound}"} ${this.bucketCounts[i]}`));
    lines.push(`teacher_inference_seconds_bucket{${model},le="+Inf"} ${this.inferenceCount}`,
      `teacher_inference_seconds_sum{${model}} ${this.inferenceSum}`,
      `teacher_inference_seconds_count{${model}} ${this.inferenceCount}`,
      '# HELP teacher_queue_length Inference requests waiting for the model.',
      '# TYPE teacher_queue_length gauge',
      `teacher_queue_length{${model}} ${this.queueLength}`,
      '# HELP teacher_model_ready 1 when the model is loaded and serving.',
      '# TYPE teacher_model_ready gauge',
      `teacher_model_ready{${model}} ${this.ready}`);
    return `${lines.join('\n')}\n`;
  }
}
