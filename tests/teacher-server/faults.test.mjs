// The replay server's injected faults, which a real model cannot produce on demand: errors with
// and without Retry-After, malformed 200 replies, hangs, latency, a server that goes away, and a
// teacher that turns bad (well-formed but wrong labels). Seeded, so that two runs see the same
// sequence.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  HEIGHT, LABELS, VIDEO, WIDTH, binaryRequest, checkPrerequisites, decodeFrames, foregroundIou,
  parseReply, request, startServer,
} from './harness.mjs';

const REPLAY = ['--model', 'replay', '--video', VIDEO, '--labels', LABELS];
// Far above a replay answer's time even on a loaded machine, so only true hangs reach it.
const HANG_TIMEOUT_MS = 1500;
const REQUESTS = 24;
let req;
const servers = [];

before(() => {
  checkPrerequisites();
  const [rgb] = decodeFrames(VIDEO, [40], { filter: 'scale=192:144' });
  req = binaryRequest({ rgb, width: 192, height: 144 });
});

after(() => Promise.all(servers.map((s) => s.stop())));

async function start(args) {
  const server = await startServer([...REPLAY, ...args]);
  servers.push(server);
  return server;
}

// What a client makes of one reply.
async function outcome(server, timeoutMs = HANG_TIMEOUT_MS) {
  let reply;
  try {
    reply = await request(server.url, 'POST', '/v2/models/teacher/infer',
      { ...req, timeoutMs });
  } catch (err) {
    return err.code === 'TIMEOUT' ? 'hang' : `connection error ${err.code}`;
  }
  if (reply.status === 503)
    return reply.headers['retry-after'] === '1' ? '503 retry-after' : '503 without retry-after';
  if (reply.status !== 200)
    return String(reply.status);
  try {
    const { header, binary } = parseReply(reply);
    if (binary.mask?.length === header.outputs[0].shape.reduce((a, b) => a * b))
      return 'ok';
  } catch {
    // fall through: a malformed body
  }
  return 'garbage';
}

async function sequence(server) {
  const outcomes = [];
  for (let i = 0; i < REQUESTS; i++)
    outcomes.push(await outcome(server));
  return outcomes;
}

test('fail, garbage and hang rates: every kind shows up, the same for the same seed', async () => {
  const rates = ['--fail-rate', '0.3', '--garbage-rate', '0.2', '--hang-rate', '0.1', '--seed', '7'];
  const [first, second] = await Promise.all([start(rates), start(rates)]);
  const [a, b] = await Promise.all([sequence(first), sequence(second)]);
  assert.deepEqual(a, b);
  const count = (kind) => a.filter((o) => o === kind).length;
  assert.equal(count('ok') + count('503 retry-after') + count('500') + count('garbage') +
    count('hang'), REQUESTS, a.join(', '));
  for (const kind of ['ok', '503 retry-after', '500', 'garbage', 'hang'])
    assert.ok(count(kind) >= 1, `no '${kind}' in ${a.join(', ')}`);
  // 30% failures of 24 requests: far from none and from all.
  const failures = count('503 retry-after') + count('500');
  assert.ok(failures >= 3 && failures <= 14, `${failures} failures`);
  const metrics = (await request(first.url, 'GET', '/metrics')).body.toString();
  for (const [status, kind] of [['500', '500'], ['503', '503 retry-after'], ['garbage', 'garbage'],
    ['hang', 'hang']])
    assert.match(metrics, new RegExp(`^teacher_errors_total\\{route="models/infer",status="${status}"\\} ` +
      `${count(kind)}$`, 'm'), `errors counted as ${status}`);
});

test('--latency-ms delays answers, --down-after closes the listener', async () => {
  const server = await start(['--latency-ms', '300', '--down-after', '3']);
  for (let i = 0; i < 3; i++) {
    const started = Date.now();
    assert.equal(await outcome(server, 5000), 'ok');
    assert.ok(Date.now() - started >= 290, `answered after ${Date.now() - started} ms`);
  }
  await assert.rejects(request(server.url, 'GET', '/v2/health/live'),
    (err) => ['ECONNREFUSED', 'ECONNRESET'].includes(err.code));
  assert.equal(await outcome(server), 'connection error ECONNREFUSED');
});

// The mask of one well-formed reply (200, its binary tensor as announced).
async function mask(server) {
  const reply = await request(server.url, 'POST', '/v2/models/teacher/infer', req);
  assert.equal(reply.status, 200, reply.body.toString());
  const { header, binary } = parseReply(reply);
  assert.deepEqual(header.outputs[0].shape, [1, 144, 192]);
  return new Uint8Array(binary.mask);
}

const foreground = (m) => m.reduce((sum, v) => sum + v, 0) / m.length;

test('--wrong-labels-after: right labels, then well-formed wrong ones (noise from --seed, or ' +
  'inverted)', async () => {
  const after2 = ['--wrong-labels-after', '2'];
  const [noise, sameSeed, otherSeed, inverted] = await Promise.all([
    start([...after2, '--seed', '5']), start([...after2, '--seed', '5']),
    start([...after2, '--seed', '6']), start([...after2, '--wrong-labels', 'inverted'])]);
  const masks = async (server) => [await mask(server), await mask(server), await mask(server),
    await mask(server)];
  const [n, s, o, inv] = await Promise.all([noise, sameSeed, otherSeed, inverted].map(masks));
  const right = n[0];
  assert.ok(foreground(right) > 0.01 && foreground(right) < 0.5,
    `frame 40 has some people: ${foreground(right)}`);
  for (const m of [n[1], s[0], s[1], o[0], o[1], inv[0], inv[1]])
    assert.deepEqual(m, right, 'the first two answers are right');

  // Noise: a fixed pattern, half foreground, unrelated to the frame, the same for a seed.
  assert.deepEqual(n[2], n[3]);
  assert.deepEqual(n[2], s[2]);
  assert.notDeepEqual(n[2], o[2]);
  assert.ok(Math.abs(foreground(n[2]) - 0.5) < 0.02, `noise foreground ${foreground(n[2])}`);
  const iou = foregroundIou(n[2], right);
  assert.ok(iou < 0.2, `noise against the right labels: foreground IoU ${iou}`);

  // Inverted: foreground and background swapped.
  for (const m of inv.slice(2)) {
    const swapped = m.filter((v, i) => v === 1 - right[i]).length;
    assert.ok(swapped >= 0.999 * m.length, `${swapped} of ${m.length} pixels swapped`);
  }
});
