// The lab: a bundled model runs in the reader's browser (onnxruntime-web, WebAssembly), and the
// page shows the book's instruments on the reader's prompt. Loaded only by lab.html.
import * as ort from "onnxruntime-web/wasm";
import { Tokenizer } from "@huggingface/tokenizers";
import css from "./lab.css";
import * as A from "./analysis.js";

const HERE = new URL("./", import.meta.url);
ort.env.wasm.numThreads = 1;            // no cross-origin isolation on a static site: one thread
ort.env.wasm.wasmPaths = { wasm: new URL("ort-wasm-simd-threaded.wasm", HERE).href };

const MODELS = {
  "rs-gpt2-4l": "rs-gpt2-4l: 4 blocks, attention and MLP",
  "rs-attn-2l": "rs-attn-2l: 2 blocks, attention only",
};
const DEFAULTS = { model: "rs-gpt2-4l", prompt: "The Eiffel Tower is located in", target: " Paris", rival: " London" };
const REPEAT_LENGTH = 20;

const marks = {};           // milliseconds since navigation start, for the benchmark
const mark = (name) => { marks[name] ??= performance.now(); };
mark("script");

// A one-node graph (Identity), made with onnx.helper: creating a session for it at once makes
// onnxruntime fetch and compile its WebAssembly while the model's files are still downloading.
const WARMUP_ONNX = "CAgSE3Jlc2lkdWFsLXN0cmVhbS1sYWI6PAoQCgF4EgF5IghJZGVudGl0eRIGd2FybXVwWg8KAXgSCgoICAESBAoCCAFiDwoBeRIKCggIARIECgIIAUIECgAQEQ==";
const warmup = ort.InferenceSession.create(Uint8Array.from(atob(WARMUP_ONNX), (c) => c.charCodeAt(0)),
  { executionProviders: ["wasm"] }).then(() => mark("wasm"), () => mark("wasm"));
const loaded = new Map();   // model name -> Promise<{session, tokenizer, meta}>
const state = {
  model: DEFAULTS.model, ids: null, repeat: null, seed: 0,
  ablate: { heads: new Set(), mlps: new Set(), mode: "zero" },
  layer: 0, head: 0, result: null, timings: [],
};
let root, els = {};
let pending = Promise.resolve();

// ------------------------------------------------------------------ loading
function loadModel(name) {
  if (!loaded.has(name)) {
    const base = new URL(`models/${name}/`, HERE);
    const get = async (file, kind) => {
      const r = await fetch(new URL(file, base));
      if (!r.ok) throw new Error(`${file} for ${name} could not be loaded (HTTP ${r.status}).`);
      return kind === "json" ? r.json() : new Uint8Array(await r.arrayBuffer());
    };
    loaded.set(name, (async () => {
      const [bytes, packed, tokJson, tokConfig, meta] = await Promise.all([
        get("model.onnx"), get("weights.bin.gz"), get("tokenizer.json", "json"), get("tokenizer_config.json", "json"),
        get("meta.json", "json")]);
      mark("fetched");
      const weights = await unpackWeights(packed, meta.weights_bytes);
      mark("unpacked");
      await warmup;
      const session = await ort.InferenceSession.create(bytes, {
        executionProviders: ["wasm"], graphOptimizationLevel: "basic",
        externalData: [{ path: "weights.bin", data: weights }],
      });
      mark("session");
      return { session, tokenizer: new Tokenizer(tokJson, tokConfig), meta, name };
    })());
    loaded.get(name).catch(() => loaded.delete(name));
  }
  return loaded.get(name);
}

// The weights ship byte-shuffled and gzip-compressed (lab/export.py save_packed): undo both.
async function unpackWeights(packed, nBytes) {
  let shuffled = packed;
  if (packed[0] === 0x1f && packed[1] === 0x8b) {   // still compressed (the server did not decode it)
    const stream = new Blob([packed]).stream().pipeThrough(new DecompressionStream("gzip"));
    shuffled = new Uint8Array(await new Response(stream).arrayBuffer());
  }
  const n = shuffled.length / 4, out = new Uint8Array(shuffled.length);
  for (let k = 0; k < 4; k++) {
    const base = k * n;
    for (let i = 0; i < n; i++) out[4 * i + k] = shuffled[base + i];
  }
  if (nBytes > out.length) throw new Error(`the weights file is ${out.length} bytes, ${nBytes} expected.`);
  return out.subarray(0, nBytes);
}

