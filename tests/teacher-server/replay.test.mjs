// Replay finds the frame it was sent by content alone: full size, downscaled (also to another
// aspect), and as JPEG; the label comes back at the request's size.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  HEIGHT, LABELS, ROOT, VIDEO, WIDTH, binaryRequest, checkPrerequisites, classMap, decodeFrames,
  encodeJpeg, foregroundIou, parseReply, request, startServer,
} from './harness.mjs';

// Spread over the video, with one neighbouring pair: consecutive frames differ only slightly.
const FRAMES = [0, 150, 151, 525, 794];
let server;

before(async () => {
  checkPrerequisites();
  server = await startServer(['--model', 'replay', '--video', VIDEO, '--labels', LABELS]);
});

after(() => server?.stop());

async function infer(req) {
  const reply = await request(server.url, 'POST', '/v2/models/teacher/infer', req);
  assert.equal(reply.status, 200, reply.body.toString());
  return parseReply(reply);
}

test('full-size frames get their own stored labels, bit for bit', async () => {
  const frames = decodeFrames(VIDEO, FRAMES);
  const labels = decodeFrames(LABELS, FRAMES, { pixFmt: 'gray' });
  for (const [i, n] of FRAMES.entries()) {
    const { header, binary } = await infer(binaryRequest({ rgb: frames[i], width: WIDTH, height: HEIGHT }));
    assert.equal(header.parameters.replay_frame, n);
    assert.deepEqual(new Uint8Array(binary.mask), classMap(labels[i]), `frame ${n}`);
  }
});

// The label scaled by ffmpeg (another resampler than the server's) agrees but at object edges.
function assertLabelsClose(mask, expected, what) {
  let agree = 0;
  for (let i = 0; i < mask.length; i++)
    if (mask[i] === expected[i])
      agree++;
  assert.ok(agree / mask.length > 0.99, `${what}: ${agree}/${mask.length} pixels agree`);
  const iou = foregroundIou(mask, expected);
  assert.ok(iou > 0.8, `${what}: foreground IoU ${iou}`);
}

for (const [width, height] of [[384, 288], [320, 180]]) {
  test(`frames downscaled to ${width}x${height}, raw and JPEG`, async () => {
    const scale = `scale=${width}:${height}:flags=bilinear`;
    const frames = decodeFrames(VIDEO, FRAMES, { filter: scale });
    const labels = decodeFrames(LABELS, FRAMES, { pixFmt: 'gray', filter: scale });
    for (const [i, n] of FRAMES.entries()) {
      const expected = classMap(labels[i]);
      for (const [form, req] of [
        ['raw', binaryRequest({ rgb: frames[i], width, height })],
        ['jpeg', binaryRequest({ jpeg: encodeJpeg(frames[i], width, height, 10) })],
      ]) {
        const { header, binary } = await infer(req);
        assert.equal(header.parameters.replay_frame, n, `${form} frame ${n}`);
        assert.deepEqual(header.outputs[0].shape, [1, height, width]);
        assertLabelsClose(new Uint8Array(binary.mask), expected, `${form} frame ${n}`);
      }
    }
  });
}

// Megamind.avi's timestamps are uneven: ffmpeg at a constant rate repeats a frame (271), the
// decoder presents 270, and so do GStreamer and data/heldout/Megamind.mkv.
test('a video with uneven timestamps loads with one label a decoded frame', async () => {
  const video = '/usr/share/doc/opencv-doc/examples/data/Megamind.avi';
  const labels = path.join(ROOT, 'data', 'heldout', 'Megamind.mkv');
  const [width, height] = [720, 528];
  const megamind = await startServer(['--model', 'replay', '--video', video, '--labels', labels]);
  try {
    const frames = [0, 135, 269];
    const rgb = decodeFrames(video, frames);
    const stored = decodeFrames(labels, frames, { pixFmt: 'gray' });
    for (const [i, n] of frames.entries()) {
      const reply = await request(megamind.url, 'POST', '/v2/models/teacher/infer',
        binaryRequest({ rgb: rgb[i], width, height }));
      assert.equal(reply.status, 200, reply.body.toString());
      const { header, binary } = parseReply(reply);
      assert.equal(header.parameters.replay_frame, n);
      assert.deepEqual(new Uint8Array(binary.mask), classMap(stored[i]), `frame ${n}`);
    }
  } finally {
    await megamind.stop();
  }
});
