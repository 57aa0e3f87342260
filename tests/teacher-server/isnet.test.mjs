// The real ISNet on one vtest frame reproduces the stored label of that frame; a second request
// while it computes finds the queue full (--max-queue 0) and is told when to retry.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  HEIGHT, LABELS, VIDEO, WIDTH, binaryRequest, checkPrerequisites, classMap, decodeFrames,
  foregroundIou, json, parseReply, request, startServer,
} from './harness.mjs';

// A frame with many people: a large foreground makes the IoU meaningful.
const FRAME = 525;
let server;

before(async () => {
  checkPrerequisites();
  server = await startServer(['--model', 'isnet', '--threads', '2', '--max-queue', '0'],
    { readyTimeoutMs: 120000 });
});

after(() => server?.stop());

test('ISNet reproduces the stored label; a request beyond the queue gets 503', async (t) => {
  const [rgb] = decodeFrames(VIDEO, [FRAME]);
  const [label] = decodeFrames(LABELS, [FRAME], { pixFmt: 'gray' });
  const req = { ...binaryRequest({ rgb, width: WIDTH, height: HEIGHT }), timeoutMs: 120000 };
  const first = request(server.url, 'POST', '/v2/models/teacher/infer', req);
  // The frame takes seconds; by now the model is busy with it.
  await new Promise((r) => setTimeout(r, 500));
  const second = await request(server.url, 'POST', '/v2/models/teacher/infer', req);
  assert.equal(second.status, 503);
  assert.match(second.headers['retry-after'], /^[1-9]\d*$/);
  assert.match(json(second).error, /busy/);

  const reply = await first;
  assert.equal(reply.status, 200, reply.body.toString());
  const { header, binary } = parseReply(reply);
  assert.deepEqual(header.outputs[0].shape, [1, HEIGHT, WIDTH]);
  const iou = foregroundIou(new Uint8Array(binary.mask), classMap(label));
  t.diagnostic(`foreground IoU against the stored label: ${iou.toFixed(4)}`);
  assert.ok(iou >= 0.95, `foreground IoU ${iou} against the stored label`);
});
