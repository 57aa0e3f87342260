// KServe v2 inference request and response bodies, JSON and Triton's binary tensor extension:
// a JSON header of Inference-Header-Content-Length bytes followed by the raw tensors, each input
// with "parameters":{"binary_data_size":n} taking its n bytes in order.

// An error the client caused: the message is sent back as {"error": message} with this status.
export class RequestError extends Error {
  constructor(status, message, headers = {}) {
    super(message);
    this.status = status;
    this.headers = headers;
  }
}

const ELEMENT_BYTES = { BOOL: 1, UINT8: 1, INT8: 1, UINT16: 2, INT16: 2, FP16: 2, UINT32: 4,
  INT32: 4, FP32: 4, UINT64: 8, INT64: 8, FP64: 8 };

function elementCount(shape) {
  return shape.reduce((n, d) => n * d, 1);
}

// Splits Triton's binary BYTES layout: each element is a 4-byte little-endian length and bytes.
export function splitBytesElements(buffer, name) {
  const elements = [];
  for (let at = 0; at < buffer.length;) {
    if (at + 4 > buffer.length)
      throw new RequestError(400, `input '${name}': BYTES data ends inside an element length`);
    const length = buffer.readUInt32LE(at);
    if (at + 4 + length > buffer.length)
      throw new RequestError(400,
        `input '${name}': BYTES element of ${length} bytes runs past the end of its data`);
    elements.push(buffer.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
  return elements;
}

function checkShape(input) {
  const { name, shape } = input;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0))
    throw new RequestError(400, `input '${name}': shape must be an array of non-negative integers`);
}

// Turns one input's data (binary slice or JSON `data`) into a Buffer for fixed-size types or an
// array of Buffers for BYTES.
function inputData(input, binary) {
  const { name, datatype, shape } = input;
  if (datatype === 'BYTES') {
    if (binary)
      return splitBytesElements(binary, name);
    if (!Array.isArray(input.data))
      throw new RequestError(400, `input '${name}': no data (JSON "data" or "binary_data_size")`);
    // JSON has no raw bytes: BYTES elements come as base64 strings.
    return input.data.flat(Infinity).map((s) => {
      if (typeof s !== 'string')
        throw new RequestError(400, `input '${name}': JSON BYTES elements must be base64 strings`);
      return Buffer.from(s, 'base64');
    });
  }
  const size = ELEMENT_BYTES[datatype];
  if (!size)
    throw new RequestError(400, `input '${name}': unknown datatype '${datatype}'`);
  const expected = elementCount(shape) * size;
  if (binary) {
    if (binary.length !== expected)
      throw new RequestError(400, `input '${name}': ${datatype} shape [${shape}] needs ` +
        `${expected} bytes, binary_data_size is ${binary.length}`);
    return binary;
  }
  if (!Array.isArray(input.data))
    throw new RequestError(400, `input '${name}': no data (JSON "data" or "binary_data_size")`);
  const values = input.data.flat(Infinity);
  if (values.length * size !== expected)
    throw new RequestError(400, `input '${name}': shape [${shape}] has ${expected / size} ` +
      `elements, data has ${values.length}`);
  if (datatype !== 'UINT8')
    return values;
  if (!values.every((v) => Number.isInteger(v) && v >= 0 && v <= 255))
    throw new RequestError(400, `input '${name}': UINT8 data must be integers from 0 to 255`);
  return Buffer.from(values);
}

// Parses an infer request body. Returns { id, parameters, inputs: [{ name, datatype, shape,
// value }], outputs: [{ name, binary }] | null (all outputs, as JSON) }.
export function parseInferRequest(body, headerLengthText) {
  let jsonLength = body.length;
  if (headerLengthText !== undefined) {
    jsonLength = Number(headerLengthText);
    if (!Number.isInteger(jsonLength) || jsonLength < 0 || jsonLength > body.length)
      throw new RequestError(400, `Inference-Header-Content-Length ${headerLengthText} is not ` +
        `a byte count within the ${body.length}-byte body`);
  }
  let header;
  try {
    header = JSON.parse(body.subarray(0, jsonLength).toString('utf8'));
  } catch (err) {
    throw new RequestError(400, `request header is not valid JSON (${err.message}); binary ` +
      'requests need Inference-Header-Content-Length');
  }
  if (header === null || typeof header !== 'object' || !Array.isArray(header.inputs))
    throw new RequestError(400, 'request has no "inputs" array');
  let at = jsonLength;
  const inputs = header.inputs.map((input) => {
    if (input === null || typeof input !== 'object' || typeof input.name !== 'string')
      throw new RequestError(400, 'every input needs a "name"');
    checkShape(input);
    let binary = null;
    const binarySize = input.parameters?.binary_data_size;
    if (binarySize !== undefined) {
      if (!Number.isInteger(binarySize) || binarySize < 0 || at + binarySize > body.length)
        throw new RequestError(400, `input '${input.name}': binary_data_size ${binarySize} ` +
          `runs past the end of the body (${body.length - at} bytes left)`);
      binary = body.subarray(at, at + binarySize);
      at += binarySize;
    }
    return { name: input.name, datatype: input.datatype, shape: input.shape,
      value: inputData(input, binary) };
  });
  if (at !== body.length)
    throw new RequestError(400, `${body.length - at} bytes after the last binary input: ` +
      'binary_data_size values do not add up to the body');
  const binaryByDefault = header.parameters?.binary_data_output === true;
  const outputs = Array.isArray(header.outputs) ? header.outputs.map((output) => {
    if (output === null || typeof output !== 'object' || typeof output.name !== 'string')
      throw new RequestError(400, 'every requested output needs a "name"');
    const binary = output.parameters?.binary_data;
    return { name: output.name, binary: binary === undefined ? binaryByDefault : binary === true };
  }) : null;
  return { id: header.id, parameters: header.parameters, inputs, outputs, binaryByDefault };
}

// Builds a response: outputs is [{ name, datatype, shape, data (typed array), binary }].
// Returns { body, headers }.
export function encodeInferResponse({ modelName, modelVersion, id, parameters, outputs }) {
  const chunks = [];
  const header = { model_name: modelName, model_version: modelVersion };
  if (id !== undefined)
    header.id = id;
  if (parameters)
    header.parameters = parameters;
  header.outputs = outputs.map((output) => {
    const entry = { name: output.name, datatype: output.datatype, shape: output.shape };
    if (output.binary) {
      const bytes = Buffer.from(output.data.buffer, output.data.byteOffset, output.data.byteLength);
      entry.parameters = { binary_data_size: bytes.length };
      chunks.push(bytes);
    } else {
      entry.data = Array.from(output.data);
    }
    return entry;
  });
  const json = Buffer.from(JSON.stringify(header));
  if (!chunks.length)
    return { body: json, headers: { 'Content-Type': 'application/json' } };
  return {
    body: Buffer.concat([json, ...chunks]),
    headers: { 'Content-Type': 'application/octet-stream',
      'Inference-Header-Content-Length': String(json.length) },
  };
}
