// The web page's preprocessing and manifest reading (hsvlt/deploy/web_page/hsvlt-web.mjs) against what Python
// computes: golden tensors written by tests/web/make_golden.py from real photos. Run: node --test tests/web/

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { gunzipSync } from "node:zlib";

import * as hsvlt from "../../hsvlt/deploy/web_page/hsvlt-web.mjs";

const golden = (name) => JSON.parse(readFileSync(new URL(`./golden/${name}`, import.meta.url)));
const unpack = (text, Type) => {
  const bytes = gunzipSync(Buffer.from(text, "base64"));
  return new Type(bytes.buffer, bytes.byteOffset, bytes.byteLength / Type.BYTES_PER_ELEMENT);
};

const preprocessing = golden("preprocessing.json");

test("the golden cases cover every resize path, non-square photos larger and smaller than the input", () => {
  const { size, cases } = preprocessing;
  const kinds = new Set(cases.map((c) => c.interpolation));
  assert.deepEqual([...kinds].sort(), ["area", "linear", "none"]);
  assert.ok(cases.some((c) => c.width > size && c.height > size && c.width !== c.height));
  assert.ok(cases.some((c) => c.width < size && c.height < size && c.width !== c.height));
  assert.ok(cases.some((c) => c.name === "transparent"));
});

for (const c of preprocessing.cases) {
  test(`preprocessing equals Python's within 1 LSB: ${c.name} (${c.width} x ${c.height} -> ${c.size})`, () => {
    const rgba = unpack(c.rgba, Uint8Array);
    const expected = unpack(c.expected, Float32Array);
    assert.equal(rgba.length, c.width * c.height * 4);
    assert.equal(hsvlt.chooseInterpolation(c.width, c.height, c.size), c.interpolation);
    const { input, interpolation } = hsvlt.preprocess(rgba, c.width, c.height, c.size);
    assert.equal(interpolation, c.interpolation);
    assert.equal(input.length, expected.length);
    let worst = 0;
    for (let i = 0; i < input.length; i++) {
      worst = Math.max(worst, Math.abs(Math.round(input[i] * 255) - Math.round(expected[i] * 255)));
    }
    assert.ok(worst <= 1, `${c.name}: ${worst} levels apart`);
    assert.ok(Math.min(...input) >= 0 && Math.max(...input) <= 1);
  });
}

test("[0, 1] scaling is value / 255 in float32, channels first", () => {
  const pixels = Uint8Array.from([0, 128, 255, 1, 2, 3, 4, 5, 6, 7, 8, 9]); // 2 x 2 pixels
  const expected = [0, 1, 4, 7, 128, 2, 5, 8, 255, 3, 6, 9].map((v) => Math.fround(v / 255));
  assert.deepEqual([...hsvlt.toInput(pixels, 2)], expected);
});

test("an image at the input size is not resized", () => {
  const rgba = new Uint8Array(4 * 4 * 4).map((_, i) => (i % 4 === 3 ? 255 : i));
  const { pixels, interpolation } = hsvlt.prepareImage(hsvlt.compositeOverWhite(rgba, 4, 4), 4, 4, 4);
  assert.equal(interpolation, "none");
  assert.deepEqual([...pixels.subarray(0, 6)], [0, 1, 2, 4, 5, 6]);
});

test("alpha over white: transparent is white, opaque is the colour", () => {
  const rgba = Uint8Array.from([10, 20, 30, 0, 10, 20, 30, 255, 0, 0, 0, 128]);
  assert.deepEqual([...hsvlt.compositeOverWhite(rgba, 3, 1)], [255, 255, 255, 10, 20, 30, 127, 127, 127]);
});

test("round half to even, as OpenCV's saturate_cast", () => {
  assert.deepEqual([0.5, 1.5, 2.5, 2.4, 2.6, -0.5].map(hsvlt.roundHalfEven), [0, 2, 2, 2, 3, 0]);
});