// ------------------------------------------------------------------ model I/O
class LabError extends Error {}

function encode(m, text) {
  return m.tokenizer.encode(text, { add_special_tokens: false }).ids.map(Number);
}

export function tokenId(m, text, role) {
  if (!text) throw new LabError(`Type a ${role} token (for example " Paris", with its leading space).`);
  const ids = encode(m, text);
  if (ids.length !== 1) {
    const pieces = ids.map((i) => show(m.tokenizer.decode([i]))).join(" + ");
    const hint = text.startsWith(" ") ? "" : ` Words after a space are tokens that start with a space: try "${" " + text}".`;
    throw new LabError(`The ${role} "${text}" is not one token of ${m.name}'s vocabulary: it splits into ` +
      `${ids.length} tokens (${pieces || "none"}).${hint}`);
  }
  return ids[0];
}

export function promptIds(m, text) {
  if (!text || !text.trim()) throw new LabError("The prompt is empty. Type a few words, or press “Repeated random sequence”.");
  const ids = [m.meta.bos, ...encode(m, text)];
  if (ids.length > m.meta.n_ctx) {
    throw new LabError(`The prompt is ${ids.length} tokens long with BOS, but ${m.name} reads at most ` +
      `${m.meta.n_ctx}. Remove ${ids.length - m.meta.n_ctx} tokens.`);
  }
  return ids;
}

async function forward(m, ids, ablate) {
  const { n_layers: L, n_heads: H, d_head: dh, d_model: d } = m.meta;
  const keep = new Float32Array(L * H).fill(1), fill = new Float32Array(L * H * dh);
  for (const key of ablate.heads) {
    const [l, h] = key.split(".").map(Number);
    keep[l * H + h] = 0;
    if (ablate.mode === "mean") fill.set(m.meta.head_mean[l][h], (l * H + h) * dh);
  }
  const feeds = {
    tokens: new ort.Tensor("int64", BigInt64Array.from(ids.map(BigInt)), [ids.length]),
    head_keep: new ort.Tensor("float32", keep, [L, H]),
    head_fill: new ort.Tensor("float32", fill, [L, H, dh]),
  };
  if (m.meta.has_mlp) {
    const mk = new Float32Array(L).fill(1), mf = new Float32Array(L * d);
    for (const l of ablate.mlps) {
      mk[l] = 0;
      if (ablate.mode === "mean") mf.set(m.meta.mlp_mean[l], l * d);
    }
    feeds.mlp_keep = new ort.Tensor("float32", mk, [L]);
    feeds.mlp_fill = new ort.Tensor("float32", mf, [L, d]);
  }
  const out = await m.session.run(feeds, ["lens_logits", "pattern", "writer_logits"]);
  return { lens: out.lens_logits.data, pattern: out.pattern.data, writers: out.writer_logits.data };
}

// Every number the panels show, for one model, prompt, target/rival pair and set of ablations.
export async function analyse(m, ids, target, rival, ablate, repeatLength = null) {
  const { n_layers: L, n_heads: H, d_vocab: V } = m.meta;
  const T = ids.length, D = L + 1, P = m.meta.writer_labels.length;
  const t0 = performance.now();
  const o = await forward(m, ids, ablate);
  const t1 = performance.now();
  const finalOffset = (L * T + T - 1) * V;
  const logits = o.lens.subarray(L * T * V, (L + 1) * T * V);
  const lens = A.logitLens(o.lens, D, T, V, target);
  const parts = A.dla(o.writers, P, V, target, rival);
  const loss = A.tokenLoss(logits, T, V, ids);
  const r = {
    ids, target, rival, top: A.topK(o.lens, finalOffset, V, 10),
    lens, dla: parts, dlaLabels: m.meta.writer_labels,
    logitDiff: o.lens[finalOffset + target] - o.lens[finalOffset + rival],
    prevToken: A.previousTokenScores(o.pattern, L, H, T),
    induction: A.inductionScores(o.pattern, L, H, ids, repeatLength),
    loss, copyLosses: repeatLength ? A.copyLosses(loss, repeatLength) : null,
    pattern: o.pattern, repeatLength,
  };
  r.ms = { forward: t1 - t0, total: performance.now() - t0 };
  return r;
}

