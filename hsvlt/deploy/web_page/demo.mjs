// The web demo's page: loads ONNX Runtime Web and the model the server names, classifies a photo or camera
// frames, and shows every label's score against its threshold. Preprocessing and the manifest are
// hsvlt-web.mjs's (the same steps as Python's); this file is the page around them.
//
// window.hsvlt exposes the page's state (status, messages, runtime, the last result) and two helpers the tests
// and the benchmark use: inspect() (the pixels and tensor of the last input) and bench(runs).

import * as hsvlt from "./hsvlt-web.mjs";

const THREADS = 2;
const RECENT_RUNS = 30; // the latency shown is the median of this many recent runs
const SMOOTHING = 0.5; // edge_demo/camera.py's defaults
const HYSTERESIS = 0.2;
const VIEW_WIDTH = 640;
const HISTORY = 300;

const $ = (id) => document.getElementById(id);
const page = {
  status: "loading", // loading, ready, failed
  messages: [],
  runtime: null, // provider, threads, crossOriginIsolated, build, ortVersion
  model: null,
  last: null, // the last result: source, name, width, height, probabilities, shown, where, ...
  runs: 0,
  cameraFrames: 0,
  camera: "off", // off, starting, on
  cameraHistory: [], // the first HISTORY frames since the camera started: scores, smoothed, shown
};
window.hsvlt = page;

let ort = null;
let build = null;
let active = null; // {session, manifest, info}
let lastInput = null;
let camera = null; // {stream, smoother}
let queue = Promise.resolve(); // one inference at a time: a session runs one call at once
const latency = new hsvlt.RecentMedian(RECENT_RUNS);
const QUIET = { logSeverityLevel: 3 }; // runs log warnings and errors only (the session itself logs verbosely)

// ---- messages: on the page and in the server's log --------------------------------------------------------

function report(text, level = "error") {
  page.messages.push({ level, text });
  const element = $("message");
  element.textContent = text;
  element.className = level;
  const body = JSON.stringify({ level, message: text });
  fetch("/log", { method: "POST", headers: { "Content-Type": "application/json" }, body }).catch(() => {});
}

function clearMessage() {
  $("message").textContent = "";
  $("message").className = "";
}

const describe = (error) => (error && (error.message || error.name)) || String(error);
const firstLine = (text) => String(text).split("\n")[0].slice(0, 300);

// ---- the runtime ------------------------------------------------------------------------------------------

// WebGPU where the browser offers an adapter, else WebAssembly alone (the smaller, faster CPU build).
async function loadRuntime() {
  let adapter = null;
  if (navigator.gpu) {
    try {
      adapter = await navigator.gpu.requestAdapter();
    } catch {
      adapter = null;
    }
  }
  build = adapter ? "webgpu" : "wasm";
  try {
    ort = await import(`/ort/ort.${build}.min.mjs`);
  } catch (error) {
    throw new Error(`onnxruntime-web did not load from this server (${describe(error)})`);
  }
  ort.env.wasm.wasmPaths = "/ort/";
  ort.env.wasm.numThreads = THREADS;
  ort.env.wasm.proxy = false;
}

// ONNX Runtime logs where it placed the graph's nodes ("All nodes placed on [CPUExecutionProvider]", or one
// line per provider) when a session is created with verbose logging: the providers that actually run the model.
// The runtime has no other way to say it (registering a provider does not mean that it runs any node).
function placements(lines) {
  const found = new Map();
  for (const line of lines) {
    const all = /All nodes placed on \[(\w+)\]\. Number of nodes: (\d+)/.exec(line);
    if (all) found.set(all[1], Number(all[2]));
    const some = /Node\(s\) placed on \[(\w+)\]\. Number of nodes: (\d+)/.exec(line);
    if (some) found.set(some[1], Number(some[2]));
  }
  return [...found].map(([provider, nodes]) => ({ provider, nodes }));
}