test("the smoother follows hsvlt/deploy/smoothing.py frame by frame", () => {
  const { thresholds, smoothing, hysteresis, steps } = golden("smoother.json");
  const smoother = new hsvlt.LabelSmoother(thresholds, smoothing, hysteresis);
  for (const [index, step] of steps.entries()) {
    const active = smoother.update(Float32Array.from(step.probabilities));
    assert.deepEqual(active, step.active, `frame ${index}`);
    assert.deepEqual([...smoother.probabilities], step.smoothed.map(Math.fround), `frame ${index}`);
  }
  assert.throws(() => new hsvlt.LabelSmoother(thresholds, 1.0, 0.2), /smoothing/);
});

test("attention peaks land where Python's attention_peak puts them", () => {
  for (const c of golden("peaks.json")) {
    const point = hsvlt.attentionPeak(Float32Array.from(c.map), c.rows, c.cols, c.width, c.height);
    assert.deepEqual(point, c.peak);
  }
});

test("labels above threshold, best first", () => {
  assert.deepEqual(hsvlt.labelsAbove([0.2, 0.9, 0.5, 0.7], [0.5, 0.5, 0.5, 0.8]), [1, 2]);
});

test("a manifest written by Python reads whole", () => {
  const manifest = hsvlt.readManifest(golden("manifest.json"), "model.onnx.json");
  assert.equal(manifest.labels.length, 10);
  assert.equal(manifest.thresholds.length, 10);
  assert.equal(manifest.size, 64);
  assert.equal(manifest.preset, "hsvlt_pico");
  assert.deepEqual(manifest.attention.shape, ["N", 10, 8, 8]);
});

test("a broken manifest is named with its problem", () => {
  const good = golden("manifest.json");
  const cases = [
    [[1, 2], /not a JSON object/],
    [{ ...good, labels: undefined, preset: undefined }, /lacks .*labels/],
    [{ ...good, thresholds: good.thresholds.slice(1) }, /9 thresholds for 10 labels/],
    [{ ...good, thresholds: good.thresholds.map(() => 2) }, /thresholds must be numbers in \[0, 1\]/],
    [{ ...good, input: { shape: ["N", 3, 64] } }, /input.shape/],
  ];
  for (const [value, message] of cases) {
    const broken = JSON.parse(JSON.stringify(value));
    assert.throws(() => hsvlt.readManifest(broken, "m.json"), (error) => {
      assert.ok(error instanceof hsvlt.ManifestError);
      assert.match(error.message, /^m\.json: /);
      assert.match(error.message, message);
      return true;
    });
  }
});

test("a manifest of another export is refused against the session's own shapes", () => {
  const manifest = hsvlt.readManifest(golden("manifest.json"));
  const session = (side, classes, outputs = ["probabilities", "attention"]) => ({
    inputNames: ["image"], outputNames: outputs,
    inputMetadata: [{ name: "image", shape: ["batch", 3, side, side] }],
    outputMetadata: [{ name: "probabilities", shape: ["batch", classes] }],
  });
  hsvlt.checkManifestAgainstModel(manifest, session(64, 10), "model.onnx", "model.onnx.json");
  assert.throws(() => hsvlt.checkManifestAgainstModel(manifest, session(32, 10), "m.onnx"),
                /says 64 px input, but m.onnx takes 32 px/);
  assert.throws(() => hsvlt.checkManifestAgainstModel(manifest, session(64, 80), "m.onnx"),
                /lists 10 labels, but m.onnx scores 80/);
  assert.throws(() => hsvlt.checkManifestAgainstModel(manifest, session(64, 10, ["probabilities"]), "m.onnx"),
                /attention output/);
  assert.throws(() => hsvlt.checkManifestAgainstModel(manifest, session(64, 10, ["logits"]), "m.onnx"),
                /no "probabilities" output/);
});

test("latency: the median of the most recent runs", () => {
  const recent = new hsvlt.RecentMedian(3);
  [100, 1, 2, 3].forEach((value) => recent.add(value));
  assert.equal(recent.median(), 2);
  assert.ok(Number.isNaN(new hsvlt.RecentMedian().median()));
});
