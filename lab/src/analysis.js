// The numbers the lab shows, computed from the ONNX outputs. Each function mirrors a
// definition in the book's helpers (named in its comment); tests/test_lab.py compares
// them with Python's values for the same prompts.

// Softmax statistics of one logit row: the top id, its probability, and the log of the
// normaliser (so the probability of any token is exp(logit - logZ)).
export function rowStats(logits, offset, V) {
  let max = -Infinity, top = 0;
  for (let v = 0; v < V; v++) {
    const x = logits[offset + v];
    if (x > max) { max = x; top = v; }
  }
  let sum = 0;
  for (let v = 0; v < V; v++) sum += Math.exp(logits[offset + v] - max);
  return { top, pTop: 1 / sum, logZ: max + Math.log(sum) };
}

// helpers.lens.token_rank: how many tokens have a strictly larger logit (0 = top).
export function rank(logits, offset, V, token) {
  const x = logits[offset + token];
  let r = 0;
  for (let v = 0; v < V; v++) if (logits[offset + v] > x) r++;
  return r;
}

// The k most likely tokens of one row: [{id, p}], most likely first.
export function topK(logits, offset, V, k) {
  const { logZ } = rowStats(logits, offset, V);
  const best = [];
  for (let v = 0; v < V; v++) {
    const x = logits[offset + v];
    if (best.length < k || x > best[best.length - 1].x) {
      best.push({ id: v, x });
      best.sort((a, b) => b.x - a.x);
      if (best.length > k) best.pop();
    }
  }
  return best.map(({ id, x }) => ({ id, p: Math.exp(x - logZ) }));
}

// Logit lens (chapter 2): for every depth and position, the top token and its probability,
// and the rank and probability of `target`. lens has shape [D, T, V].
export function logitLens(lens, D, T, V, target) {
  const out = { topIds: [], topProbs: [], targetRank: [], targetProb: [] };
  for (let d = 0; d < D; d++) {
    const ti = [], tp = [], tr = [], tq = [];
    for (let t = 0; t < T; t++) {
      const off = (d * T + t) * V;
      const s = rowStats(lens, off, V);
      ti.push(s.top); tp.push(s.pTop);
      if (target !== null) {
        tr.push(rank(lens, off, V, target));
        tq.push(Math.exp(lens[off + target] - s.logZ));
      }
    }
    out.topIds.push(ti); out.topProbs.push(tp); out.targetRank.push(tr); out.targetProb.push(tq);
  }
  return out;
}

// Direct logit attribution (helpers.lens.direct_logit_attribution): row p of writer_logits is
// the p-th write's direct effect on every logit, so its share of logit(a) - logit(b) is a difference.
export function dla(writerLogits, P, V, a, b) {
  const parts = [];
  for (let p = 0; p < P; p++) parts.push(writerLogits[p * V + a] - writerLogits[p * V + b]);
  return parts;
}

// helpers.core.previous_token_scores: mean attention from each t >= 1 to t - 1. pattern [L, H, T, T].
export function previousTokenScores(pattern, L, H, T) {
  const out = [];
  for (let l = 0; l < L; l++) {
    const row = [];
    for (let h = 0; h < H; h++) {
      if (T < 2) { row.push(null); continue; }
      let s = 0;
      for (let t = 1; t < T; t++) s += pattern[((l * H + h) * T + t) * T + t - 1];
      row.push(s / (T - 1));
    }
    out.push(row);
  }
  return out;
}

// Induction (chapter 5). On BOS + R + R with |R| = length: helpers.core.prefix_matching_scores, the
// mean attention from each second-copy token to the token after its first occurrence. On any other
// prompt: for every position whose token occurred before, the attention to the positions right
// after its earlier occurrences, averaged over such positions (null when no token repeats).
export function inductionScores(pattern, L, H, ids, length) {
  const T = ids.length;
  const pairs = [];  // [query, key] pairs and the query they belong to
  if (length) {
    for (let q = length + 1; q <= 2 * length; q++) pairs.push([q, [q - length + 1]]);
  } else {
    for (let q = 1; q < T; q++) {
      const keys = [];
      for (let j = 1; j < q - 1; j++) if (ids[j] === ids[q]) keys.push(j + 1);
      if (keys.length) pairs.push([q, keys]);
    }
  }
  const out = [];
  for (let l = 0; l < L; l++) {
    const row = [];
    for (let h = 0; h < H; h++) {
      if (!pairs.length) { row.push(null); continue; }
      let s = 0;
      for (const [q, keys] of pairs) for (const k of keys) s += pattern[((l * H + h) * T + q) * T + k];
      row.push(s / pairs.length);
    }
    out.push(row);
  }
  return out;
}

// helpers.core.per_token_loss: entry i is the loss (nats) of predicting ids[i + 1] from position i.
export function tokenLoss(logits, T, V, ids) {
  const out = [];
  for (let i = 0; i + 1 < T; i++) {
    const { logZ } = rowStats(logits, i * V, V);
    out.push(logZ - logits[i * V + ids[i + 1]]);
  }
  return out;
}

// helpers.core.copy_losses: mean loss on each copy of BOS + R + R, skipping each copy's first token.
export function copyLosses(loss, length) {
  const mean = (a) => a.reduce((x, y) => x + y, 0) / a.length;
  return [mean(loss.slice(1, length)), mean(loss.slice(length + 1))];
}

// mulberry32, the same generator as lab/export.py's, so the page and Python draw the same tokens.
export function mulberry32(seed) {
  let state = seed >>> 0;
  return function () {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// BOS + R + R with R of `length` non-special tokens drawn by mulberry32(seed) (lab/export.py lab_repeat_ids).
export function repeatIds(meta, length, seed) {
  const special = new Set(meta.special_ids);
  const allowed = [];
  for (let t = 0; t < meta.d_vocab; t++) if (!special.has(t)) allowed.push(t);
  const draw = mulberry32(seed);
  const r = [];
  for (let i = 0; i < length; i++) r.push(allowed[Math.floor(draw() * allowed.length)]);
  return [meta.bos, ...r, ...r];
}