async function createSession(bytes, name) {
  const lines = [];
  const kept = {};
  for (const method of ["log", "info", "warn", "error", "debug"]) {
    kept[method] = console[method];
    console[method] = (...args) => {
      lines.push(args.map(String).join(" "));
      if (method === "error" || method === "warn") kept[method].apply(console, args);
    };
  }
  let session;
  try {
    session = await ort.InferenceSession.create(bytes, {
      executionProviders: build === "webgpu" ? ["webgpu", "wasm"] : ["wasm"],
      graphOptimizationLevel: "all",
      // The exporters leave the batch dimension free ("batch"); the page runs one image at a time, and with the
      // dimension fixed the runtime plans memory and shapes once (measured ~30% faster for hsvlt_lite0).
      freeDimensionOverrides: { batch: 1 },
      logSeverityLevel: 0, // verbose while the session is made: the node placements
      logVerbosityLevel: 0,
    });
  } catch (error) {
    throw new Error(`${name}: ONNX Runtime Web cannot load it (${firstLine(describe(error))})`);
  } finally {
    Object.assign(console, kept);
  }
  return { session, placed: placements(lines) };
}

// ---- the model --------------------------------------------------------------------------------------------

async function useModel(bytes, manifestValue, info) {
  const manifest = hsvlt.readManifest(manifestValue, info.manifestName);
  const { session, placed } = await createSession(bytes, info.name);
  try {
    hsvlt.checkManifestAgainstModel(manifest, session, info.name, info.manifestName);
    // One untimed run first: a session's first run allocates and packs weights, and would skew the latency shown.
    const side = manifest.size;
    const zeros = new ort.Tensor("float32", new Float32Array(3 * side * side), [1, 3, side, side]);
    let warm;
    try {
      warm = await session.run({ [session.inputNames[0]]: zeros }, QUIET);
    } catch (error) {
      throw new Error(`${info.name}: ONNX Runtime Web cannot run it (${firstLine(describe(error))})`);
    }
    for (const output of Object.values(warm)) output.dispose?.();
  } catch (error) {
    await session.release();
    throw error;
  }
  if (active) await active.session.release();
  active = { session, manifest, info };
  page.model = { name: info.name, bytes: info.bytes, preset: manifest.preset, precision: manifest.precision,
                 size: manifest.size, labels: manifest.labels, thresholds: [...manifest.thresholds],
                 attention: Boolean(manifest.attention), opset: manifestValue.opset ?? null };
  page.runtime = {
    providers: placed,
    provider: placed.map((p) => p.provider).join(" + ") || "not reported by the runtime",
    threads: ort.env.wasm.numThreads, // what the runtime settled on: 1 when the page is not isolated
    crossOriginIsolated: window.crossOriginIsolated,
    simd: ort.env.wasm.simd !== false,
    build,
    ortVersion: ort.env.versions ? ort.env.versions.web || ort.env.versions.common : null,
  };
  latency.values = [];
  showModel();
  showRuntime();
  buildScores();
  if (camera) camera.smoother = new hsvlt.LabelSmoother(manifest.thresholds, SMOOTHING, HYSTERESIS);
}

function showModel() {
  const m = page.model;
  const megabytes = (m.bytes / 1e6).toFixed(2);
  $("model-line").textContent = `${m.name}: ${m.preset}, ${m.precision}, ${m.size} px, ${m.labels.length} labels` +
    `${m.attention ? ", shows where each label is" : ""}`;
  $("model-info").textContent = `${m.name}, ${megabytes} MB, ${m.preset} ${m.precision}, ${m.size} px input` +
    `${m.opset ? `, ONNX opset ${m.opset}` : ""}`;
  $("label-set").textContent = m.labels.join(", ");
}

function showRuntime() {
  const r = page.runtime;
  const names = { CPUExecutionProvider: "WebAssembly (CPU)", WebGpuExecutionProvider: "WebGPU",
                  JsExecutionProvider: "WebGPU (JS)" };
  $("provider").textContent = r.providers.length
    ? r.providers.map((p) => `${names[p.provider] || p.provider}: ${p.nodes} nodes`).join(", ") +
      (r.simd ? ", SIMD" : "") + (r.ortVersion ? `; onnxruntime-web ${r.ortVersion}` : "")
    : r.provider;
  $("threads").textContent = String(r.threads);
  $("isolated").textContent = r.crossOriginIsolated ? "yes" : "no (threads need it: COOP and COEP headers)";
  showLatency();
}

function showLatency() {
  const value = latency.median();
  $("latency").textContent = Number.isNaN(value) ? "no run yet"
    : `${value.toFixed(1)} ms (median of ${latency.values.length})`;
}

// ---- scores -----------------------------------------------------------------------------------------------

