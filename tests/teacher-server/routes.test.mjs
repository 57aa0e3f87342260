// Every route of the replay teacher, JSON and binary tensors in and out, BYTES/JPEG input, and
// the error replies a client gets for bad requests.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  HEIGHT, LABELS, VIDEO, WIDTH, binaryRequest, checkPrerequisites, classMap, decodeFrames,
  encodeJpeg, json, parseReply, request, startServer,
} from './harness.mjs';

const FRAME = 300;
let server;
let rgb;
let label;

before(async () => {
  checkPrerequisites();
  server = await startServer(['--model', 'replay', '--video', VIDEO, '--labels', LABELS]);
  [rgb] = decodeFrames(VIDEO, [FRAME]);
  [label] = decodeFrames(LABELS, [FRAME], { pixFmt: 'gray' });
});

after(() => server?.stop());

const infer = (req, name = 'teacher') =>
  request(server.url, 'POST', `/v2/models/${name}/infer`, req);

test('server metadata and health', async () => {
  const meta = await request(server.url, 'GET', '/v2');
  assert.equal(meta.status, 200);
  assert.ok(json(meta).extensions.includes('binary_tensor_data'));
  for (const route of ['/v2/health/live', '/v2/health/ready', '/v2/models/teacher/ready',
    '/v2/models/teacher/versions/1/ready'])
    assert.equal((await request(server.url, 'GET', route)).status, 200, route);
});

test('model metadata names the image input and the mask output', async () => {
  const reply = await request(server.url, 'GET', '/v2/models/teacher');
  assert.equal(reply.status, 200);
  const meta = json(reply);
  assert.equal(meta.name, 'teacher');
  assert.deepEqual(meta.inputs.map((i) => i.datatype).sort(), ['BYTES', 'UINT8']);
  assert.deepEqual(meta.outputs, [{ name: 'mask', datatype: 'UINT8', shape: [1, -1, -1] }]);
});

test('binary frame in, binary labels out: the stored label of that frame', async () => {
  const reply = await infer(binaryRequest({ rgb, width: WIDTH, height: HEIGHT, id: 'cam:300' }));
  assert.equal(reply.status, 200);
  assert.equal(reply.headers['content-type'], 'application/octet-stream');
  const { header, binary } = parseReply(reply);
  assert.equal(header.id, 'cam:300');
  assert.equal(header.parameters.replay_frame, FRAME);
  assert.deepEqual(header.outputs[0].shape, [1, HEIGHT, WIDTH]);
  assert.equal(header.outputs[0].datatype, 'UINT8');
  assert.deepEqual(new Uint8Array(binary.mask), classMap(label));
});

test('binary frame in, JSON labels out', async () => {
  const reply = await infer(binaryRequest({ rgb, width: WIDTH, height: HEIGHT, binaryOutput: false }));
  assert.equal(reply.status, 200);
  assert.equal(reply.headers['content-type'], 'application/json');
  assert.equal(reply.headers['inference-header-content-length'], undefined);
  const [output] = json(reply).outputs;
  assert.deepEqual(Uint8Array.from(output.data), classMap(label));
});

test('JSON frame in (nested data), JSON out by default', async () => {
  const [small] = decodeFrames(VIDEO, [FRAME], { filter: 'scale=96:72' });
  const rows = [];
  for (let y = 0; y < 72; y++) {
    const row = [];
    for (let x = 0; x < 96; x++)
      row.push(Array.from(small.subarray((y * 96 + x) * 3, (y * 96 + x) * 3 + 3)));
    rows.push(row);
  }
  const body = JSON.stringify({ inputs: [{ name: 'image', datatype: 'UINT8', shape: [1, 72, 96, 3],
    data: [rows] }] });
  const reply = await infer({ headers: { 'Content-Type': 'application/json' }, body });
  assert.equal(reply.status, 200);
  const { parameters, outputs } = json(reply);
  assert.equal(parameters.replay_frame, FRAME);
  assert.deepEqual(outputs[0].shape, [1, 72, 96]);
  assert.equal(outputs[0].data.length, 72 * 96);
  assert.ok(outputs[0].data.every((v) => v === 0 || v === 1));
  assert.ok(outputs[0].data.includes(1), 'frame 300 has people in it');
});

test('JPEG as BYTES, binary and as base64 JSON', async () => {
  const jpeg = encodeJpeg(rgb, WIDTH, HEIGHT);
  const binaryReply = await infer(binaryRequest({ jpeg }));
  assert.equal(binaryReply.status, 200);
  const { header, binary } = parseReply(binaryReply);
  assert.equal(header.parameters.replay_frame, FRAME);
  assert.deepEqual(new Uint8Array(binary.mask), classMap(label));

  const body = JSON.stringify({ inputs: [{ name: 'image', datatype: 'BYTES', shape: [1],
    data: [jpeg.toString('base64')] }], outputs: [{ name: 'mask' }] });
  const jsonReply = await infer({ body });
  assert.equal(jsonReply.status, 200);
  assert.equal(json(jsonReply).parameters.replay_frame, FRAME);
});

// Each bad request gets a 4xx and an error saying what was wrong.
async function assertError(reply, status, pattern) {
  assert.equal(reply.status, status, reply.body.toString());
  assert.equal(reply.headers['content-type'], 'application/json');
  const { error } = json(reply);
  assert.match(error, pattern);
}

