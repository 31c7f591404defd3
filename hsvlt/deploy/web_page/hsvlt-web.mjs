// The web demo's view of an image and of a model's manifest: the same steps as Python's hsvlt.images.read_image
// (alpha over white) and hsvlt.preprocess (resize rule, interpolation, [0, 1] scaling), so that the page
// and `hsvlt predict` feed the model the same tensor. The browser decodes the file (EXIF orientation applied,
// colour profile ignored, as OpenCV does) and hands over RGBA pixels; everything after that happens here.
//
// The resizes reproduce OpenCV's 8-bit arithmetic (fixed-point bilinear, float area averages, its rounding),
// not an idealised resampler: tests/web/ holds them to tensors written by Python within 1 LSB.

export const INTERPOLATIONS = ["none", "area", "linear"];

// OpenCV rounds float to 8-bit with lrint: to nearest, ties to even.
export function roundHalfEven(value) {
  const floor = Math.floor(value);
  const fraction = value - floor;
  if (fraction > 0.5) return floor + 1;
  if (fraction < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

const f32 = Math.fround;
const clampByte = (value) => (value < 0 ? 0 : value > 255 ? 255 : value);

// RGBA (unpremultiplied, as getImageData gives it) -> RGB, transparent pixels over white: what a viewer shows on
// a white page. The float32 steps of hsvlt.images.composite_over_white, one by one, so the bytes are the same.
export function compositeOverWhite(rgba, width, height) {
  const count = width * height;
  if (rgba.length !== count * 4) throw new Error(`expected ${count * 4} RGBA bytes, got ${rgba.length}`);
  const rgb = new Uint8Array(count * 3);
  for (let i = 0; i < count; i++) {
    const alphaByte = rgba[i * 4 + 3];
    for (let c = 0; c < 3; c++) {
      const colour = rgba[i * 4 + c];
      if (alphaByte === 255) {
        rgb[i * 3 + c] = colour;
        continue;
      }
      const alpha = f32(alphaByte / 255);
      const value = f32(f32(colour * alpha) + f32(255 * f32(1 - alpha)));
      rgb[i * 3 + c] = clampByte(roundHalfEven(value));
    }
  }
  return rgb;
}

// The interpolation hsvlt.preprocess.prepare_image chooses for a width x height image: none at the input
// size, area when both sides shrink, bilinear otherwise.
export function chooseInterpolation(width, height, size) {
  if (width === size && height === size) return "none";
  return Math.min(width, height) > size ? "area" : "linear";
}

const COEF_BITS = 11; // OpenCV's INTER_RESIZE_COEF_BITS
const COEF_SCALE = 1 << COEF_BITS;
const VECTOR_BYTES = 16; // the 128-bit vector loop of OpenCV's vertical pass (its remainder runs scalar)

// OpenCV's scale from a source side to a destination side: the inverse of the inverse, in double precision.
const sourceScale = (sourceSize, size) => 1 / (size / sourceSize);

// Source index and the two fixed-point weights of each destination index (OpenCV's INTER_LINEAR table).
// Columns past an edge take the edge pixel whole; rows keep their weights and read the edge row twice, as
// OpenCV does (the vertical pass rounds each product, so the two are not the same bytes).
function linearTable(sourceSize, size, clampWeights) {
  const scale = sourceScale(sourceSize, size);
  const index = new Int32Array(size * 2);
  const weights = new Int32Array(size * 2);
  for (let d = 0; d < size; d++) {
    let fraction = f32((d + 0.5) * scale - 0.5);
    let source = Math.floor(fraction);
    fraction = f32(fraction - source);
    if (clampWeights && source < 0) {
      fraction = 0;
      source = 0;
    }
    if (clampWeights && source >= sourceSize - 1) {
      fraction = 0;
      source = sourceSize - 1;
    }
    index[d * 2] = Math.min(Math.max(source, 0), sourceSize - 1);
    index[d * 2 + 1] = Math.min(Math.max(source + 1, 0), sourceSize - 1);
    weights[d * 2] = roundHalfEven(f32(f32(1 - fraction) * COEF_SCALE));
    weights[d * 2 + 1] = roundHalfEven(f32(fraction * COEF_SCALE));
  }
  return { index, weights };
}

// OpenCV's INTER_LINEAR for 8-bit images: a horizontal pass in integers (weights of 2^11), then a vertical pass
// that, like OpenCV's vector loop, drops 4 bits before multiplying and keeps the high 16 bits of each product.
export function resizeLinear(rgb, width, height, size) {
  const columns = linearTable(width, size, true);
  const rows = linearTable(height, size, false);
  const rowBytes = size * 3;
  const horizontal = (y) => {
    const line = new Int32Array(rowBytes);
    const base = y * width * 3;
    for (let x = 0; x < size; x++) {
      const s = columns.index[x * 2];
      const next = columns.index[x * 2 + 1];
      const a0 = columns.weights[x * 2];
      const a1 = columns.weights[x * 2 + 1];
      for (let c = 0; c < 3; c++) {
        line[x * 3 + c] = rgb[base + s * 3 + c] * a0 + rgb[base + next * 3 + c] * a1;
      }
    }
    return line;
  };
  const cache = new Map();
  const rowOf = (y) => {
    if (!cache.has(y)) cache.set(y, horizontal(y));
    return cache.get(y);
  };
  const out = new Uint8Array(size * rowBytes);
  const vectorEnd = rowBytes - (rowBytes % VECTOR_BYTES);
  const highProduct = (value, weight) => Math.floor((value * weight) / 65536);
  const toInt16 = (value) => Math.max(-32768, Math.min(32767, value));
  for (let y = 0; y < size; y++) {
    const top = rowOf(rows.index[y * 2]);
    const bottom = rowOf(rows.index[y * 2 + 1]);
    const b0 = rows.weights[y * 2];
    const b1 = rows.weights[y * 2 + 1];
    for (let i = 0; i < rowBytes; i++) {
      let value;
      if (i < vectorEnd) {
        const x0 = toInt16(top[i] >> 4);
        const x1 = toInt16(bottom[i] >> 4);
        value = toInt16(highProduct(x0, b0) + highProduct(x1, b1) + 2) >> 2;
      } else {
        value = (top[i] * b0 + bottom[i] * b1 + (1 << (2 * COEF_BITS - 1))) >> (2 * COEF_BITS);
      }
      out[y * rowBytes + i] = clampByte(value);
    }
  }
  // MiB-sized rows are not kept past the call.
  cache.clear();
  return out;
}

// OpenCV's INTER_AREA for an integer shrink factor on both sides: block sums times 1 / area (in float32), or
// (sum + 2) >> 2 for 2 x 2 blocks, its vector path.
function resizeAreaWhole(rgb, width, height, size, factorX, factorY) {
  const out = new Uint8Array(size * size * 3);
  const area = factorX * factorY;
  const scale = f32(1 / area);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (let dy = 0; dy < factorY; dy++) {
          const base = ((y * factorY + dy) * width + x * factorX) * 3 + c;
          for (let dx = 0; dx < factorX; dx++) sum += rgb[base + dx * 3];
        }
        out[(y * size + x) * 3 + c] = area === 4 ? (sum + 2) >> 2 : clampByte(roundHalfEven(f32(sum * scale)));
      }
    }
  }
  return out;
}