function buildScores() {
  const list = $("scores");
  list.replaceChildren();
  active.manifest.labels.forEach((label, i) => {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    const tick = document.createElement("span");
    tick.className = "tick";
    tick.style.left = `${(100 * active.manifest.thresholds[i]).toFixed(2)}%`;
    tick.title = `threshold ${active.manifest.thresholds[i].toFixed(3)}`;
    track.append(fill, tick);
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = "–";
    item.append(name, track, score);
    list.append(item);
  });
}

function showScores(shown, values) {
  const items = $("scores").children;
  for (let i = 0; i < items.length; i++) {
    items[i].classList.toggle("on", shown[i]);
    items[i].querySelector(".fill").style.width = `${(100 * values[i]).toFixed(2)}%`;
    items[i].querySelector(".score").textContent = values[i].toFixed(3);
  }
}

// ---- drawing ----------------------------------------------------------------------------------------------

const PALETTE = ["#e6194b", "#3cb44b", "#ffe119", "#0082c8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
                 "#d2f53c", "#fabebe"]; // the OpenCV overlay's colours, one per label index

function draw(source, width, height, where) {
  const canvas = $("view");
  const scale = Math.min(1, VIEW_WIDTH / width);
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(height * scale);
  const context = canvas.getContext("2d");
  context.drawImage(source, 0, 0, canvas.width, canvas.height);
  const radius = Math.max(6, Math.min(canvas.width, canvas.height) / 40);
  context.lineWidth = 3;
  context.font = `${Math.max(12, Math.round(radius * 1.4))}px system-ui, sans-serif`;
  for (const [index, [x, y]] of where) {
    const colour = PALETTE[index % PALETTE.length];
    const cx = x * scale;
    const cy = y * scale;
    context.strokeStyle = colour;
    context.beginPath();
    context.arc(cx, cy, radius, 0, 2 * Math.PI);
    context.moveTo(cx - radius, cy);
    context.lineTo(cx + radius, cy);
    context.moveTo(cx, cy - radius);
    context.lineTo(cx, cy + radius);
    context.stroke();
    const label = active.manifest.labels[index];
    const textWidth = context.measureText(label).width;
    context.fillStyle = "rgba(0, 0, 0, 0.65)";
    context.fillRect(cx + radius, cy - radius - 18, textWidth + 8, 20);
    context.fillStyle = colour;
    context.fillText(label, cx + radius + 4, cy - radius - 3);
  }
  canvas.classList.remove("empty");
  $("drop-hint").classList.add("hidden");
}

// ---- classifying ------------------------------------------------------------------------------------------

function pixelsOf(source, width, height) {
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(source, 0, 0, width, height);
  return context.getImageData(0, 0, width, height).data;
}

// One image through the model: RGBA pixels -> the manifest's input -> probabilities (and attention).
async function infer(rgba, width, height) {
  const { session, manifest } = active;
  const { input, interpolation } = hsvlt.preprocess(rgba, width, height, manifest.size);
  const tensor = new ort.Tensor("float32", input, [1, 3, manifest.size, manifest.size]);
  const started = performance.now();
  const outputs = await session.run({ [session.inputNames[0]]: tensor }, QUIET);
  const milliseconds = performance.now() - started;
  latency.add(milliseconds);
  page.runs += 1;
  const probabilities = Float32Array.from(outputs.probabilities.data);
  if (!probabilities.every(Number.isFinite)) {
    throw new Error(`${active.info.name}: the runtime returned NaN or infinite scores (damaged weights?)`);
  }
  const attention = outputs.attention ? { data: outputs.attention.data, dims: outputs.attention.dims } : null;
  for (const output of Object.values(outputs)) output.dispose?.();
  lastInput = { rgba, width, height, input, interpolation };
  return { probabilities, attention, milliseconds, interpolation };
}

function peaks(attention, indices, width, height) {
  if (!attention) return [];
  const [, labels, rows, cols] = attention.dims;
  return indices.map((i) => {
    const map = attention.data.subarray((i * rows) * cols, (i + 1) * rows * cols);
    return [i, hsvlt.attentionPeak(map, rows, cols, width, height)];
  }).filter(([i]) => i < labels);
}

