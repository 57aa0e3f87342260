// Command line of teacher-server/run. Every flag is checked here, so that a typo stops the
// server at start-up with a message saying what to write instead.
import os from 'node:os';

export const USAGE = `usage: teacher-server/run --model isnet|replay [--name teacher] [--host 127.0.0.1]
         [--port 8000] [--output labels|probabilities] [--threads N] [--token-file F]
         [--tls-cert F --tls-key F] [--max-queue N]
       replay: --video V --labels L [--latency-ms N] [--fail-rate F] [--garbage-rate F]
         [--hang-rate F] [--down-after N] [--wrong-labels-after N]
         [--wrong-labels noise|inverted] [--seed S]`;

const FLAGS = {
  model: { kind: 'choice', choices: ['isnet', 'replay'] },
  name: { kind: 'string', default: 'teacher' },
  host: { kind: 'string', default: '127.0.0.1' },
  port: { kind: 'int', default: 8000, min: 0, max: 65535 },
  output: { kind: 'choice', choices: ['labels', 'probabilities'], default: 'labels' },
  threads: { kind: 'int', default: 0, min: 0, max: 1024 },
  'token-file': { kind: 'string' },
  'tls-cert': { kind: 'string' },
  'tls-key': { kind: 'string' },
  'max-queue': { kind: 'int', default: 4, min: 0, max: 1 << 20 },
  video: { kind: 'string', replay: true },
  labels: { kind: 'string', replay: true },
  'latency-ms': { kind: 'int', default: 0, min: 0, max: 3600000, replay: true },
  'fail-rate': { kind: 'rate', default: 0, replay: true },
  'garbage-rate': { kind: 'rate', default: 0, replay: true },
  'hang-rate': { kind: 'rate', default: 0, replay: true },
  'down-after': { kind: 'int', default: 0, min: 0, max: Number.MAX_SAFE_INTEGER, replay: true },
  'wrong-labels-after': { kind: 'int', default: 0, min: 0, max: Number.MAX_SAFE_INTEGER,
    replay: true },
  'wrong-labels': { kind: 'choice', choices: ['noise', 'inverted'], default: 'noise',
    replay: true },
  seed: { kind: 'int', default: 1, min: 0, max: 0xffffffff, replay: true },
};

function parseValue(flag, spec, text) {
  if (spec.kind === 'string')
    return text;
  if (spec.kind === 'choice') {
    if (!spec.choices.includes(text))
      throw new Error(`--${flag} ${text}: expected one of ${spec.choices.join(', ')}`);
    return text;
  }
  const value = Number(text);
  if (spec.kind === 'rate') {
    if (text === '' || !(value >= 0 && value <= 1))
      throw new Error(`--${flag} ${text}: expected a fraction between 0 and 1`);
    return value;
  }
  if (text === '' || !Number.isInteger(value) || value < spec.min || value > spec.max)
    throw new Error(`--${flag} ${text}: expected an integer from ${spec.min} to ${spec.max}`);
  return value;
}

// Returns { model, name, host, port, output, threads, tokenFile, tlsCert, tlsKey, maxQueue,
// video, labels,
// latencyMs, failRate, garbageRate, hangRate, downAfter, wrongLabelsAfter, wrongLabels, seed };
// throws on a bad command line.
export function parseOptions(argv) {
  const given = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--'))
      throw new Error(`unexpected argument '${arg}': flags start with --`);
    const eq = arg.indexOf('=');
    const flag = arg.slice(2, eq < 0 ? undefined : eq);
    const spec = FLAGS[flag];
    if (!spec)
      throw new Error(`unknown flag --${flag}`);
    let text;
    if (eq >= 0)
      text = arg.slice(eq + 1);
    else if (i + 1 < argv.length)
      text = argv[++i];
    else
      throw new Error(`--${flag} needs a value`);
    given[flag] = parseValue(flag, spec, text);
  }
  if (!given.model)
    throw new Error('--model is required: isnet (the real network) or replay (stored labels)');
  if (given.model === 'replay') {
    for (const flag of ['video', 'labels'])
      if (!given[flag])
        throw new Error(`--model replay needs --${flag}`);
  } else {
    const misplaced = Object.keys(given).filter((flag) => FLAGS[flag].replay);
    if (misplaced.length)
      throw new Error(`--${misplaced[0]} only applies to --model replay`);
  }
  const options = {};
  for (const [flag, spec] of Object.entries(FLAGS)) {
    const key = flag.replace(/-(\w)/g, (_, c) => c.toUpperCase());
    options[key] = flag in given ? given[flag] : spec.default;
  }
  if (!options.tlsCert !== !options.tlsKey)
    throw new Error('--tls-cert and --tls-key go together: give the certificate and its key');
  if (options.failRate + options.garbageRate + options.hangRate > 1)
    throw new Error('--fail-rate, --garbage-rate and --hang-rate add up to more than 1');
  if (options.threads === 0)
    options.threads = os.availableParallelism();
  return options;
}
