// fer-edge status page: polls the JSON API twice a second and redraws. No dependencies.
"use strict";

const POLL_MS = 500;
const KNOWN = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt", "uncertain"];
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "style") for (const [p, pv] of Object.entries(v)) node.style.setProperty(p, pv);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const colour = (label) => (KNOWN.includes(label) ? `var(--${label})` : "var(--idle)");
const pct = (x) => (x == null ? "–" : `${Math.round(x * 100)}%`);
const num = (x, d = 1) => (x == null ? "–" : Number(x).toFixed(d));

function uptime(s) {
  if (s == null) return "–";
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  return m ? `${m}m ${Math.floor(s % 60)}s` : `${Math.floor(s)}s`;
}

function counter(c, name) {
  const v = c ? c[name] : undefined;
  if (v == null) return 0;
  return typeof v === "object" ? Object.values(v).reduce((a, b) => a + b, 0) : v;
}

function renderFaces(latest) {
  const box = $("faces");
  const faces = (latest && latest.faces) || [];
  $("faces-count").textContent = latest ? faces.length : "–";
  $("frame-info").textContent = latest
    ? `frame ${latest.frame_index}${latest.file ? " · " + latest.file : ""}` : "";
  box.replaceChildren();
  if (!faces.length) { box.append(el("p", { class: "empty" }, "Nobody in view.")); return; }
  for (const f of faces) {
    const c = colour(f.expression);
    const probs = el("div", { class: "probs" });
    const entries = Object.entries(f.probabilities || {}).sort((a, b) => b[1] - a[1]);
    for (const [label, p] of entries) {
      probs.append(
        el("span", {}, label),
        el("div", { class: "bar" }, el("div", { style: { width: `${(p * 100).toFixed(1)}%`, "--pc": colour(label) } })),
        el("span", { class: "pct" }, pct(p)));
    }
    box.append(el("div", { class: "face", "data-track": f.track_id, style: { "--c": c } },
      el("div", { class: "face-head" },
        el("span", { class: "face-expr" }, f.expression),
        el("span", { class: "face-meta" }, `#${f.track_id} · ${pct(f.confidence)} · det ${pct(f.score)}`)),
      el("div", { class: "conf" }, el("div", { style: { width: `${((f.confidence || 0) * 100).toFixed(1)}%` } })),
      probs));
  }
}

function renderStages(stages) {
  const body = el("tbody");
  const names = Object.keys(stages || {});
  if (!names.length) {
    body.append(el("tr", {}, el("td", { class: "empty" }, "No frames yet.")));
  } else {
    const max = Math.max(...names.map((n) => stages[n].p95 || 0), 1e-6);
    for (const n of names) {
      const s = stages[n];
      body.append(el("tr", {},
        el("td", {}, n),
        el("td", { class: "lat" }, el("div", { class: "bar" },
          el("div", { class: "p95", style: { width: `${(100 * (s.p95 || 0) / max).toFixed(1)}%` } }),
          el("div", { class: "p50", style: { width: `${(100 * (s.p50 || 0) / max).toFixed(1)}%` } }))),
        el("td", { class: "num" }, num(s.p50, 2)),
        el("td", { class: "num" }, num(s.p95, 2))));
    }
  }
  $("stages").replaceChildren(body);
}

function bySink(counters, name) {
  // labelled counters arrive as {"reason=queue,sink=mqtt": 3, "sink=jsonl": 10}
  const out = {};
  const v = counters ? counters[name] : null;
  if (!v || typeof v !== "object") return out;
  for (const [labels, n] of Object.entries(v)) {
    const m = /(?:^|,)sink=([^,]*)/.exec(labels);
    if (m) out[m[1]] = (out[m[1]] || 0) + n;
  }
  return out;
}

function renderOutputs(m) {
  const pub = bySink(m.counters, "sink_published");
  const drop = bySink(m.counters, "sink_dropped");
  const err = bySink(m.counters, "sink_errors");
  const comps = (m.health && m.health.components) || {};
  const names = [...new Set([...Object.keys(pub), ...Object.keys(drop), ...Object.keys(err)])].sort();
  const body = el("tbody");
  if (!names.length) body.append(el("tr", {}, el("td", { class: "empty" }, "No outputs yet.")));
  for (const n of names) {
    const states = Object.entries(comps).filter(([c]) => c === `sink:${n}` || c.startsWith(`sink:${n}:`));
    const bad = states.find(([, s]) => s.state !== "ok");
    const state = bad ? bad[1].state : "ok";
    body.append(el("tr", { title: bad ? bad[1].reason : "" },
      el("td", {}, el("span", { class: `dot ${state}` }), n),
      el("td", { class: "num" }, pub[n] || 0),
      el("td", { class: "num" }, drop[n] || 0),
      el("td", { class: "num" }, err[n] || 0)));
  }
  $("outputs").replaceChildren(body);
}

function renderMetrics(m) {
  const h = m.health || {};
  const badge = $("health");
  badge.className = `badge ${h.state || "offline"}`;
  badge.textContent = h.state || "unknown";
  badge.title = h.reason || "";
  $("reason").textContent = h.reason || "";
  $("fps").textContent = num(m.fps, 1);
  $("frames").textContent = counter(m.counters, "frames");
  $("dropped").textContent = counter(m.counters, "frames_dropped") + counter(m.counters, "sink_dropped");
  $("errors").textContent = counter(m.counters, "errors");
  $("uptime").textContent = uptime(m.uptime_s);
  renderStages(m.stages);
  renderOutputs(m);
}

function renderEvents(events) {
  const ul = $("events");
  ul.replaceChildren();
  if (!events.length) { ul.append(el("li", { class: "empty" }, "None yet.")); return; }
  for (const e of events.slice().reverse().slice(0, 30)) {
    const t = e.timestamp ? new Date(e.timestamp * 1000).toLocaleTimeString() : "";
    const what = e.kind === "expression_changed" ? `${e.previous} → ${e.current}` : e.kind.replace("_", " ");
    ul.append(el("li", {}, el("span", { class: "t" }, t), `#${e.track_id} ${what}`));
  }
}

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

async function tick() {
  try {
    const [latest, metrics, events] = await Promise.all(
      [getJSON("/api/latest"), getJSON("/api/metrics"), getJSON("/api/events")]);
    renderFaces(latest);
    renderMetrics(metrics);
    renderEvents(events);
  } catch (err) {
    const badge = $("health");
    badge.className = "badge offline";
    badge.textContent = "offline";
    $("reason").textContent = `cannot reach the daemon (${err.message})`;
  } finally {
    setTimeout(tick, POLL_MS);
  }
}

async function init() {
  try {
    const info = await getJSON("/api/info");
    $("subtitle").textContent = `facial expression recognition · v${info.version}`;
    if (info.preview) {
      $("preview-card").hidden = false;
      $("preview").src = "/preview.mjpg";
    }
  } catch (err) { /* tick() reports the daemon as offline */ }
  tick();
}

document.addEventListener("DOMContentLoaded", init);