async function classify(source, rgba, width, height, origin) {
  const result = await infer(rgba, width, height);
  const thresholds = active.manifest.thresholds;
  const above = hsvlt.labelsAbove(result.probabilities, thresholds);
  let values = result.probabilities;
  let shown = result.probabilities.map((p, i) => p >= thresholds[i]);
  if (origin.smoother) {
    shown = origin.smoother.update(result.probabilities);
    values = origin.smoother.probabilities;
  }
  const shownIndices = [...shown.keys()].filter((i) => shown[i]).sort((a, b) => values[b] - values[a]);
  const where = peaks(result.attention, shownIndices, width, height);
  draw(source, width, height, where);
  showScores(shown, values);
  showLatency();
  const labels = active.manifest.labels;
  page.last = {
    source: origin.kind, name: origin.name, width, height, interpolation: result.interpolation,
    probabilities: [...result.probabilities], smoothed: [...values],
    above: above.map((i) => labels[i]), shown: shownIndices.map((i) => labels[i]),
    where: Object.fromEntries(where.map(([i, point]) => [labels[i], point])),
    milliseconds: result.milliseconds, model: active.info.name, sequence: page.runs,
  };
  $("result-title").textContent = origin.kind === "camera" ? "Scores (camera)" : `Scores: ${origin.name}`;
  $("smoothing-note").hidden = origin.kind !== "camera";
}

function serially(work) {
  const next = queue.then(work, work);
  queue = next.catch(() => {});
  return next;
}

async function classifyPhoto(file) {
  if (!active) return;
  await stopCamera();
  await serially(async () => {
    let bitmap;
    try {
      // Upright by the EXIF orientation, colour profile ignored: the pixels OpenCV decodes.
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image", premultiplyAlpha: "none",
                                               colorSpaceConversion: "none" });
    } catch (error) {
      report(`${file.name}: the browser cannot decode this image (${describe(error)}); choose another photo`);
      return;
    }
    try {
      const rgba = pixelsOf(bitmap, bitmap.width, bitmap.height);
      await classify(bitmap, rgba, bitmap.width, bitmap.height, { kind: "photo", name: file.name });
      clearMessage();
    } catch (error) {
      report(`${file.name}: ${describe(error)}`);
    } finally {
      bitmap.close();
    }
  });
}

// ---- the camera -------------------------------------------------------------------------------------------

function cameraProblem(error) {
  switch (error && error.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "permission refused";
    case "NotFoundError":
    case "OverconstrainedError":
      return "no camera found";
    case "NotReadableError":
    case "AbortError":
      return "the camera is in use or cannot start";
    default:
      return describe(error);
  }
}

async function startCamera() {
  if (!active || camera) return;
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    report("camera: browsers grant the camera only to pages on localhost or https; choose a photo instead");
    return;
  }
  page.camera = "starting";
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } },
                                                        audio: false });
  } catch (error) {
    page.camera = "off";
    report(`camera: ${cameraProblem(error)}; choose a photo instead`);
    return;
  }
  const video = $("camera");
  video.srcObject = stream;
  try {
    await video.play();
  } catch (error) {
    stream.getTracks().forEach((track) => track.stop());
    page.camera = "off";
    report(`camera: ${cameraProblem(error)}; choose a photo instead`);
    return;
  }
  camera = { stream, smoother: new hsvlt.LabelSmoother(active.manifest.thresholds, SMOOTHING, HYSTERESIS) };
  stream.getVideoTracks()[0].addEventListener("ended", () => {
    if (camera && camera.stream === stream) {
      report("camera: it stopped (unplugged, or taken by another program)");
      stopCamera();
    }
  });
  page.camera = "on";
  page.cameraFrames = 0;
  page.cameraHistory = [];
  $("camera-button").textContent = "Stop the camera";
  clearMessage();
  cameraLoop(camera);
}

// The next frame the camera delivers (or a moment, where the browser cannot say when one arrives): each frame
// is classified once, and a stalled camera does not stall the loop.
function nextFrame(video) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, 250);
    if (video.requestVideoFrameCallback) {
      video.requestVideoFrameCallback(() => {
        clearTimeout(timer);
        resolve();
      });
    }
  });
}

async function cameraLoop(mine) {
  const video = $("camera");
  while (camera === mine) {
    await nextFrame(video);
    if (camera !== mine) break;
    if (video.readyState < 2 || !video.videoWidth) continue;
    try {
      await serially(async () => {
        if (camera !== mine) return;
        const width = video.videoWidth;
        const height = video.videoHeight;
        const rgba = pixelsOf(video, width, height);
        // The smoother of this camera session (the camera may be stopped while the frame runs).
        await classify(video, rgba, width, height, { kind: "camera", name: "camera", smoother: mine.smoother });
        page.cameraFrames += 1;
        if (page.cameraHistory.length < HISTORY) {
          const { probabilities, smoothed, shown } = page.last;
          page.cameraHistory.push({ probabilities, smoothed, shown });
        }
      });
    } catch (error) {
      report(`camera: ${describe(error)}`);
      await stopCamera();
    }
  }
}