// ------------------------------------------------------------------ rendering helpers
const h = (tag, attrs = {}, ...kids) => {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v);
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined) el.append(kid);
  return el;
};
// A token as the reader should see it: a leading space as ␣, a newline as ↵.
export function show(s) {
  return s.replace(/^ /, "␣").replace(/\n/g, "↵").replace(/\t/g, "⇥") || "∅";
}
const fmt = (x, n = 3) => (x === null || x === undefined || Number.isNaN(x) ? "—" : x.toFixed(n));
const pct = (p) => (p >= 0.995 ? "100%" : p >= 0.001 ? `${(100 * p).toFixed(1)}%` : "<0.1%");

// One token's text, remembered: the panels ask for the same few tokens many times.
function decodeOne(m, id) {
  m.strings ??= new Map();
  let s = m.strings.get(id);
  if (s === undefined) { s = m.tokenizer.decode([id]); m.strings.set(id, s); }
  return s;
}

// ------------------------------------------------------------------ the page
function build() {
  root.innerHTML = "";
  const style = document.createElement("style");
  style.textContent = css;
  document.head.append(style);

  els.model = h("select", { id: "lab-model", "aria-label": "model" },
    ...Object.entries(MODELS).map(([k, v]) => h("option", { value: k, text: v })));
  els.prompt = h("textarea", { id: "lab-prompt", rows: "2", spellcheck: "false", "aria-label": "prompt" });
  els.prompt.value = DEFAULTS.prompt;
  els.target = h("input", { id: "lab-target", type: "text", spellcheck: "false", "aria-label": "target token" });
  els.target.value = DEFAULTS.target;
  els.rival = h("input", { id: "lab-rival", type: "text", spellcheck: "false", "aria-label": "rival token" });
  els.rival.value = DEFAULTS.rival;
  els.repeat = h("button", { id: "lab-repeat", type: "button", text: "Repeated random sequence" });
  els.status = h("p", { id: "lab-status", class: "lab-status", role: "status", text: "Loading the model…" });
  els.error = h("p", { id: "lab-error", class: "lab-error", role: "alert", hidden: "" });

  els.ablateGrid = h("div", { id: "lab-ablate", class: "lab-ablate" });
  els.mode = h("select", { id: "lab-mode", "aria-label": "ablation" },
    h("option", { value: "zero", text: "zero-ablate" }), h("option", { value: "mean", text: "mean-ablate" }));
  els.clear = h("button", { id: "lab-clear", type: "button", text: "Restore all" });

  els.tokens = h("div", { id: "lab-tokens", class: "lab-tokens" });
  els.top = h("div", { id: "lab-top", class: "lab-bars" });
  els.lens = h("div", { id: "lab-lens", class: "lab-scroll" });
  els.dla = h("div", { id: "lab-dla", class: "lab-bars" });
  els.dlaSum = h("p", { id: "lab-dla-sum", class: "lab-note" });
  els.layer = h("select", { id: "lab-layer", "aria-label": "layer" });
  els.head = h("select", { id: "lab-head", "aria-label": "head" });
  els.canvas = h("canvas", { id: "lab-pattern", class: "lab-pattern", width: "320", height: "320" });
  els.hover = h("p", { id: "lab-hover", class: "lab-note", text: "Queries down, keys across. Point at a cell (or tap it) for its weight." });
  els.scores = h("div", { id: "lab-scores", class: "lab-scroll" });
  els.copy = h("p", { id: "lab-copy", class: "lab-note" });

  root.append(
    h("div", { class: "lab-controls" },
      h("label", {}, "Model ", els.model),
      h("label", { class: "lab-wide" }, "Prompt ", els.prompt),
      h("label", {}, "Target ", els.target),
      h("label", {}, "Rival ", els.rival),
      els.repeat),
    h("p", { class: "lab-note", text: "The target and the rival are single tokens. A word that follows a space is a token that starts with one: type “ Paris”, not “Paris”." }),
    els.status, els.error,
    h("section", { class: "lab-panel", id: "lab-panel-ablate" },
      h("h3", { text: "Interventions" }),
      h("p", { class: "lab-note", text: "Tick a head or an MLP to silence it at every position; every panel below is recomputed." }),
      h("div", { class: "lab-row" }, els.mode, els.clear), els.ablateGrid),
    h("section", { class: "lab-panel", id: "lab-panel-top" },
      h("h3", { text: "Tokens and next-token predictions" }), els.tokens, els.top),
    h("section", { class: "lab-panel", id: "lab-panel-lens" },
      h("h3", { text: "Logit lens" }),
      h("p", { class: "lab-note", id: "lab-lens-note" }), els.lens),
    h("section", { class: "lab-panel", id: "lab-panel-dla" },
      h("h3", { text: "Direct logit attribution" }), els.dlaSum, els.dla),
    h("section", { class: "lab-panel", id: "lab-panel-attn" },
      h("h3", { text: "Attention patterns" }),
      h("div", { class: "lab-row" }, h("label", {}, "Layer ", els.layer), h("label", {}, "Head ", els.head)),
      els.canvas, els.hover, els.copy, els.scores),
  );

  els.model.addEventListener("change", () => { state.model = els.model.value; state.repeat = null; resetSelectors(); schedule(); });
  for (const el of [els.prompt, els.target, els.rival]) el.addEventListener("input", () => {
    if (el === els.prompt) state.repeat = null;
    schedule(150);
  });
  els.repeat.addEventListener("click", () => { state.seed += 1; state.repeat = state.seed; schedule(); });
  els.mode.addEventListener("change", () => { state.ablate.mode = els.mode.value; schedule(); });
  els.clear.addEventListener("click", () => { state.ablate.heads.clear(); state.ablate.mlps.clear(); renderAblate(); schedule(); });
  els.layer.addEventListener("change", () => { state.layer = +els.layer.value; drawPattern(); });
  els.head.addEventListener("change", () => { state.head = +els.head.value; drawPattern(); });
  els.canvas.addEventListener("pointermove", hoverPattern);
  els.canvas.addEventListener("pointerdown", hoverPattern);
  new MutationObserver(() => { refreshLook(); drawPattern(); })
    .observe(document.documentElement, { attributes: true, attributeFilter: ["data-theme"] });
  new ResizeObserver((entries) => {
    const w = Math.round(entries[0].contentRect.width);
    if (w && w !== look.width) { look.width = w; drawPattern(); }
  }).observe(root);
}

