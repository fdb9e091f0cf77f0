// tutorstack console: plain JS, no build, no CDN. The API key lives in sessionStorage only.
"use strict";
const $ = (s) => document.querySelector(s);
const state = { key: sessionStorage.getItem("tutorstack_key") || "", me: null };
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

async function api(method, path, body) {
  const r = await fetch(path, {
    method, headers: { authorization: `Bearer ${state.key}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    const msg = (data && data.error && data.error.message) || `HTTP ${r.status}`;
    const err = new Error(msg); err.status = r.status; throw err;
  }
  return data;
}

// ---------------------------------------------------------------- login and navigation
async function login(key) {
  state.key = key;
  try {
    state.me = await api("GET", "/v1/me");
  } catch (e) {
    state.key = ""; state.me = null;
    sessionStorage.removeItem("tutorstack_key");
    $("#login-error").textContent = e.status === 401 ? "Login failed: this API key is not valid." : `Login failed: ${e.message}`;
    return false;
  }
  sessionStorage.setItem("tutorstack_key", key);
  $("#login-error").textContent = "";
  $("#who").textContent = `${state.me.user_id || state.me.key_id} (${state.me.role})`;
  $("#nav").hidden = false; $("#logout").hidden = false;
  for (const a of document.querySelectorAll("#nav a")) a.hidden = !a.dataset.roles.split(" ").includes(state.me.role);
  if (!location.hash || location.hash === "#login") location.hash = "#chat"; else show();
  return true;
}

function allowed(view) {
  const link = document.querySelector(`#nav a[href="#${view}"]`);
  return link && state.me && link.dataset.roles.split(" ").includes(state.me.role);
}

function show() {
  let view = (location.hash || "#login").slice(1);
  if (!state.me || !allowed(view)) view = state.me ? "chat" : "login";
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== `view-${view}`;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("href") === `#${view}`);
  const onShow = { leaderboard: loadLeaderboard, adapters: loadAdapters, health: loadHealth, comments: loadComments,
                   safety: loadSafety,
                   metrics: loadMetrics, writing: probeWriting, guided: probeGuided }[view];
  if (onShow) onShow();
}

// ---------------------------------------------------------------- chat (streaming) with citations and thumbs
function sseLines(reader, onData) {
  const decoder = new TextDecoder(); let buffer = "";
  return (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let i;
      while ((i = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, i).trim(); buffer = buffer.slice(i + 1);
        if (line.startsWith("data:")) { const d = line.slice(5).trim(); if (d && d !== "[DONE]") onData(JSON.parse(d)); }
      }
    }
  })();
}

