// The model input `image`: UINT8 [1,H,W,3] RGB, or BYTES [1] holding a JPEG.
import { createRequire } from 'node:module';
import { RequestError } from './kserve.mjs';

const require = createRequire(import.meta.url);
// jpeg-js (pure JS, pinned in the lock) decodes a 768x576 frame in ~45 ms, against ~105 ms for
// an ffmpeg child process: the process start-up dominates.
const jpeg = require('jpeg-js');

export const INPUT_NAME = 'image';
const MAX_SIDE = 8192;
const HOW = `send '${INPUT_NAME}' as UINT8 [1,H,W,3] (RGB, row-major) or BYTES [1] holding a JPEG`;

function decodeJpeg(bytes) {
  if (bytes.length < 3 || bytes[0] !== 0xff || bytes[1] !== 0xd8)
    throw new RequestError(400, `input '${INPUT_NAME}': the BYTES element is not a JPEG ` +
      `(no FF D8 start marker); ${HOW}`);
  let decoded;
  try {
    decoded = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false,
      maxResolutionInMP: (MAX_SIDE * MAX_SIDE) / 1e6, maxMemoryUsageInMB: 1024 });
  } catch (err) {
    throw new RequestError(400, `input '${INPUT_NAME}': cannot decode the JPEG: ${err.message ?? err}`);
  }
  return { rgb: decoded.data, width: decoded.width, height: decoded.height };
}

// Returns { rgb: Uint8Array (interleaved RGB), width, height } from a parsed request.
export function frameFromInputs(inputs) {
  const input = inputs.find((i) => i.name === INPUT_NAME);
  if (!input) {
    const names = inputs.map((i) => `'${i.name}'`).join(', ') || 'none';
    throw new RequestError(400, `no input named '${INPUT_NAME}' (got ${names}); ${HOW}`);
  }
  const { datatype, shape, value } = input;
  if (datatype === 'UINT8') {
    if (shape.length !== 4 || shape[0] !== 1 || shape[3] !== 3 || shape[1] < 1 || shape[2] < 1)
      throw new RequestError(400, `input '${INPUT_NAME}': UINT8 shape [${shape}] is not ` +
        `[1,H,W,3]; ${HOW}`);
    if (shape[1] > MAX_SIDE || shape[2] > MAX_SIDE)
      throw new RequestError(400, `input '${INPUT_NAME}': ${shape[2]}x${shape[1]} is larger ` +
        `than ${MAX_SIDE} on a side; downscale the frame`);
    return { rgb: value, width: shape[2], height: shape[1] };
  }
  if (datatype === 'BYTES') {
    if (shape.length !== 1 || shape[0] !== 1 || value.length !== 1)
      throw new RequestError(400, `input '${INPUT_NAME}': BYTES shape [${shape}] with ` +
        `${value.length} elements is not [1]; ${HOW}`);
    return decodeJpeg(value[0]);
  }
  throw new RequestError(400, `input '${INPUT_NAME}': datatype ${datatype} is not accepted; ${HOW}`);
}
