// Shared by the teacher-server tests: starts the real server (teacher-server/run) on a free
// loopback port, speaks KServe v2 to it over real HTTP, and reads real frames of vtest.avi.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '..', '..');
export const RUN = path.join(ROOT, 'teacher-server', 'run');
export const VIDEO = '/usr/share/doc/opencv-doc/examples/data/vtest.avi';
export const LABELS = path.join(ROOT, 'data', 'vtest', 'labels.mkv');
export const WIDTH = 768;
export const HEIGHT = 576;

export function checkPrerequisites() {
  if (!fs.existsSync(VIDEO))
    throw new Error(`${VIDEO} is missing: install opencv-doc (scripts/setup-deps)`);
}

// Starts `teacher-server/run ARGS --port 0` and resolves once the model is ready.
export async function startServer(args, { readyTimeoutMs = 60000 } = {}) {
  const child = spawn(RUN, [...args, '--host', '127.0.0.1', '--port', '0'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const url = await new Promise((resolve, reject) => {
    let stdout = '';
    child.stdout.on('data', (d) => {
      stdout += d;
      const m = /listening on (http:\/\/\S+)\/v2/.exec(stdout);
      if (m)
        resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`teacher-server exited (${code}): ${stderr}`)));
  });
  const server = {
    url,
    child,
    stderr: () => stderr,
    stop() {
      if (child.exitCode === null && child.signalCode === null)
        child.kill('SIGTERM');
      return new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null)
          resolve();
        else
          child.on('exit', resolve);
      });
    },
  };
  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    const reply = await request(url, 'GET', '/v2/health/ready').catch(() => null);
    if (reply?.status === 200)
      return server;
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`teacher-server not ready after ${readyTimeoutMs} ms: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

// One HTTP request; resolves { status, headers, body (Buffer) }. A fresh connection each time,
// so that a test sees refused connections as they happen.
export function request(baseUrl, method, urlPath, { headers = {}, body = null, timeoutMs = 30000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(`${baseUrl}${urlPath}`, { method, headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
        body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.on('error', reject);
    req.end(body ?? undefined);
  });
}

export function json(reply) {
  return JSON.parse(reply.body.toString('utf8'));
}

// Builds the binary infer request of DESIGN.md for an RGB frame (or a JPEG when `jpeg` is given).
export function binaryRequest({ rgb, width, height, jpeg, binaryOutput = true, id }) {
  let input;
  let data;
  if (jpeg) {
    data = Buffer.alloc(4 + jpeg.length);
    data.writeUInt32LE(jpeg.length, 0);
    jpeg.copy(data, 4);
    input = { name: 'image', datatype: 'BYTES', shape: [1] };
  } else {
    data = rgb;
    input = { name: 'image', datatype: 'UINT8', shape: [1, height, width, 3] };
  }
  input.parameters = { binary_data_size: data.length };
  const header = Buffer.from(JSON.stringify({ id, inputs: [input],
    outputs: [{ name: 'mask', parameters: { binary_data: binaryOutput } }] }));
  return {
    headers: { 'Content-Type': 'application/octet-stream',
      'Inference-Header-Content-Length': String(header.length) },
    body: Buffer.concat([header, data]),
  };
}

// Splits a reply into its JSON header and the bytes of each binary output, by name.
export function parseReply(reply) {
  const length = reply.headers['inference-header-content-length'];
  const jsonLength = length === undefined ? reply.body.length : Number(length);
  const header = JSON.parse(reply.body.subarray(0, jsonLength).toString('utf8'));
  const binary = {};
  let at = jsonLength;
  for (const output of header.outputs ?? []) {
    const size = output.parameters?.binary_data_size;
    if (size !== undefined) {
      binary[output.name] = reply.body.subarray(at, at + size);
      at += size;
    }
  }
  if (at !== reply.body.length)
    throw new Error(`reply has ${reply.body.length - at} bytes more than its outputs announce`);
  return { header, binary };
}

// Raw frames of a file through ffmpeg: `frames` picks indices in decode order, `filter` scales.
export function decodeFrames(file, frames, { pixFmt = 'rgb24', filter = null } = {}) {
  const select = `select=${frames.map((n) => `eq(n\\,${n})`).join('+')}`;
  const vf = filter ? `${select},${filter}` : select;
  const raw = execFileSync('ffmpeg', ['-v', 'error', '-nostdin', '-i', file, '-vf', vf,
    '-fps_mode', 'passthrough', '-f', 'rawvideo', '-pix_fmt', pixFmt, '-'],
  { maxBuffer: 1 << 30 });
  const size = raw.length / frames.length;
  if (!Number.isInteger(size))
    throw new Error(`${file}: ffmpeg gave ${raw.length} bytes for ${frames.length} frames`);
  return frames.map((_, i) => raw.subarray(i * size, (i + 1) * size));
}

// A JPEG of an RGB frame, made by ffmpeg's (libavcodec's) mjpeg encoder, as the client does.
export function encodeJpeg(rgb, width, height, quality = 5) {
  return execFileSync('ffmpeg', ['-v', 'error', '-nostdin', '-f', 'rawvideo', '-pix_fmt', 'rgb24',
    '-s', `${width}x${height}`, '-i', '-', '-q:v', String(quality), '-f', 'mjpeg', '-'],
  { input: rgb, maxBuffer: 1 << 28 });
}

// Foreground intersection over union of two class maps (class 1 = foreground).
export function foregroundIou(a, b) {
  let inter = 0;
  let union = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] && b[i])
      inter++;
    if (a[i] || b[i])
      union++;
  }
  return union ? inter / union : 1;
}

// Class map of a 0..255 label frame (threshold 128, as DESIGN.md says).
export function classMap(label) {
  return Uint8Array.from(label, (v) => (v >= 128 ? 1 : 0));
}