async function sendChat(ev) {
  ev.preventDefault();
  const text = $("#chat-input").value.trim(); if (!text) return;
  const mode = $("#chat-mode").value;
  const log = $("#chat-log");
  log.insertAdjacentHTML("beforeend", `<div class="msg user">${esc(text)}</div>`);
  const box = document.createElement("div"); box.className = "msg assistant"; box.innerHTML = `<span class="text"></span>`;
  log.appendChild(box);
  $("#chat-send").disabled = true; $("#chat-input").value = "";
  let responseId = null, answer = "", citations = [], sources = [];
  try {
    const r = await fetch("/v1/chat", { method: "POST", headers: { authorization: `Bearer ${state.key}`, "content-type": "application/json" },
      body: JSON.stringify({ mode, messages: [{ role: "user", content: text }], stream: true, max_tokens: Number($("#chat-max").value) || 64 }) });
    if (!r.ok) { const d = await r.json().catch(() => ({})); throw new Error((d.error && d.error.message) || `HTTP ${r.status}`); }
    const adapter = r.headers.get("x-tutorstack-adapter"), variant = r.headers.get("x-tutorstack-ab-variant");
    await sseLines(r.body.getReader(), (chunk) => {
      if (chunk.error) { answer += `\n[error: ${chunk.error.message}]`; }
      if (chunk.id && !responseId) responseId = chunk.id;
      for (const c of chunk.choices || []) { const t = c.delta && c.delta.content; if (t) answer += t; }
      if (chunk.citations) citations = chunk.citations;
      if (chunk.sources) sources = chunk.sources;
      box.querySelector(".text").textContent = answer;
    });
    box.dataset.done = "1";
    const meta = [adapter && `adapter ${adapter}`, variant && `A/B ${variant}`].filter(Boolean).join(" · ");
    let html = `<div class="meta">${esc(meta)}</div>`;
    const cited = citations.length ? citations : [];
    if (cited.length) html += `<div class="cites">Sources: ${cited.map((c, i) => `<button class="cite" data-i="${i}">[${esc(c.number)}] ${esc(c.path)}:${esc(c.start_line)}-${esc(c.end_line)}</button>`).join("")}</div><div class="source" hidden></div>`;
    html += `<div class="thumbs"><button class="up">▲ Good answer</button> <button class="down">▼ Poor answer</button> <span class="thanks"></span></div>`;
    box.insertAdjacentHTML("beforeend", html);
    for (const b of box.querySelectorAll(".cite")) b.onclick = () => {
      const c = cited[Number(b.dataset.i)]; const src = box.querySelector(".source");
      src.hidden = false; src.textContent = `${c.path} lines ${c.start_line}-${c.end_line}${c.heading_path ? " · " + c.heading_path.join(" › ") : ""}\n\n${c.snippet}`;
    };
    for (const [cls, vote] of [["up", "up"], ["down", "down"]]) box.querySelector(`.${cls}`).onclick = async () => {
      try {
        const res = await api("POST", "/v1/feedback", { response_id: responseId, vote, mode, prompt: text, answer, model: adapter || "" });
        box.querySelector(".thanks").textContent = res.duplicate ? "already recorded" : "thanks!";
      } catch (e) { box.querySelector(".thanks").textContent = e.message; }
    };
  } catch (e) {
    box.querySelector(".text").textContent = `Error: ${e.message}`; box.classList.add("error");
  } finally { $("#chat-send").disabled = false; }
}

// ---------------------------------------------------------------- writing and guided (other services)
async function probeWriting() {
  $("#writing-status").textContent = "";
  $("#writing-analyze").disabled = false;
}

function highlight(text, issues) {
  const spans = issues.filter((i) => Number.isInteger(i.start) && Number.isInteger(i.end)).sort((a, b) => a.start - b.start);
  let out = "", pos = 0;
  for (const s of spans) {
    if (s.start < pos) continue;
    out += esc(text.slice(pos, s.start)) + `<mark title="${esc(s.message || s.category || "")}">${esc(text.slice(s.start, s.end))}</mark>`;
    pos = s.end;
  }
  return out + esc(text.slice(pos));
}

async function analyze() {
  const text = $("#writing-input").value;
  $("#writing-status").textContent = "Analyzing…";
  try {
    const r = await api("POST", "/v1/writing/analyze", { text });
    $("#writing-status").textContent = "";
    const scores = r.scores || r.rubric || {};
    const rows = Array.isArray(scores) ? scores.map((s) => [s.criterion || s.name, s.score]) : Object.entries(scores).map(([k, v]) => [k, typeof v === "object" ? v.score : v]);
    $("#writing-scores").innerHTML = rows.length ? `<table>${rows.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join("")}</table>` : "";
    const issues = (r.issues || []).map((i) => ({ ...i, start: i.start ?? (i.span && i.span.start), end: i.end ?? (i.span && i.span.end) }));
    $("#writing-text").innerHTML = highlight(text, issues);
    $("#writing-issues").innerHTML = issues.map((i) => `<li>${esc(i.category || i.type || "")}: ${esc(i.message || i.explanation || "")}${i.suggestion ? " → " + esc(i.suggestion) : ""}</li>`).join("");
  } catch (e) {
    $("#writing-status").textContent = [404, 502, 503, 504].includes(e.status) ? "Writing analysis is not available yet." : `Error: ${e.message}`;
  }
}

async function probeGuided() { $("#guided-status").textContent = ""; }

