// MaleniaSegment browser viewer: the engine's /v1 API plus NiiVue. No framework, no bundler,
// nothing from the internet. The threshold slider re-cuts the overlay here, from the
// probability map the server sent once per result (see malenia/viewer/maps.py).
"use strict";

const KEYS = ["location", "shape", "density", "density_variation", "surface", "enhancement",
  "relation", "specific_features"];
const LABELS = {
  location: "Location", shape: "Shape", density: "Density", density_variation: "Density variation",
  surface: "Surface", enhancement: "Enhancement", relation: "Relation to organs",
  specific_features: "Specific features",
};
const CROSSHAIR = [0, 1, 0, 1]; // pure green: no lesion category is drawn in it
const OVERLAY_OPACITY = 0.8;

const $ = (id) => document.getElementById(id);
const S = {
  token: document.querySelector('meta[name="malenia-token"]').content,
  info: null,
  volumeId: null,
  volumeState: null,
  encoded: null, // promise of the final status of the current volume's encode
  encodeSeconds: 0,
  preset: null, // preset name while the rows still show it unchanged
  result: null,
  maps: null, // {box, prob, color, colors, defaultColor}
  overlay: null,
  overlayVoxels: 0,
  threshold: 0.5,
  roi: [null, null],
  requests: 0,
};

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

async function api(method, path, body, headers = {}) {
  const init = { method, headers: { Authorization: `Bearer ${S.token}`, ...headers } };
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  S.requests += 1;
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(`The engine server does not answer (${error.message}). Is it still running?`, 0);
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new ApiError(String(detail), response.status);
  }
  return response;
}

const json = async (...args) => (await api(...args)).json();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function say(kind, text) { $(kind).textContent = text || ""; }
function fail(error) {
  say("error", error instanceof ApiError || error instanceof Error ? error.message : String(error));
}

// ------------------------------------------------------------------ NiiVue
const nv = new niivue.Niivue({
  backColor: [0, 0, 0, 1],
  crosshairColor: CROSSHAIR,
  isRadiologicalConvention: true, // patient left on screen right
  multiplanarShowRender: niivue.SHOW_RENDER.ALWAYS,
  multiplanarLayout: niivue.MULTIPLANAR_TYPE.GRID,
  show3Dcrosshair: true,
  isOrientationTextVisible: true,
});

function windowRange() { return $("window").value.split(",").map(Number); }

async function showImage(volumeId) {
  const [low, high] = windowRange();
  S.overlay = null;
  await nv.loadVolumes([{
    url: `/v1/volumes/${volumeId}/image.nii.gz`, name: "ct.nii.gz",
    headers: { Authorization: `Bearer ${S.token}` }, colormap: "gray", cal_min: low, cal_max: high,
  }]);
  nv.setSliceType(nv.sliceTypeMultiplanar);
  nv.setRadiologicalConvention(true);
}

function applyWindow() {
  if (!nv.volumes.length) return;
  const [low, high] = windowRange();
  nv.volumes[0].cal_min = low;
  nv.volumes[0].cal_max = high;
  nv.updateGLVolume();
}

function overlayVolume() {
  if (!S.overlay) {
    const overlay = nv.cloneVolume(0);
    overlay.img.fill(0);
    overlay.name = "result";
    overlay.opacity = $("show-overlay").checked ? OVERLAY_OPACITY : 0;
    nv.addVolume(overlay);
    S.overlay = overlay;
  }
  return S.overlay;
}

