// Pixel work shared by the models: bilinear resizing (half-pixel centres, as PyTorch's
// align_corners=False and ffmpeg's bilinear) and area-averaged thumbnails.

// Source coordinate, neighbour pair and weight of each output column (or row).
function bilinearTaps(inSize, outSize) {
  const lo = new Int32Array(outSize);
  const hi = new Int32Array(outSize);
  const frac = new Float32Array(outSize);
  const scale = inSize / outSize;
  for (let i = 0; i < outSize; i++) {
    let x = (i + 0.5) * scale - 0.5;
    if (x < 0)
      x = 0;
    const x0 = Math.min(Math.floor(x), inSize - 1);
    lo[i] = x0;
    hi[i] = Math.min(x0 + 1, inSize - 1);
    frac[i] = x - x0;
  }
  return { lo, hi, frac };
}

// Resizes an interleaved image (channels per pixel) with bilinear interpolation into `out`, a
// typed array of outWidth * outHeight * channels (a float one keeps the fractions).
export function resizeBilinear(src, width, height, channels, outWidth, outHeight, out) {
  const xs = bilinearTaps(width, outWidth);
  const ys = bilinearTaps(height, outHeight);
  const stride = width * channels;
  for (let y = 0; y < outHeight; y++) {
    const row0 = ys.lo[y] * stride;
    const row1 = ys.hi[y] * stride;
    const fy = ys.frac[y];
    let o = y * outWidth * channels;
    for (let x = 0; x < outWidth; x++) {
      const a = xs.lo[x] * channels;
      const b = xs.hi[x] * channels;
      const fx = xs.frac[x];
      for (let c = 0; c < channels; c++) {
        const top = src[row0 + a + c] + (src[row0 + b + c] - src[row0 + a + c]) * fx;
        const bottom = src[row1 + a + c] + (src[row1 + b + c] - src[row1 + a + c]) * fx;
        out[o++] = top + (bottom - top) * fy;
      }
    }
  }
  return out;
}

// Area average of an interleaved image into outWidth x outHeight cells (any aspect: frame
// matching compares whole frames, whatever the client did to their shape).
export function thumbnail(src, width, height, channels, outWidth, outHeight) {
  // Smaller than the thumbnail: cells would be empty, interpolate instead.
  if (width < outWidth || height < outHeight) {
    const out = resizeBilinear(src, width, height, channels, outWidth, outHeight,
      new Float32Array(outWidth * outHeight * channels));
    return Uint8Array.from(out, Math.round);
  }
  const sums = new Float64Array(outWidth * outHeight * channels);
  const counts = new Float64Array(outWidth * outHeight);
  const cellX = new Int32Array(width);
  for (let x = 0; x < width; x++)
    cellX[x] = Math.floor((x * outWidth) / width);
  for (let y = 0; y < height; y++) {
    const cellRow = Math.floor((y * outHeight) / height) * outWidth;
    let i = y * width * channels;
    for (let x = 0; x < width; x++) {
      const cell = cellRow + cellX[x];
      counts[cell]++;
      for (let c = 0; c < channels; c++)
        sums[cell * channels + c] += src[i++];
    }
  }
  const out = new Uint8Array(sums.length);
  for (let i = 0; i < sums.length; i++)
    out[i] = Math.round(sums[i] / counts[Math.floor(i / channels)]);
  return out;
}