let current = null;   // the loaded model the panels show

function resetSelectors() { state.layer = 0; state.head = 0; state.ablate.heads.clear(); state.ablate.mlps.clear(); }

function renderAblate() {
  const m = current;
  if (!m) return;
  const { n_layers: L, n_heads: H, has_mlp } = m.meta;
  els.ablateGrid.innerHTML = "";
  for (let l = 0; l < L; l++) {
    const row = h("div", { class: "lab-ablate-row" }, h("span", { class: "lab-ablate-label", text: `block ${l + 1}` }));
    for (let hd = 0; hd < H; hd++) {
      const key = `${l}.${hd}`;
      const box = h("input", { type: "checkbox", id: `lab-ab-h${l}-${hd}`, "data-layer": l, "data-head": hd });
      box.checked = state.ablate.heads.has(key);
      box.addEventListener("change", () => { box.checked ? state.ablate.heads.add(key) : state.ablate.heads.delete(key); schedule(); });
      row.append(h("label", { class: "lab-chip" }, box, ` L${l + 1}H${hd}`));
    }
    if (has_mlp) {
      const box = h("input", { type: "checkbox", id: `lab-ab-m${l}`, "data-layer": l });
      box.checked = state.ablate.mlps.has(l);
      box.addEventListener("change", () => { box.checked ? state.ablate.mlps.add(l) : state.ablate.mlps.delete(l); schedule(); });
      row.append(h("label", { class: "lab-chip" }, box, ` L${l + 1} MLP`));
    }
    els.ablateGrid.append(row);
  }
  els.layer.innerHTML = ""; els.head.innerHTML = "";
  for (let l = 0; l < L; l++) els.layer.append(h("option", { value: l, text: `block ${l + 1}` }));
  for (let hd = 0; hd < H; hd++) els.head.append(h("option", { value: hd, text: `head ${hd}` }));
  els.layer.value = state.layer; els.head.value = state.head;
}