function rawRequest(input, data, extra = {}) {
  const header = Buffer.from(JSON.stringify({ inputs: [input], ...extra }));
  return { headers: { 'Inference-Header-Content-Length': String(header.length) },
    body: Buffer.concat([header, data]) };
}

test('bad requests: shape, datatype, sizes, JSON, names', async () => {
  const tiny = Buffer.alloc(4 * 4 * 4);
  await assertError(await infer(rawRequest({ name: 'image', datatype: 'UINT8', shape: [1, 4, 4, 4],
    parameters: { binary_data_size: tiny.length } }, tiny)), 400, /shape \[1,4,4,4\] is not \[1,H,W,3\]/);
  await assertError(await infer(rawRequest({ name: 'image', datatype: 'FP32', shape: [1, 4, 4, 1],
    parameters: { binary_data_size: tiny.length } }, tiny)), 400, /datatype FP32 is not accepted/);
  await assertError(await infer(rawRequest({ name: 'image', datatype: 'UINT8', shape: [1, 4, 4, 3],
    parameters: { binary_data_size: tiny.length } }, tiny)), 400, /needs 48 bytes/);
  await assertError(await infer(rawRequest({ name: 'frame', datatype: 'UINT8', shape: [1, 1, 1, 3],
    parameters: { binary_data_size: 3 } }, Buffer.alloc(3))), 400, /no input named 'image'/);
  await assertError(await infer(rawRequest({ name: 'image', datatype: 'UINT8', shape: [1, 1, 1, 3],
    parameters: { binary_data_size: 3 } }, Buffer.alloc(3), { outputs: [{ name: 'probs' }] })),
  400, /unknown output 'probs'/);
  const notJpeg = Buffer.from([5, 0, 0, 0, 1, 2, 3, 4, 5]);
  await assertError(await infer(rawRequest({ name: 'image', datatype: 'BYTES', shape: [1],
    parameters: { binary_data_size: notJpeg.length } }, notJpeg)), 400, /not a JPEG/);
  const cut = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 16]);
  const cutElement = Buffer.concat([Buffer.from([cut.length, 0, 0, 0]), cut]);
  await assertError(await infer(rawRequest({ name: 'image', datatype: 'BYTES', shape: [1],
    parameters: { binary_data_size: cutElement.length } }, cutElement)), 400, /cannot decode the JPEG/);
  await assertError(await infer({ body: '{"inputs": [' }), 400, /not valid JSON/);
  await assertError(await infer({ headers: { 'Inference-Header-Content-Length': '999' }, body: '{}' }),
    400, /Inference-Header-Content-Length 999/);
  await assertError(await infer({ body: '{"inputs":[{"name":"image","datatype":"UINT8",' +
    '"shape":[1,1,2,3],"data":[1,2,3]}]}' }), 400, /has 6 elements, data has 3/);
});

test('a body over the limit is refused before it is read', async () => {
  // Announced only: the server answers from the Content-Length header.
  const reply = await infer({ headers: { 'Content-Length': String(65 << 20) }, body: '{}' })
    .catch((err) => err);
  assert.equal(reply.status, 413, String(reply));
  assert.match(json(reply).error, /over the 67108864-byte limit/);
});

test('unknown model, route, version and method', async () => {
  const req = binaryRequest({ rgb, width: WIDTH, height: HEIGHT });
  await assertError(await infer(req, 'student'), 404, /unknown model 'student'.*'teacher'/);
  await assertError(await request(server.url, 'GET', '/v2/models/student/ready'), 404, /unknown model/);
  await assertError(await request(server.url, 'GET', '/v2/models/teacher/versions/7'), 404, /no version '7'/);
  await assertError(await request(server.url, 'GET', '/v1/models'), 404, /no route \/v1\/models/);
  await assertError(await request(server.url, 'GET', '/v2/models/%E0%A4%A/ready'), 404, /unknown model '%E0%A4%A'/);
  await assertError(await request(server.url, 'GET', '/v2/models/teacher/infer'), 405, /use POST/);
});

test('/metrics counts requests, errors and inference time in Prometheus text', async () => {
  const reply = await request(server.url, 'GET', '/metrics');
  assert.equal(reply.status, 200);
  assert.match(reply.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  const text = reply.body.toString();
  const samples = new Map();
  for (const line of text.trimEnd().split('\n')) {
    if (line.startsWith('#')) {
      assert.match(line, /^# (HELP|TYPE) teacher_\w+ /);
      continue;
    }
    const m = /^(teacher_\w+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    assert.ok(m, `not a Prometheus sample line: ${line}`);
    assert.ok(Number.isFinite(Number(m[2])), line);
    samples.set(m[1], Number(m[2]));
  }
  // Other tests of this file ran before: infers succeeded and failed.
  assert.ok(samples.get('teacher_requests_total{route="models/infer"}') >= 5);
  assert.ok(samples.get('teacher_errors_total{route="models/infer",status="400"}') >= 10);
  assert.ok(samples.get('teacher_errors_total{route="models/infer",status="404"}') >= 1);
  assert.ok(samples.get('teacher_inference_seconds_count{model="teacher"}') >= 5);
  assert.ok(samples.get('teacher_inference_seconds_sum{model="teacher"}') > 0);
  assert.equal(samples.get('teacher_model_ready{model="teacher"}'), 1);
});