// Voxel i, j, k of the CT's own grid (the order of its NIfTI file and of SimpleITK's [k, j, i]).
function recut(threshold) {
  S.threshold = threshold;
  $("threshold-value").textContent = threshold.toFixed(2);
  if (!S.maps || !nv.volumes.length) return 0;
  const overlay = overlayVolume();
  const img = overlay.img;
  img.fill(0);
  let count = 0;
  const { box, prob, color, colors } = S.maps;
  if (box) {
    const [nx, ny] = [overlay.hdr.dims[1], overlay.hdr.dims[2]];
    const [[k0, k1], [j0, j1], [i0, i1]] = box;
    const bi = i1 - i0, bj = j1 - j0;
    const cut = threshold * 255;
    const fallback = colors.length + 1;
    for (let k = k0; k < k1; k++) {
      for (let j = j0; j < j1; j++) {
        let local = ((k - k0) * bj + (j - j0)) * bi;
        let voxel = (k * ny + j) * nx + i0;
        for (let i = i0; i < i1; i++, local++, voxel++) {
          if (prob[local] > cut) {
            img[voxel] = color[local] || fallback;
            count++;
          }
        }
      }
    }
  }
  S.overlayVoxels = count;
  nv.updateGLVolume();
  const changed = S.result && Math.abs(threshold - S.result.threshold) > 1e-9;
  $("threshold-note").textContent =
    `${count} voxels above ${threshold.toFixed(2)} (re-cut in the browser).` +
    (changed ? ` The table is at ${S.result.threshold.toFixed(2)}; downloads use ${threshold.toFixed(2)}.` : "");
  $("update-table").disabled = !changed;
  return count;
}

function setPalette(colors, fallback) {
  const all = [[0, 0, 0], ...colors, fallback];
  overlayVolume().setColormapLabel({
    R: all.map((c) => c[0]), G: all.map((c) => c[1]), B: all.map((c) => c[2]),
    A: all.map((_, i) => (i === 0 ? 0 : 255)), I: all.map((_, i) => i),
  });
}

// ------------------------------------------------------------------ describe
function buildRows() {
  const box = $("attributes");
  for (const key of KEYS) {
    const label = document.createElement("label");
    label.className = "row";
    label.textContent = LABELS[key];
    const select = document.createElement("select");
    select.id = `attr-${key}`;
    select.dataset.key = key;
    if (key === "specific_features") {
      select.multiple = true;
    } else {
      select.append(new Option("(not specified)", ""));
    }
    for (const value of S.info.vocabulary[key]) select.append(new Option(value, value));
    select.addEventListener("change", () => { S.preset = null; $("preset").value = ""; });
    label.append(select);
    box.append(label);
  }
  for (const preset of S.info.presets) $("preset").append(new Option(preset.name, preset.name));
}

function fillRows(attributes) {
  for (const key of KEYS) {
    const select = $(`attr-${key}`);
    const value = attributes[key];
    if (key === "specific_features") {
      const chosen = new Set(value || []);
      for (const option of select.options) option.selected = chosen.has(option.value);
    } else {
      select.value = value || "";
    }
  }
}

function rowsQuery() {
  const query = {};
  for (const key of KEYS) {
    const select = $(`attr-${key}`);
    const value = key === "specific_features"
      ? [...select.selectedOptions].map((o) => o.value) : select.value;
    if (value && value.length) query[key] = value;
  }
  return query;
}

function currentQuery() {
  if (S.preset) return S.preset;
  const query = rowsQuery();
  if (!Object.keys(query).length) {
    throw new Error("Describe the lesion first: choose a preset, set an attribute, or type a description and press \"Fill rows from text\".");
  }
  return query;
}

async function parseText() {
  const text = $("text").value.trim();
  if (!text) { say("error", "Type a description first."); return; }
  const parsed = await json("POST", "/v1/parse", { text });
  S.preset = null;
  $("preset").value = "";
  fillRows(parsed.attributes);
  const read = Object.entries(parsed.evidence).map(([k, words]) => `${LABELS[k]} \u2190 "${words}"`);
  const lines = [];
  lines.push(read.length ? `Read: ${read.join("; ")}` : "Nothing in the text matched an attribute.");
  if (parsed.unparsed.length) lines.push(`Not understood: ${parsed.unparsed.map((u) => `"${u}"`).join(", ")}`);
  for (const note of parsed.notes) lines.push(`Note: ${note}`);
  $("parse-note").textContent = lines.join("\n");
}

// ------------------------------------------------------------------ volumes
function setBusy(busy) {
  const hasVolume = S.volumeId && !["failed", "cancelled"].includes(S.volumeState);
  $("run").disabled = busy || !hasVolume;
  $("find").disabled = busy || !hasVolume;
  $("load-sample").disabled = busy;
  $("file").disabled = busy;
}

async function startVolume(status, showIt = true) {
  S.volumeId = status.volume_id;
  S.volumeState = status.state;
  S.result = null;
  S.maps = null;
  clearResult();
  setBusy(false);
  $("cancel").disabled = false;
  S.encoded = followEncoding(status.volume_id);
  if (showIt) {
    try { await showImage(status.volume_id); } catch (error) { fail(error); }
  }
  return S.encoded;
}

