// A bad command line stops teacher-server/run at once with exit status 2 and says what to fix.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { LABELS, RUN, VIDEO } from './harness.mjs';

const cases = [
  [[], /--model is required/],
  [['--model', 'unet'], /--model unet: expected one of isnet, replay/],
  [['--model', 'replay', '--video', VIDEO], /--model replay needs --labels/],
  [['--model', 'isnet', '--latency-ms', '5'], /--latency-ms only applies to --model replay/],
  [['--model', 'isnet', '--port', '70000'], /--port 70000: expected an integer from 0 to 65535/],
  [['--model', 'isnet', '--output', 'logits'], /expected one of labels, probabilities/],
  [['--model', 'replay', '--video', VIDEO, '--labels', LABELS, '--fail-rate', '1.5'],
    /--fail-rate 1.5: expected a fraction between 0 and 1/],
  [['--model', 'replay', '--video', VIDEO, '--labels', LABELS, '--fail-rate', '0.6',
    '--hang-rate', '0.6'], /add up to more than 1/],
  [['--model', 'replay', '--video', VIDEO, '--labels', LABELS, '--wrong-labels', 'shuffled'],
    /--wrong-labels shuffled: expected one of noise, inverted/],
  [['--model', 'isnet', '--wrong-labels-after', '3'], /--wrong-labels-after only applies to --model replay/],
  [['--model', 'isnet', '--token-file', '/nonexistent/token'], /--token-file \/nonexistent\/token: cannot read it/],
  [['--model', 'isnet', '--gpu'], /unknown flag --gpu/],
  [['--model', 'isnet', 'extra'], /unexpected argument 'extra'/],
];

for (const [args, message] of cases) {
  test(`run ${args.join(' ') || '(no flags)'}`, () => {
    const result = spawnSync(RUN, args, { encoding: 'utf8', timeout: 120000 });
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, message);
    assert.match(result.stderr, /usage: teacher-server\/run --model isnet\|replay/);
    assert.equal(result.stdout, '');
  });
}

test('replay with missing files fails at start-up and names the file', () => {
  const result = spawnSync(RUN, ['--model', 'replay', '--port', '0', '--video', VIDEO,
    '--labels', '/nonexistent/labels.mkv'], { encoding: 'utf8', timeout: 120000 });
  assert.equal(result.status, 1);
  assert.match(result.stderr, /\/nonexistent\/labels\.mkv: no such file/);
  assert.equal(result.stdout, '', 'it never listened');
});