async function guided() {
  const text = $("#guided-input").value.trim(); if (!text) return;
  $("#guided-log").insertAdjacentHTML("beforeend", `<div class="msg user">${esc(text)}</div>`);
  try {
    const r = await api("POST", "/v1/chat/guided", { course_id: $("#guided-course").value, messages: [{ role: "user", content: text }], session_id: state.guidedSession || undefined });
    state.guidedSession = r.session_id || state.guidedSession;
    const reply = (r.choices && r.choices[0] && r.choices[0].message.content) || r.reply || r.message || JSON.stringify(r);
    $("#guided-log").insertAdjacentHTML("beforeend", `<div class="msg">${esc(reply)}</div>`);
    $("#guided-input").value = "";
  } catch (e) {
    $("#guided-status").textContent = [404, 502, 503, 504].includes(e.status) ? "Guided sessions are not available yet." : `Error: ${e.message}`;
  }
}

// ---------------------------------------------------------------- arena and leaderboard
async function arena(ev) {
  ev.preventDefault();
  $("#arena-status").textContent = "Asking both candidates…"; $("#arena-ask").disabled = true;
  $("#arena-result").hidden = true; $("#arena-reveal").textContent = "";
  try {
    const r = await api("POST", "/v1/arena", { mode: $("#arena-mode").value, prompt: $("#arena-prompt").value });
    state.arenaId = r.id;
    $("#arena-a").textContent = r.a.content; $("#arena-b").textContent = r.b.content;
    $("#arena-result").hidden = false; $("#arena-status").textContent = "";
    for (const b of document.querySelectorAll(".votes button")) b.disabled = false;
  } catch (e) { $("#arena-status").textContent = `Error: ${e.message}`; }
  finally { $("#arena-ask").disabled = false; }
}

async function vote(choice) {
  try {
    const r = await api("POST", "/v1/feedback", { arena_id: state.arenaId, vote: choice, comment: $("#arena-comment").value || null });
    for (const b of document.querySelectorAll(".votes button")) b.disabled = true;
    $("#arena-reveal").textContent = `Recorded${r.duplicate ? " (already)" : ""}: A was ${r.vote.model_a}, B was ${r.vote.model_b}.`;
    $("#arena-comment").value = "";
  } catch (e) { $("#arena-reveal").textContent = `Error: ${e.message}`; }
}

async function loadLeaderboard() {
  const out = $("#leaderboard");
  try {
    const r = await api("GET", "/v1/leaderboard");
    if (!r.modes.length) { out.innerHTML = `<p class="muted">No votes yet.</p>`; return; }
    out.innerHTML = r.modes.map((m) => {
      const lo = Math.min(...m.ratings.map((x) => x.ci_low)), hi = Math.max(...m.ratings.map((x) => x.ci_high));
      const pct = (v) => (100 * (v - lo) / Math.max(hi - lo, 1)).toFixed(1);
      return `<h2>${esc(m.mode)} <span class="muted">(${m.votes} vote${m.votes === 1 ? "" : "s"})</span></h2><table class="board" data-mode="${esc(m.mode)}"><tr><th>model</th><th>rating</th><th>95% CI</th><th></th><th>wins/games</th></tr>` +
        m.ratings.map((x) => `<tr data-model="${esc(x.model)}"><td>${esc(x.model)}</td><td class="rating">${x.rating.toFixed(1)}</td><td>${x.ci_low.toFixed(0)}–${x.ci_high.toFixed(0)}</td>` +
          `<td><div class="bar"><div class="ci" style="left:${pct(x.ci_low)}%;width:${(pct(x.ci_high) - pct(x.ci_low)).toFixed(1)}%"></div><div class="pt" style="left:${pct(x.rating)}%"></div></div></td><td class="games">${x.wins}/${x.games}</td></tr>`).join("") + "</table>";
    }).join("");
  } catch (e) { out.innerHTML = `<p class="error">${esc(e.message)}</p>`; }
}