async function followEncoding(volumeId) {
  const started = performance.now();
  for (;;) {
    let status;
    try {
      status = await json("GET", `/v1/volumes/${volumeId}`);
    } catch (error) {
      fail(error);
      return { state: "failed", error: error.message };
    }
    if (S.volumeId !== volumeId) return status;
    const [done, total] = status.progress;
    $("progress").value = status.state === "ready" ? 1 : total ? done / total : 0;
    if (status.state === "ready") {
      S.encodeSeconds = status.encode_seconds;
      $("encode-status").textContent = `encoded in ${status.encode_seconds.toFixed(1)} s; queries reuse it`;
    } else if (status.state === "encoding") {
      $("encode-status").textContent = total ? `${status.stage}: window ${done} / ${total}` : status.stage;
    } else {
      $("encode-status").textContent = status.state;
    }
    if (["ready", "failed", "cancelled"].includes(status.state)) {
      S.volumeState = status.state;
      $("cancel").disabled = true;
      setBusy(false);
      if (status.state === "failed") say("error", `The engine could not encode this CT: ${status.error}`);
      if (status.state === "cancelled") {
        $("progress").value = 0;
        say("info", "Encoding cancelled; nothing was kept. Load a CT to start again.");
      }
      status.wall_seconds = (performance.now() - started) / 1000;
      return status;
    }
    S.volumeState = status.state;
    await sleep(300);
  }
}

async function loadSample() {
  say("error", "");
  say("info", "Loading the bundled sample CT...");
  const status = await json("POST", "/v1/volumes/sample");
  $("volume-name").textContent = "sample_ct.nii.gz";
  say("info", "Sample CT loaded (real anatomy with a synthetic renal cyst and liver tumour); encoding it.");
  await startVolume(status);
}

function uploadFormat(name) {
  const lower = name.toLowerCase();
  if (lower.endsWith(".zip")) return "zip";
  if (lower.endsWith(".nrrd")) return "nrrd";
  if (lower.endsWith(".mha")) return "mha";
  if (lower.endsWith(".nii") || lower.endsWith(".nii.gz")) return "nifti";
  return null;
}

async function uploadFile(file) {
  say("error", "");
  const kind = uploadFormat(file.name);
  if (!kind) {
    throw new Error(`"${file.name}" is not a CT file this viewer reads: choose a NIfTI (.nii, .nii.gz), NRRD, MHA, or a .zip of one DICOM series.`);
  }
  const limit = S.info.max_upload_bytes;
  if (file.size > limit) {
    throw new Error(`"${file.name}" is ${(file.size / 2 ** 20).toFixed(0)} MB, over the server's upload limit of ${(limit / 2 ** 20).toFixed(0)} MB.`);
  }
  say("info", `Uploading ${file.name}...`);
  const headers = { "Content-Type": "application/octet-stream", "X-Name": file.name.replace(/[^\x20-\x7e]/g, "_") };
  let status;
  if (kind === "zip") {
    status = await json("POST", "/v1/volumes/archive", file, headers);
  } else {
    status = await json("POST", "/v1/volumes", file, { ...headers, "X-Format": kind });
  }
  $("volume-name").textContent = file.name;
  say("info", `${file.name} loaded; encoding it in the background.`);
  await startVolume(status);
}

// ------------------------------------------------------------------ results
function clearResult() {
  S.result = null;
  S.maps = null;
  if (S.overlay) { S.overlay.img.fill(0); nv.updateGLVolume(); }
  $("lesions").tBodies[0].replaceChildren();
  say("warning", "");
  $("threshold").disabled = true;
  $("update-table").disabled = true;
  $("png").disabled = true;
  for (const button of document.querySelectorAll("[data-download]")) button.disabled = true;
  $("threshold-note").textContent = "";
}

