// Replays stored teacher labels for one source video. A request carries only pixels, so the
// frame is found by content: every video frame is kept as a small thumbnail and the request's
// own thumbnail picks the nearest by the sum of absolute differences. Label frames are kept
// deflated (vtest: 795 frames of 768x576 are 351 MB raw, 20 MB deflated) and resized to the
// request's size on demand.
import { spawn } from 'node:child_process';
import zlib from 'node:zlib';
import { resizeBilinear, thumbnail } from './image.mjs';

// 64x48 RGB: large enough to tell consecutive frames apart after JPEG and downscaling, small
// enough for a full search of 795 frames in a few milliseconds.
const THUMB_WIDTH = 64;
const THUMB_HEIGHT = 48;
const THUMB_BYTES = THUMB_WIDTH * THUMB_HEIGHT * 3;

function probeSize(file) {
  return new Promise((resolve, reject) => {
    const child = spawn('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries',
      'stream=width,height', '-of', 'csv=p=0:s=x', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('error', (e) => reject(new Error(`cannot run ffprobe (${e.message}): install ffmpeg`)));
    child.on('close', (code) => {
      const m = /^(\d+)x(\d+)/.exec(out.trim());
      if (code !== 0 || !m)
        reject(new Error(`${file}: not a readable video (${err.trim() || 'no video stream'})`));
      else
        resolve({ width: Number(m[1]), height: Number(m[2]) });
    });
  });
}

// Decodes every frame of `file` with ffmpeg (optionally filtered) and hands each raw frame of
// frameBytes to onFrame(buffer, index); the buffer is only valid during the call. Frames come as
// the decoder presents them, none repeated or dropped to even out the rate, as GStreamer's
// decodebin gives them to distillseg (opencv-doc's Megamind.avi: 270 frames, 271 at a constant
// rate).
function decodeFrames(file, filter, pixFmt, frameBytes, onFrame) {
  return new Promise((resolve, reject) => {
    const args = ['-v', 'error', '-nostdin', '-i', file, '-map', '0:v:0', '-fps_mode', 'passthrough'];
    if (filter)
      args.push('-vf', filter);
    args.push('-f', 'rawvideo', '-pix_fmt', pixFmt, '-');
    const child = spawn('ffmpeg', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    // Pipe chunks (64 KiB) are joined once a whole frame is there, not on every chunk.
    let chunks = [];
    let pendingBytes = 0;
    let count = 0;
    let err = '';
    child.stdout.on('data', (data) => {
      chunks.push(data);
      pendingBytes += data.length;
      if (pendingBytes < frameBytes)
        return;
      const pending = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, pendingBytes);
      let at = 0;
      for (; at + frameBytes <= pending.length; at += frameBytes)
        onFrame(pending.subarray(at, at + frameBytes), count++);
      chunks = at < pending.length ? [pending.subarray(at)] : [];
      pendingBytes = pending.length - at;
    });
    child.stderr.on('data', (d) => { err += d; });
    child.on('error', (e) => reject(new Error(`cannot run ffmpeg (${e.message}): install ffmpeg`)));
    child.on('close', (code) => {
      if (code !== 0)
        reject(new Error(`${file}: ffmpeg failed to decode it: ${err.trim()}`));
      else
        resolve(count);
    });
  });
}

export class ReplayModel {
  static async load(videoPath, labelsPath) {
    const [video, labels] = await Promise.all([probeSize(videoPath), probeSize(labelsPath)]);
    const thumbs = [];
    const stored = [];
    const labelBytes = labels.width * labels.height;
    // The video is scaled by area averaging, as thumbnail() does for requests.
    const decodeVideo = decodeFrames(videoPath, `scale=${THUMB_WIDTH}:${THUMB_HEIGHT}:flags=area`,
      'rgb24', THUMB_BYTES, (frame) => thumbs.push(Buffer.from(frame)));
    const decodeLabels = decodeFrames(labelsPath, null, 'gray', labelBytes,
      (frame) => stored.push(zlib.deflateRawSync(frame, { level: 1 })));
    const [videoFrames, labelFrames] = await Promise.all([decodeVideo, decodeLabels]);
    if (videoFrames === 0)
      throw new Error(`${videoPath}: no frames decoded`);
    if (videoFrames !== labelFrames)
      throw new Error(`${labelsPath} has ${labelFrames} frames but ${videoPath} has ` +
        `${videoFrames}: labels need one frame per video frame`);
    const thumbTable = Buffer.concat(thumbs);
    return new ReplayModel(thumbTable, stored, labels.width, labels.height, video);
  }

  constructor(thumbTable, stored, labelWidth, labelHeight, video) {
    this.thumbTable = thumbTable;
    this.stored = stored;
    this.labelWidth = labelWidth;
    this.labelHeight = labelHeight;
    this.video = video;
    this.frames = stored.length;
    this.platform = 'replay';
  }

  // Index of the stored frame nearest to an RGB image, and its mean absolute difference.
  findFrame({ rgb, width, height }) {
    const thumb = thumbnail(rgb, width, height, 3, THUMB_WIDTH, THUMB_HEIGHT);
    const table = this.thumbTable;
    let best = -1;
    let bestSad = Infinity;
    for (let f = 0, base = 0; f < this.frames; f++, base += THUMB_BYTES) {
      let sad = 0;
      for (let i = 0; i < THUMB_BYTES && sad < bestSad; i++)
        sad += Math.abs(table[base + i] - thumb[i]);
      if (sad < bestSad) {
        bestSad = sad;
        best = f;
      }
    }
    return { index: best, meanDifference: bestSad / THUMB_BYTES };
  }

  // The stored label frame `index` (0..255 grey).
  label(index) {
    return zlib.inflateRawSync(this.stored[index]);
  }

  // Returns { map (0..255, width x height), parameters: { replay_frame } }.
  async infer(frame) {
    const { index, meanDifference } = this.findFrame(frame);
    const label = this.label(index);
    const { width, height } = frame;
    const map = width === this.labelWidth && height === this.labelHeight ? label :
      resizeBilinear(label, this.labelWidth, this.labelHeight, 1, width, height,
        new Float32Array(width * height));
    return { map, parameters: { replay_frame: index,
      replay_difference: Math.round(meanDifference * 100) / 100 } };
  }

  close() {}
}