// ---------------------------------------------------------------- teachers
async function learner(ev) {
  ev.preventDefault();
  const out = $("#learner-out");
  try {
    const r = await api("GET", `/v1/learners/${encodeURIComponent($("#learner-user").value)}?course_id=${encodeURIComponent($("#learner-course").value)}`);
    const weak = r.weak_points || (r.profile && r.profile.weak_points) || [];
    out.innerHTML = (weak.length ? `<table><tr><th>weak point</th><th>detail</th></tr>${weak.map((w) => `<tr><td>${esc(w.skill || w.name || w.category || w.id || "")}</td><td>${esc(JSON.stringify(w))}</td></tr>`).join("")}</table>` : `<p class="muted">No weak points recorded.</p>`);
  } catch (e) { out.innerHTML = `<p class="error">${[404, 502, 503].includes(e.status) ? esc(e.message) : "Error: " + esc(e.message)}</p>`; }
}

// safety events (GET /v1/safety/events, teachers and admins): flagged moderation findings per course
// the event names the deciding category; the others flagged in the same check follow it, muted
function otherCategories(e) {
  const others = (e.categories || []).filter((c) => c.category !== e.category);
  return others.length ? ` <span class="muted">(also ${others.map((c) => `${esc(c.category)} ${Number(c.score).toFixed(2)}`).join(", ")})</span>` : "";
}
async function loadSafety(ev) {
  if (ev) ev.preventDefault();
  const course = $("#safety-course").value.trim() || "default";
  try {
    const r = await api("GET", `/v1/safety/events?course=${encodeURIComponent(course)}&limit=200`);
    $("#safety-events tbody").innerHTML = r.data.length ? r.data.map((e) => `<tr><td>${new Date(e.time * 1000).toLocaleString()}</td><td>${esc(e.category)}${otherCategories(e)}</td><td>${esc(e.action)}</td><td>${esc(e.direction)}</td><td>${esc(e.mode)}</td><td>${esc(e.user_id || "")}</td><td>${esc(e.excerpt)}</td></tr>`).join("")
      : `<tr><td colspan="7" class="muted">No flagged events for this course.</td></tr>`;
  } catch (e) { $("#safety-events tbody").innerHTML = `<tr><td colspan="7" class="error">${esc(e.message)}</td></tr>`; }
}

async function loadComments() {
  try {
    const r = await api("GET", "/v1/feedback?with_comment=true&limit=200");
    $("#comments tbody").innerHTML = r.data.map((v) => `<tr><td>${new Date(v.created_at * 1000).toLocaleString()}</td><td>${esc(v.mode)}</td><td>${esc(v.vote)}</td><td>${esc(v.comment)}</td><td>${esc(v.user_id || v.key_id)}</td></tr>`).join("");
  } catch (e) { $("#comments tbody").innerHTML = `<tr><td colspan="5" class="error">${esc(e.message)}</td></tr>`; }
}

// ---------------------------------------------------------------- operators
async function loadAdapters() {
  const msg = $("#adapters-msg");
  try {
    const r = await api("GET", "/v1/adapters");
    $("#adapters tbody").innerHTML = r.data.map((a) => `<tr data-adapter="${esc(a.name)}"><td>${esc(a.name)}</td><td class="loaded">${a.loaded ? "yes" : "no"}</td>` +
      `<td><button class="op" data-op="${a.loaded ? "unload" : "load"}" data-name="${esc(a.name)}">${a.loaded ? "Unload" : "Load"}</button></td></tr>`).join("");
    for (const b of document.querySelectorAll("#adapters .op")) b.onclick = async () => {
      try { await api("POST", `/v1/adapters/${b.dataset.op}`, { name: b.dataset.name }); msg.textContent = `${b.dataset.op}ed ${b.dataset.name}`; }
      catch (e) { msg.textContent = `Error: ${e.message}`; }
      loadAdapters();
    };
    await loadSplit();
  } catch (e) { msg.textContent = `Error: ${e.message}`; }
}

async function loadSplit() {
  const s = await api("GET", `/v1/ab/${encodeURIComponent($("#ab-mode").value)}`);
  $("#ab-state").textContent = s.active ? `Active: ${s.control || "base"} (control) vs ${s.candidate} (candidate) at ${s.percent}%` : "No A/B split for this mode.";
}

async function abAction(path, method, body) {
  const msg = $("#adapters-msg");
  try {
    const r = await api(method, path, body);
    msg.textContent = r.action ? `${r.action}: now serving ${r.now_serving}` : "A/B split saved.";
  } catch (e) { msg.textContent = `Error: ${e.message}`; }
  await loadAdapters();
}