async function run(kind) {
  say("error", "");
  let query;
  try {
    query = kind === "segment" ? currentQuery() : null;
  } catch (error) { fail(error); return; }
  setBusy(true);
  $("run-status").textContent = S.volumeState === "ready" ? "asking the engine..." : "waiting for the encoding to finish...";
  try {
    const status = await S.encoded;
    if (status.state !== "ready") {
      $("run-status").textContent = `not run: the CT is ${status.state}`;
      return;
    }
    const volumeId = S.volumeId;
    const started = performance.now();
    const payload = kind === "segment"
      ? await json("POST", `/v1/volumes/${volumeId}/segment`, { query, threshold: null })
      : await json("POST", `/v1/volumes/${volumeId}/find`, {});
    await showResult(volumeId, payload);
    const seconds = (performance.now() - started) / 1000;
    $("run-status").textContent =
      `${payload.lesions.length} lesion(s) in ${seconds.toFixed(2)} s (engine ${payload.timing.engine_s.toFixed(2)} s), ` +
      `no re-encoding: the CT was encoded once in ${S.encodeSeconds.toFixed(1)} s.`;
  } catch (error) {
    fail(error);
    $("run-status").textContent = "";
  } finally {
    setBusy(false);
  }
}

async function showResult(volumeId, payload) {
  const response = await api("GET", `/v1/volumes/${volumeId}/results/${payload.result_id}/probability`);
  const meta = JSON.parse(response.headers.get("X-Malenia-Maps"));
  const bytes = new Uint8Array(await response.arrayBuffer());
  const half = bytes.length / 2;
  S.result = payload;
  S.maps = {
    box: meta.box, prob: bytes.subarray(0, half), color: bytes.subarray(half),
    colors: meta.colors, categories: meta.categories,
  };
  setPalette(meta.colors, meta.default_color);
  const slider = $("threshold");
  slider.disabled = false;
  slider.value = payload.threshold;
  const calibrated = payload.mode === "prompt" ? S.info.default_threshold : 0.5;
  $("threshold-marks").replaceChildren(new Option("", String(calibrated)));
  $("threshold").title = `calibrated default ${calibrated.toFixed(2)}`;
  recut(payload.threshold);
  $("threshold-note").textContent +=
    payload.mode === "prompt"
      ? ` The mark on the slider is the model's calibrated default (${calibrated.toFixed(2)}).`
      : " Find-all's map is not calibrated; the mark is 0.50.";
  say("warning", payload.grounding_warning || "");
  showTable(payload, meta);
  for (const button of document.querySelectorAll("[data-download]")) button.disabled = false;
  $("png").disabled = false;
  if (payload.lesions.length === 0) say("info", `No lesion above ${payload.threshold.toFixed(2)} for: ${payload.query}`);
  else say("info", `${payload.lesions.length} lesion(s) for: ${payload.query}`);
}

function rgb(color) { return `rgb(${color[0]}, ${color[1]}, ${color[2]})`; }

function showTable(payload, meta) {
  const body = $("lesions").tBodies[0];
  body.replaceChildren();
  for (const lesion of payload.lesions) {
    const row = body.insertRow();
    row.dataset.index = lesion.index;
    const colorIndex = meta.categories.indexOf(lesion.category);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = rgb(colorIndex >= 0 ? meta.colors[colorIndex] : meta.default_color);
    const name = row.insertCell();
    name.append(swatch, lesion.name);
    row.insertCell().textContent = lesion.volume_ml.toFixed(2);
    row.insertCell().textContent = lesion.diameter_mm.toFixed(1);
    row.insertCell().textContent = lesion.score.toFixed(2);
    row.insertCell().textContent = (lesion.category_ranking || [])
      .map((c) => `${c.category} (${Math.round(c.probability * 100)}%)`).join(", ");
    row.insertCell().textContent = Object.entries(lesion.attributes || {})
      .filter(([, v]) => v && v.length).map(([k, v]) => `${LABELS[k] || k}: ${v}`).join("; ");
    row.addEventListener("click", () => goTo(lesion, row));
  }
}

function goTo(lesion, row) {
  for (const other of row.parentElement.rows) other.classList.remove("selected");
  row.classList.add("selected");
  nv.scene.crosshairPos = nv.mm2frac(lesion.centroid_ras);
  nv.drawScene();
  nv.createOnLocationChange();
}

async function updateTable() {
  say("error", "");
  try {
    const payload = await json("POST", `/v1/volumes/${S.volumeId}/recut`,
      { result_id: S.result.result_id, threshold: S.threshold });
    await showResult(S.volumeId, payload);
  } catch (error) { fail(error); }
}