function setError(msg) {
  if (msg) { els.error.textContent = msg; els.error.hidden = false; root.classList.add("lab-has-error"); }
  else { els.error.textContent = ""; els.error.hidden = true; root.classList.remove("lab-has-error"); }
}

let timer = null;
function schedule(delay = 0) {
  clearTimeout(timer);
  return new Promise((resolve) => { timer = setTimeout(() => { pending = pending.then(update).then(resolve, resolve); }, delay); });
}

// One full update: load the model if needed, tokenise, run, render every panel.
async function update() {
  let m, loadMs = 0;
  try {
    els.status.textContent = `Loading ${state.model}…`;
    const t = performance.now();
    m = await loadModel(state.model);
    loadMs = performance.now() - t;
  } catch (e) {
    setError(`The model could not be loaded: ${e.message}`);
    els.status.textContent = "";
    return;
  }
  if (current !== m) { current = m; renderAblate(); }
  try {
    let ids;
    if (state.repeat) {
      ids = A.repeatIds(m.meta, REPEAT_LENGTH, state.repeat);
      els.prompt.value = m.tokenizer.decode(ids.slice(1));
      state.promptShown = els.prompt.value;
    } else {
      ids = promptIds(m, els.prompt.value);
    }
    const target = state.repeat ? ids[ids.length - 1] : tokenId(m, els.target.value, "target");
    const rival = state.repeat ? ids[1] : tokenId(m, els.rival.value, "rival");
    if (state.repeat) {
      els.target.value = decodeOne(m, target);
      els.rival.value = decodeOne(m, rival);
    }
    if (target === rival) throw new LabError("The target and the rival are the same token: pick two different tokens.");
    const started = performance.now();
    const r = await analyse(m, ids, target, rival, state.ablate, state.repeat ? REPEAT_LENGTH : null);
    state.result = r;
    setError(null);
    if (state.repeat && state.shownRepeat !== state.repeat) {   // a new repeated sequence: show its best induction head
      state.shownRepeat = state.repeat;
      let best = -1;
      r.induction.forEach((row, l) => row.forEach((v, hd) => { if (v > best) { best = v; state.layer = l; state.head = hd; } }));
      els.layer.value = state.layer; els.head.value = state.head;
    }
    render(m, r);
    const ms = performance.now() - started;
    state.timings.push({ forward: r.ms.forward, numbers: r.ms.total, withPanels: ms, load: loadMs, T: ids.length });
    els.status.textContent = `${m.name} · ${ids.length} tokens · forward pass and every panel in ` +
      `${ms.toFixed(0)} ms, in this browser` + (loadMs > 20 ? ` (loading the model took ${loadMs.toFixed(0)} ms).` : ".");
    root.dataset.ready = "1";
  } catch (e) {
    if (!(e instanceof LabError)) console.error(e);
    setError(e instanceof LabError ? e.message : `Something went wrong: ${e.message}`);
    els.status.textContent = "";
    state.result = null;
  }
  root.dataset.updates = String(+(root.dataset.updates || 0) + 1);
}