async function stopCamera() {
  if (!camera) return;
  camera.stream.getTracks().forEach((track) => track.stop());
  camera = null;
  page.camera = "off";
  $("camera").srcObject = null;
  $("camera-button").textContent = "Use the camera";
}

// ---- another model, chosen on the page --------------------------------------------------------------------

async function openModelFiles(files) {
  const onnx = files.find((file) => file.name.toLowerCase().endsWith(".onnx"));
  const json = files.find((file) => file.name.toLowerCase().endsWith(".json"));
  if (!onnx || !json) {
    report("model: choose the .onnx file and its manifest (.onnx.json) together");
    return;
  }
  await serially(async () => {
    let manifest;
    try {
      manifest = JSON.parse(await json.text());
    } catch (error) {
      report(`${json.name}: not valid JSON (${describe(error)}); the previous model stays`);
      return;
    }
    try {
      const bytes = new Uint8Array(await onnx.arrayBuffer());
      await useModel(bytes, manifest, { name: onnx.name, bytes: onnx.size, manifestName: json.name });
      report(`using ${onnx.name}`, "info");
    } catch (error) {
      report(`${describe(error)}; the previous model stays`);
    }
  });
}

// ---- for tests and the benchmark --------------------------------------------------------------------------

function base64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

// The last input as the page used it: its RGBA pixels and the float32 tensor (little-endian), base64.
page.inspect = () => lastInput && {
  width: lastInput.width, height: lastInput.height, interpolation: lastInput.interpolation,
  rgba: base64(new Uint8Array(lastInput.rgba.buffer, lastInput.rgba.byteOffset, lastInput.rgba.byteLength)),
  input: base64(new Uint8Array(lastInput.input.buffer)),
};

// Milliseconds of each of `runs` calls on one fixed input, after `warmup` untimed ones.
page.bench = (runs, warmup = 0) => serially(async () => {
  const { session, manifest } = active;
  const input = new Float32Array(3 * manifest.size * manifest.size);
  for (let i = 0; i < input.length; i++) input[i] = ((i * 2654435761) % 1000) / 1000;
  const feeds = { [session.inputNames[0]]: new ort.Tensor("float32", input, [1, 3, manifest.size, manifest.size]) };
  const times = [];
  for (let i = 0; i < warmup + runs; i++) {
    const started = performance.now();
    const outputs = await session.run(feeds, QUIET);
    if (i >= warmup) times.push(performance.now() - started);
    for (const output of Object.values(outputs)) output.dispose?.();
  }
  return times;
});

// ---- start ------------------------------------------------------------------------------------------------

function wire() {
  const drop = $("drop");
  $("photo-input").addEventListener("change", (event) => {
    const [file] = event.target.files;
    event.target.value = "";
    if (file) classifyPhoto(file);
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("dragging");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    const [file] = event.dataTransfer.files;
    if (file) classifyPhoto(file);
  });
  $("camera-button").addEventListener("click", () => (camera ? stopCamera() : startCamera()));
  $("model-input").addEventListener("change", (event) => {
    const files = [...event.target.files];
    event.target.value = "";
    openModelFiles(files);
  });
}

async function start() {
  wire();
  try {
    const response = await fetch("/model.json");
    if (!response.ok) throw new Error(`the server answered ${response.status} for the model's manifest`);
    const info = await response.json();
    await loadRuntime();
    const modelResponse = await fetch("/model.onnx");
    if (!modelResponse.ok) throw new Error(`the server answered ${modelResponse.status} for ${info.name}`);
    const bytes = new Uint8Array(await modelResponse.arrayBuffer());
    await useModel(bytes, info.manifest, { name: info.name, bytes: info.bytes, manifestName: info.manifest_name });
    $("camera-button").disabled = false;
    page.status = "ready";
  } catch (error) {
    page.status = "failed";
    $("model-line").textContent = "The model did not load.";
    report(describe(error));
  }
}

start();
