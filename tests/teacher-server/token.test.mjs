// --token-file, --name and --output probabilities: every route but health needs the bearer
// token, which never appears in the server's output.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  HEIGHT, LABELS, VIDEO, WIDTH, binaryRequest, checkPrerequisites, decodeFrames, json,
  parseReply, request, startServer,
} from './harness.mjs';

const TOKEN = 'tok-3f9a1c7e5b2d48';
const FRAME = 525;
let server;
let dir;

before(async () => {
  checkPrerequisites();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'teacher-token-'));
  fs.writeFileSync(path.join(dir, 'token'), `${TOKEN}\n`);
  server = await startServer(['--model', 'replay', '--video', VIDEO, '--labels', LABELS,
    '--token-file', path.join(dir, 'token'), '--name', 'seg', '--output', 'probabilities']);
});

after(async () => {
  await server?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

const bearer = (token) => ({ Authorization: `Bearer ${token}` });

test('health needs no token', async () => {
  assert.equal((await request(server.url, 'GET', '/v2/health/live')).status, 200);
  assert.equal((await request(server.url, 'GET', '/v2/health/ready')).status, 200);
});

test('everything else answers 401 without the right token', async () => {
  for (const route of ['/v2', '/v2/models/seg', '/v2/models/seg/ready', '/metrics']) {
    for (const headers of [{}, bearer('wrong'), bearer(`${TOKEN}x`), { Authorization: TOKEN }]) {
      const reply = await request(server.url, 'GET', route, { headers });
      assert.equal(reply.status, 401, `${route} ${JSON.stringify(headers)}`);
      assert.equal(reply.headers['www-authenticate'], 'Bearer');
      assert.match(json(reply).error, /bearer token/);
    }
    assert.equal((await request(server.url, 'GET', route, { headers: bearer(TOKEN) })).status, 200);
  }
  const [rgb] = decodeFrames(VIDEO, [FRAME]);
  const req = binaryRequest({ rgb, width: WIDTH, height: HEIGHT });
  const denied = await request(server.url, 'POST', '/v2/models/seg/infer', req);
  assert.equal(denied.status, 401);
});

test('probabilities: FP32 [1,1,h,w], the stored label / 255', async () => {
  const [rgb] = decodeFrames(VIDEO, [FRAME]);
  const [label] = decodeFrames(LABELS, [FRAME], { pixFmt: 'gray' });
  const req = binaryRequest({ rgb, width: WIDTH, height: HEIGHT });
  req.headers = { ...req.headers, ...bearer(TOKEN) };
  const reply = await request(server.url, 'POST', '/v2/models/seg/infer', req);
  assert.equal(reply.status, 200);
  const { header, binary } = parseReply(reply);
  assert.equal(header.model_name, 'seg');
  assert.deepEqual(header.outputs[0], { name: 'mask', datatype: 'FP32', shape: [1, 1, HEIGHT, WIDTH],
    parameters: { binary_data_size: WIDTH * HEIGHT * 4 } });
  const probabilities = new Float32Array(binary.mask.buffer.slice(binary.mask.byteOffset,
    binary.mask.byteOffset + binary.mask.length));
  for (let i = 0; i < label.length; i++)
    assert.ok(Math.abs(probabilities[i] - label[i] / 255) < 1e-6, `pixel ${i}`);
  const meta = json(await request(server.url, 'GET', '/v2/models/seg', { headers: bearer(TOKEN) }));
  assert.deepEqual(meta.outputs, [{ name: 'mask', datatype: 'FP32', shape: [1, 1, -1, -1] }]);
});

test('the token is never printed', () => {
  assert.ok(!server.stderr().includes(TOKEN));
});