function render(m, r) {
  const T = r.ids.length, L = m.meta.n_layers;
  const strs = r.ids.map((i) => decodeOne(m, i));
  // tokens
  els.tokens.innerHTML = "";
  strs.forEach((s, i) => els.tokens.append(h("span", { class: "lab-token", title: `position ${i}, id ${r.ids[i]}`, "data-id": r.ids[i] }, i === 0 ? "BOS" : show(s))));
  // top predictions
  els.top.innerHTML = "";
  els.top.append(h("p", { class: "lab-note", text: `After “${show(strs[T - 1])}”, the model predicts:` }));
  for (const { id, p } of r.top) {
    els.top.append(h("div", { class: "lab-bar-row", "data-id": id, "data-prob": p },
      h("span", { class: "lab-bar-label", text: show(decodeOne(m, id)) }),
      h("span", { class: "lab-bar-track" }, h("span", { class: "lab-bar pos", style: `width:${(100 * p).toFixed(2)}%` })),
      h("span", { class: "lab-bar-value", text: pct(p) })));
  }
  // logit lens grid: rows = depths, columns = positions
  const tname = show(decodeOne(m, r.target));
  document.getElementById("lab-lens-note").textContent =
    `Each cell reads the stream at one depth and position through the final LayerNorm and the unembedding: ` +
    `the top token, its probability, and the rank (1 = top) and probability of the target “${tname}”. ` +
    `Colour: the target's probability.`;
  const table = h("table", { class: "lab-lens-table" });
  table.append(h("tr", {}, h("th", { text: "depth \\ input" }), ...strs.map((s, i) => h("th", { text: i === 0 ? "BOS" : show(s) }))));
  for (let d = 0; d <= L; d++) {
    const tr = h("tr", {}, h("th", { text: d === 0 ? "h0 (embed)" : `after block ${d}` }));
    for (let t = 0; t < T; t++) {
      const p = r.lens.targetProb[d][t], rk = r.lens.targetRank[d][t];
      tr.append(h("td", {
        class: "lab-lens-cell", "data-depth": d, "data-pos": t, "data-top": r.lens.topIds[d][t],
        "data-top-prob": r.lens.topProbs[d][t], "data-rank": rk, "data-prob": p,
        style: `--p:${p.toFixed(4)}`,
        title: `${d === 0 ? "h0" : "after block " + d}, position ${t}: top ${show(decodeOne(m, r.lens.topIds[d][t]))} ` +
          `(${pct(r.lens.topProbs[d][t])}); “${tname}” rank ${rk + 1}, p = ${p.toPrecision(3)}`,
      }, h("span", { class: "lab-lens-top", text: show(decodeOne(m, r.lens.topIds[d][t])) }),
      h("span", { class: "lab-lens-sub", text: `${pct(r.lens.topProbs[d][t])} · #${rk + 1}` })));
    }
    table.append(tr);
  }
  els.lens.innerHTML = ""; els.lens.append(table);
  // DLA
  const rname = show(decodeOne(m, r.rival));
  const sum = r.dla.reduce((a, b) => a + b, 0);
  els.dlaSum.textContent = `logit(“${tname}”) − logit(“${rname}”) at the last position = ${r.logitDiff.toFixed(3)}; ` +
    `the ${r.dla.length} parts below sum to ${sum.toFixed(3)}.`;
  const big = Math.max(1e-9, ...r.dla.map(Math.abs));
  els.dla.innerHTML = "";
  r.dla.forEach((v, i) => {
    const w = (50 * Math.abs(v) / big).toFixed(2);
    els.dla.append(h("div", { class: "lab-bar-row", "data-label": r.dlaLabels[i], "data-value": v },
      h("span", { class: "lab-bar-label", text: r.dlaLabels[i] }),
      h("span", { class: "lab-bar-track lab-centered" },
        h("span", { class: `lab-bar ${v >= 0 ? "pos" : "neg"}`, style: v >= 0 ? `left:50%;width:${w}%` : `left:${50 - w}%;width:${w}%` })),
      h("span", { class: "lab-bar-value", text: (v >= 0 ? "+" : "") + v.toFixed(3) })));
  });
  // scores
  const scoreTable = h("table", { class: "lab-score-table" },
    h("tr", {}, h("th", { text: "head" }), h("th", { text: "previous-token" }),
      h("th", { text: r.repeatLength ? "prefix matching" : "induction" })));
  for (let l = 0; l < L; l++) for (let hd = 0; hd < m.meta.n_heads; hd++) {
    const row = h("tr", { "data-layer": l, "data-head": hd, "data-prev": r.prevToken[l][hd], "data-ind": r.induction[l][hd] ?? "" },
      h("th", { text: `L${l + 1}H${hd}` }), h("td", { text: fmt(r.prevToken[l][hd]) }), h("td", { text: fmt(r.induction[l][hd]) }));
    row.addEventListener("click", () => { state.layer = l; state.head = hd; els.layer.value = l; els.head.value = hd; drawPattern(); });
    scoreTable.append(row);
  }
  els.scores.innerHTML = "";
  els.scores.append(h("p", { class: "lab-note", text: r.repeatLength
    ? `Prefix matching (chapter 5): mean attention from each token of the second copy to the token after its first occurrence.`
    : `Induction: attention from a repeated token to the token after its earlier occurrence, averaged over the repeated tokens (— when no token repeats). Click a row to see that head.` }), scoreTable);
  els.copy.textContent = r.copyLosses
    ? `Loss on the first copy ${r.copyLosses[0].toFixed(2)} nats per token; on the second copy ${r.copyLosses[1].toFixed(2)}. ` +
      `The first copy is random, so nothing predicts it; the second copy repeats it, and the induction heads copy the next token.`
    : "";
  els.copy.dataset.first = r.copyLosses ? r.copyLosses[0] : "";
  els.copy.dataset.second = r.copyLosses ? r.copyLosses[1] : "";
  drawPattern();
}