async function download(kind) {
  say("error", "");
  try {
    const path = `/v1/volumes/${S.volumeId}/results/${S.result.result_id}/files/${kind}?threshold=${S.threshold}`;
    const response = await api("GET", path);
    const match = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
    saveBlob(await response.blob(), match ? match[1] : `result.${kind}`);
  } catch (error) { fail(error); }
}

function saveBlob(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// ------------------------------------------------------------------ box ROI
function crosshairMM() { return Array.from(nv.frac2mm(nv.scene.crosshairPos)).slice(0, 3); }

function roiBox() {
  const [a, b] = S.roi;
  if (!a || !b) return null;
  const centre = a.map((v, i) => (v + b[i]) / 2);
  const size = a.map((v, i) => Math.abs(v - b[i]));
  return { centre, size };
}

function showRoi() {
  const box = roiBox();
  const fmt = (v) => v.map((x) => x.toFixed(0)).join(", ");
  const parts = S.roi.map((c, i) => (c ? `${"AB"[i]}: ${fmt(c)} mm` : `${"AB"[i]}: not set`));
  let text = parts.join("   ");
  if (box) text += `\nbox ${fmt(box.size)} mm centred at ${fmt(box.centre)} (RAS)`;
  $("roi-note").textContent = text;
  $("roi-apply").disabled = !box || !S.volumeId;
}

async function applyRoi() {
  say("error", "");
  const box = roiBox();
  if (box.size.some((s) => s < 10)) {
    say("error", "The box is thinner than 10 mm along one axis: put corner B on another slice, away from A.");
    return;
  }
  try {
    const status = await json("POST", `/v1/volumes/${S.volumeId}/crop`, { roi: [box.centre, box.size] });
    await startVolume(status, false);
    say("info", "Encoding the CT again inside the box; results will lie in it.");
  } catch (error) { fail(error); }
}

// ------------------------------------------------------------------ wiring
function on(id, event, handler) {
  $(id).addEventListener(event, async (e) => {
    try { await handler(e); } catch (error) { fail(error); }
  });
}

async function main() {
  await nv.attachTo("gl");
  S.info = await json("GET", "/v1/info");
  $("model").textContent = `${S.info.model_id} \u00b7 ${S.info.device}`;
  buildRows();
  on("load-sample", "click", loadSample);
  on("file", "change", async (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    if (file) await uploadFile(file);
  });
  on("cancel", "click", async () => {
    if (S.volumeId) await json("POST", `/v1/volumes/${S.volumeId}/cancel`);
  });
  on("window", "change", applyWindow);
  on("show-overlay", "change", () => {
    if (S.overlay) { S.overlay.opacity = $("show-overlay").checked ? OVERLAY_OPACITY : 0; nv.updateGLVolume(); }
  });
  on("preset", "change", () => {
    const preset = S.info.presets.find((p) => p.name === $("preset").value);
    if (preset) { fillRows(preset.query_attributes || preset.attributes); S.preset = preset.name; } else { S.preset = null; }
  });
  on("parse", "click", parseText);
  on("run", "click", () => run("segment"));
  on("find", "click", () => run("find"));
  on("threshold", "input", () => recut(Number($("threshold").value)));
  on("update-table", "click", updateTable);
  on("png", "click", () => nv.saveScene("malenia_view.png"));
  for (const button of document.querySelectorAll("[data-download]")) {
    button.addEventListener("click", () => download(button.dataset.download));
  }
  on("corner-a", "click", () => { S.roi[0] = crosshairMM(); showRoi(); });
  on("corner-b", "click", () => { S.roi[1] = crosshairMM(); showRoi(); });
  on("roi-clear", "click", () => { S.roi = [null, null]; showRoi(); });
  on("roi-apply", "click", applyRoi);
  const preload = new URLSearchParams(location.search).get("volume");
  if (preload) {
    const status = await json("GET", `/v1/volumes/${encodeURIComponent(preload)}`);
    $("volume-name").textContent = "preloaded CT";
    await startVolume(status);
  }
  window.malenia.ready = true;
}

// For tests and the curious: the page's own state.
window.malenia = { nv, state: S, recut, ready: false };
main().catch((error) => { fail(error); window.malenia.ready = true; });