// OpenCV's area table: which source cells cover each destination cell, with float32 weights.
function areaTable(sourceSize, size) {
  const scale = sourceScale(sourceSize, size);
  const entries = [];
  for (let d = 0; d < size; d++) {
    const start = d * scale;
    const end = start + scale;
    const cell = Math.min(scale, sourceSize - start);
    const last = Math.min(Math.floor(end), sourceSize - 1);
    const first = Math.min(Math.ceil(start), last);
    if (first - start > 1e-3) entries.push([d, first - 1, f32((first - start) / cell)]);
    for (let s = first; s < last; s++) entries.push([d, s, f32(1 / cell)]);
    if (end - last > 1e-3) entries.push([d, last, f32(Math.min(Math.min(end - last, 1), cell) / cell)]);
  }
  return entries;
}

// OpenCV's INTER_AREA for a fractional shrink factor: weighted sums in float32, row by row.
function resizeAreaFraction(rgb, width, height, size) {
  const columns = areaTable(width, size);
  const rows = areaTable(height, size);
  const rowBytes = size * 3;
  const out = new Uint8Array(size * rowBytes);
  const line = new Float32Array(rowBytes);
  const sum = new Float32Array(rowBytes);
  let current = rows[0][0];
  const flush = (y) => {
    for (let i = 0; i < rowBytes; i++) out[y * rowBytes + i] = clampByte(roundHalfEven(sum[i]));
  };
  for (const [dy, sy, beta] of rows) {
    line.fill(0);
    const base = sy * width * 3;
    for (const [dx, sx, alpha] of columns) {
      for (let c = 0; c < 3; c++) {
        line[dx * 3 + c] = f32(line[dx * 3 + c] + f32(rgb[base + sx * 3 + c] * alpha));
      }
    }
    if (dy !== current) {
      flush(current);
      for (let i = 0; i < rowBytes; i++) sum[i] = f32(beta * line[i]);
      current = dy;
    } else {
      for (let i = 0; i < rowBytes; i++) sum[i] = f32(sum[i] + f32(beta * line[i]));
    }
  }
  flush(current);
  return out;
}