// Theme colours and the canvas size, read once and again only when they change: reading them
// forces the browser to lay the page out, which would cost more than the forward pass.
const look = { theme: null, bg: "#fff", line: "#ccc", text: "#222", width: 320 };
function refreshLook() {
  const style = getComputedStyle(document.documentElement);
  look.theme = document.documentElement.dataset.theme;
  look.bg = style.getPropertyValue("--pst-color-background").trim() || "#fff";
  look.line = style.getPropertyValue("--pst-color-border").trim() || "#ccc";
  look.text = style.getPropertyValue("--pst-color-text-base").trim() || "#222";
}

// Token labels fit beside the grid up to this many positions; longer prompts rely on the hover line.
const LABELLED = 48;

function patternGeometry(box, T) {
  const margin = T <= LABELLED ? Math.min(72, Math.round(box * 0.22)) : 0;
  return { margin, cell: (box - margin) / T };
}

function drawPattern() {
  const r = state.result, m = current;
  if (!r || !m) return;
  const T = r.ids.length, H = m.meta.n_heads, { layer: l, head: hd } = state;
  if (look.theme !== document.documentElement.dataset.theme) refreshLook();
  const box = Math.max(120, Math.min(look.width - 8, 480));
  const dpr = window.devicePixelRatio || 1;
  els.canvas.style.width = `${box}px`; els.canvas.style.height = `${box}px`;
  els.canvas.width = Math.round(box * dpr); els.canvas.height = Math.round(box * dpr);
  const ctx = els.canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = look.bg;
  ctx.fillRect(0, 0, box, box);
  const { margin, cell } = patternGeometry(box, T);
  const dark = document.documentElement.dataset.theme === "dark";
  for (let q = 0; q < T; q++) for (let k = 0; k <= q; k++) {
    const p = r.pattern[((l * H + hd) * T + q) * T + k];
    ctx.fillStyle = dark ? `rgba(86,180,233,${p})` : `rgba(0,114,178,${p})`;
    ctx.fillRect(margin + k * cell, margin + q * cell, Math.ceil(cell), Math.ceil(cell));
  }
  if (margin) {  // queries down the left, keys along the top
    const size = Math.max(7, Math.min(11, cell * 0.8));
    ctx.font = `${size}px ${getComputedStyle(els.canvas).fontFamily || "monospace"}`;
    ctx.fillStyle = look.text;
    ctx.textBaseline = "middle";
    const label = (i) => { const t = i === 0 ? "BOS" : show(decodeOne(m, r.ids[i])); return t.length > 9 ? t.slice(0, 8) + "…" : t; };
    ctx.textAlign = "right";
    for (let q = 0; q < T; q++) ctx.fillText(label(q), margin - 3, margin + (q + 0.5) * cell);
    for (let k = 0; k < T; k++) {
      ctx.save();
      ctx.translate(margin + (k + 0.5) * cell, margin - 3);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left";
      ctx.fillText(label(k), 0, 0);
      ctx.restore();
    }
  }
  ctx.strokeStyle = look.line;
  ctx.strokeRect(margin + 0.5, margin + 0.5, box - margin - 1, box - margin - 1);
  els.canvas.dataset.layer = l; els.canvas.dataset.head = hd;
}