async function loadHealth() {
  try {
    const r = await api("GET", "/v1/health");
    $("#health-overall").innerHTML = `Platform: <span class="status-${esc(r.status)}">${esc(r.status)}</span>`;
    $("#health tbody").innerHTML = r.services.map((s) => `<tr><td>${esc(s.name)}</td><td class="status-${esc(s.status)}">${esc(s.status)}</td><td>${s.latency_ms == null ? "" : s.latency_ms.toFixed(1) + " ms"}</td><td>${esc(s.error || "")}</td></tr>`).join("");
  } catch (e) { $("#health-overall").innerHTML = `<span class="error">Health overview not available: ${esc(e.message)}</span>`; }
}

function chart(points, key, label) {
  const w = 440, h = 120, vals = points.map((p) => p[key] ?? 0), max = Math.max(...vals, 1e-9);
  const xy = vals.map((v, i) => `${(i / Math.max(vals.length - 1, 1) * (w - 10) + 5).toFixed(1)},${(h - 15 - v / max * (h - 30)).toFixed(1)}`).join(" ");
  return `<svg class="chart" width="${w}" height="${h}" role="img" aria-label="${esc(label)}"><text x="6" y="13" font-size="11">${esc(label)} (max ${max.toFixed(2)})</text><polyline fill="none" stroke="#3f6fd8" stroke-width="2" points="${xy}"/></svg>`;
}

async function loadMetrics() {
  try {
    const cfg = await (await fetch("/console/config")).json();
    $("#metrics-grafana").innerHTML = cfg.grafana_url ? `<a href="${esc(cfg.grafana_url)}">Open Grafana</a>` : "";
    const r = await api("GET", "/console/metrics");
    const names = Object.keys(r.services);
    $("#metrics-charts").innerHTML = names.length ? names.map((n) => `<h3>${esc(n)}</h3>${chart(r.services[n].points, "rps", "requests/s")} ${chart(r.services[n].points, "latency_ms", "mean latency ms")}`).join("")
      : `<p class="muted">Collecting samples… (every few seconds)</p>`;
  } catch (e) { $("#metrics-charts").innerHTML = `<p class="error">${esc(e.message)}</p>`; }
}

// ---------------------------------------------------------------- wiring
document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").onsubmit = (ev) => { ev.preventDefault(); login($("#api-key").value.trim()); };
  $("#logout").onclick = () => { sessionStorage.removeItem("tutorstack_key"); location.hash = "#login"; location.reload(); };
  $("#chat-form").onsubmit = sendChat;
  $("#writing-analyze").onclick = analyze;
  $("#guided-send").onclick = guided;
  $("#arena-form").onsubmit = arena;
  for (const b of document.querySelectorAll(".votes button")) b.onclick = () => vote(b.dataset.vote);
  $("#leaderboard-refresh").onclick = loadLeaderboard;
  $("#learner-form").onsubmit = learner;
  $("#comments-refresh").onclick = loadComments;
  $("#safety-form").onsubmit = loadSafety;
  $("#adapters-refresh").onclick = loadAdapters;
  $("#health-refresh").onclick = loadHealth;
  $("#ab-mode").onchange = loadSplit;
  $("#ab-form").onsubmit = (ev) => {
    ev.preventDefault();
    const body = { candidate: $("#ab-candidate").value.trim(), percent: Number($("#ab-percent").value) };
    if ($("#ab-control").value.trim()) body.control = $("#ab-control").value.trim();
    abAction(`/v1/ab/${encodeURIComponent($("#ab-mode").value)}`, "PUT", body);
  };
  $("#ab-promote").onclick = () => abAction(`/v1/ab/${encodeURIComponent($("#ab-mode").value)}/promote`, "POST");
  $("#ab-rollback").onclick = () => abAction(`/v1/ab/${encodeURIComponent($("#ab-mode").value)}/rollback`, "POST");
  window.addEventListener("hashchange", show);
  if (state.key) login(state.key); else show();
});