// OpenCV's INTER_AREA when shrinking both sides.
export function resizeArea(rgb, width, height, size) {
  const scaleX = sourceScale(width, size);
  const scaleY = sourceScale(height, size);
  const factorX = Math.round(scaleX);
  const factorY = Math.round(scaleY);
  if (Math.abs(scaleX - factorX) < Number.EPSILON && Math.abs(scaleY - factorY) < Number.EPSILON) {
    return resizeAreaWhole(rgb, width, height, size, factorX, factorY);
  }
  return resizeAreaFraction(rgb, width, height, size);
}

// RGB bytes of any size -> size x size x 3 bytes, as hsvlt.preprocess.prepare_image makes them.
export function prepareImage(rgb, width, height, size) {
  const interpolation = chooseInterpolation(width, height, size);
  if (interpolation === "none") return { pixels: rgb, interpolation };
  const resize = interpolation === "area" ? resizeArea : resizeLinear;
  return { pixels: resize(rgb, width, height, size), interpolation };
}

// size x size x 3 bytes -> float32 3 x size x size in [0, 1] (hsvlt.preprocess.to_input).
export function toInput(pixels, size) {
  const plane = size * size;
  const input = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) input[c * plane + i] = pixels[i * 3 + c] / 255;
  }
  return input;
}

// Decoded RGBA pixels -> the model's input and what was done to get it.
export function preprocess(rgba, width, height, size) {
  const rgb = compositeOverWhite(rgba, width, height);
  const { pixels, interpolation } = prepareImage(rgb, width, height, size);
  return { input: toInput(pixels, size), pixels, interpolation };
}

// ---- the manifest -------------------------------------------------------------------------------------------

export class ManifestError extends Error {}

// A manifest (model.onnx.json, parsed) -> what the page needs, or ManifestError naming the first problem.
export function readManifest(manifest, name = "manifest") {
  const fail = (problem) => {
    throw new ManifestError(`${name}: ${problem}`);
  };
  if (manifest === null || typeof manifest !== "object" || Array.isArray(manifest)) fail("not a JSON object");
  const missing = ["labels", "thresholds", "input", "preset"].filter((key) => !(key in manifest));
  if (missing.length) fail(`manifest lacks ${missing.sort().join(", ")}`);
  const { labels, thresholds, input } = manifest;
  if (!Array.isArray(labels) || !labels.length || !labels.every((l) => typeof l === "string")) {
    fail("labels must be a list of names");
  }
  if (!Array.isArray(thresholds) || !thresholds.every((t) => typeof t === "number" && t >= 0 && t <= 1)) {
    fail("thresholds must be numbers in [0, 1]");
  }
  if (thresholds.length !== labels.length) fail(`${thresholds.length} thresholds for ${labels.length} labels`);
  const shape = input && input.shape;
  if (!Array.isArray(shape) || shape.length !== 4 || shape[1] !== 3 || shape[2] !== shape[3] ||
      !Number.isInteger(shape[3]) || shape[3] < 1) {
    fail("input.shape must be [N, 3, S, S]");
  }
  const outputs = Array.isArray(manifest.outputs) ? manifest.outputs : [];
  const attention = outputs.find((output) => output && output.name === "attention") || null;
  return {
    labels: [...labels],
    thresholds: Float32Array.from(thresholds),
    size: shape[3],
    preset: String(manifest.preset),
    precision: manifest.precision || "fp32",
    format: manifest.format || "onnx",
    attention: attention ? { shape: attention.shape, stride: attention.stride } : null,
  };
}