function hoverPattern(ev) {
  const r = state.result, m = current;
  if (!r || !m) return;
  const rect = els.canvas.getBoundingClientRect(), T = r.ids.length;
  const { margin, cell } = patternGeometry(rect.width, T);
  const k = Math.floor((ev.clientX - rect.left - margin) / cell), q = Math.floor((ev.clientY - rect.top - margin) / cell);
  if (q < 0 || k < 0 || q >= T || k >= T) return;
  const p = k > q ? 0 : r.pattern[((state.layer * m.meta.n_heads + state.head) * T + q) * T + k];
  const tok = (i) => (i === 0 ? "BOS" : show(decodeOne(m, r.ids[i])));
  els.hover.textContent = `L${state.layer + 1}H${state.head}: query ${q} “${tok(q)}” → key ${k} “${tok(k)}”: ${p.toFixed(3)}`;
}

// ------------------------------------------------------------------ start
async function start() {
  root = document.getElementById("rs-lab");
  if (!root) return;
  const t0 = performance.now();
  build();
  await schedule();
  window.rsLab.firstResultMs = performance.now() - t0;   // from the script's start
  window.rsLab.firstResultAt = performance.now();        // from the navigation's start
}

// For the browser tests and the benchmark: drive the page and read what it computed.
window.rsLab = {
  state, marks,
  ready: null,
  // Set the controls as a reader would and wait until every panel is redrawn.
  async set({ model, prompt, target, rival, ablate, repeat } = {}) {
    if (model !== undefined && model !== state.model) { els.model.value = model; state.model = model; resetSelectors(); }
    if (prompt !== undefined) { els.prompt.value = prompt; state.repeat = null; }
    if (target !== undefined) els.target.value = target;
    if (rival !== undefined) els.rival.value = rival;
    if (repeat) { state.seed = repeat; state.repeat = repeat; }
    if (ablate !== undefined) {
      state.ablate.heads = new Set((ablate.heads || []).map(([l, hd]) => `${l}.${hd}`));
      state.ablate.mlps = new Set(ablate.mlps || []);
      state.ablate.mode = ablate.mode || "zero";
      els.mode.value = state.ablate.mode;
    }
    await schedule();
    renderAblate();
    return { error: els.error.hidden ? null : els.error.textContent, result: state.result && summary(state.result) };
  },
  // The model's own tokenizer, as the page uses it (BOS not included).
  async encode(texts, model = state.model) {
    const m = await loadModel(model);
    return texts.map((t) => encode(m, t));
  },
  // Time n forward passes (with every panel's numbers) of a prompt of given token ids.
  async time(ids, n = 20) {
    const m = await loadModel(state.model);
    const out = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const r = await analyse(m, ids, ids[ids.length - 1], ids[1], state.ablate);
      render(m, r);
      out.push({ total: performance.now() - t0, forward: r.ms.forward });
    }
    return out;
  },
};

function summary(r) {
  return {
    ids: r.ids, top_ids: r.top.map((t) => t.id), top_probs: r.top.map((t) => t.p),
    lens_top_ids: r.lens.topIds, lens_top_probs: r.lens.topProbs,
    lens_target_rank: r.lens.targetRank, lens_target_prob: r.lens.targetProb,
    dla: r.dla, dla_labels: r.dlaLabels, logit_diff: r.logitDiff,
    prev_token_scores: r.prevToken, induction_scores: r.induction, copy_losses: r.copyLosses, token_loss: r.loss,
  };
}

window.rsLab.ready = document.readyState === "loading"
  ? new Promise((res) => document.addEventListener("DOMContentLoaded", () => start().then(res)))
  : start();