// The manifest against the program's own input and outputs (ONNX Runtime's session metadata), as
// hsvlt.deploy.runtimes.Model.check_program does it: a manifest of another export is named, not run.
export function checkManifestAgainstModel(manifest, session, modelName = "the model", manifestName = "manifest") {
  const fail = (problem) => {
    throw new ManifestError(`${manifestName}: ${problem} (a manifest of another export?)`);
  };
  if (session.inputNames.length !== 1) fail(`${modelName} has ${session.inputNames.length} inputs, not 1`);
  if (!session.outputNames.includes("probabilities")) fail(`${modelName} has no "probabilities" output`);
  const dims = (metadata, name) => {
    const found = (metadata || []).find((entry) => entry.name === name);
    return found && Array.isArray(found.shape) ? found.shape : null;
  };
  const input = dims(session.inputMetadata, session.inputNames[0]);
  if (input && input.length === 4 && Number.isInteger(input[3]) && input[3] !== manifest.size) {
    fail(`says ${manifest.size} px input, but ${modelName} takes ${input[3]} px`);
  }
  const scores = dims(session.outputMetadata, "probabilities");
  if (scores && scores.length === 2 && Number.isInteger(scores[1]) && scores[1] !== manifest.labels.length) {
    fail(`lists ${manifest.labels.length} labels, but ${modelName} scores ${scores[1]}`);
  }
  if (manifest.attention && !session.outputNames.includes("attention")) {
    fail(`lists an attention output that ${modelName} does not have`);
  }
}

// ---- scores over time, and where -----------------------------------------------------------------------------

// hsvlt/deploy/smoothing.py's LabelSmoother, in float32 as numpy computes it: a moving average of probabilities,
// and hysteresis (a shown label goes off below threshold x (1 - hysteresis)).
export class LabelSmoother {
  constructor(thresholds, smoothing = 0.5, hysteresis = 0.2) {
    if (!(smoothing >= 0 && smoothing < 1)) throw new Error(`smoothing must be in [0, 1), got ${smoothing}`);
    if (!(hysteresis >= 0 && hysteresis < 1)) throw new Error(`hysteresis must be in [0, 1), got ${hysteresis}`);
    this.on = Float32Array.from(thresholds);
    const keep = f32(1 - hysteresis);
    this.off = this.on.map((t) => f32(t * keep));
    this.smoothing = smoothing;
    this.probabilities = null;
    this.active = new Array(this.on.length).fill(false);
  }

  update(probabilities) {
    if (this.probabilities === null) {
      this.probabilities = Float32Array.from(probabilities);
    } else {
      const past = f32(this.smoothing);
      const now = f32(1 - this.smoothing);
      this.probabilities = this.probabilities.map((p, i) => f32(f32(past * p) + f32(now * probabilities[i])));
    }
    this.active = this.active.map((on, i) => this.probabilities[i] >= (on ? this.off[i] : this.on[i]));
    return [...this.active];
  }

  reset() {
    this.probabilities = null;
    this.active.fill(false);
  }
}

// Indices of the labels at or above their thresholds, best first (hsvlt.Classifier's label set).
export function labelsAbove(probabilities, thresholds) {
  const chosen = [];
  for (let i = 0; i < probabilities.length; i++) if (probabilities[i] >= thresholds[i]) chosen.push(i);
  return chosen.sort((a, b) => probabilities[b] - probabilities[a]);
}

// One label's rows x cols attention map (a flat slice) -> the centre of its strongest cell, in pixels of a
// width x height image (hsvlt.deploy.runtimes.attention_peak: the first maximum wins).
export function attentionPeak(map, rows, cols, width, height) {
  let best = 0;
  for (let i = 1; i < rows * cols; i++) if (map[i] > map[best]) best = i;
  const row = Math.floor(best / cols);
  const col = best % cols;
  return [((col + 0.5) * width) / cols, ((row + 0.5) * height) / rows];
}

export function median(values) {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

// The median of the last `size` values: the page's latency over recent frames.
export class RecentMedian {
  constructor(size = 30) {
    this.size = size;
    this.values = [];
  }

  add(value) {
    this.values.push(value);
    if (this.values.length > this.size) this.values.shift();
    return this.median();
  }

  median() {
    return median(this.values);
  }
}
