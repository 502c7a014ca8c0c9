// edge's live dashboard. Polls the admin API's JSON endpoints (/stats,
// /pools, /dns/sites, /events) and updates the tables in place: rows are
// keyed, so a button found on one poll is still the button on the next.
// Rates are differences between two polls of /stats, as Prometheus' rate().
"use strict";

const POLL_MS = 2000;
const RATIO_WINDOW_S = 300;
const SPARK_POINTS = 60;
const EVENTS_SHOWN = 50;

const state = {
  prev: null, // the previous /stats
  ratio: [], // [{time, hits, lookups}] over RATIO_WINDOW_S
  rpsSeries: [],
  hitSeries: [],
  lastEvent: 0,
  events: [],
  rows: new Map(), // table id -> Map(key -> row)
};

// --- helpers ---------------------------------------------------------------

function byId(id) {
  return document.getElementById(id);
}

// What the operator typed (kept in this tab's sessionStorage only).
function token() {
  return byId("token").value.trim();
}

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) {
    throw new Error(path + " answered " + r.status);
  }
  return r.json();
}

function samples(stats, name) {
  const m = stats && stats.metrics[name];
  return m ? m.samples : [];
}

function seriesKey(name, labels) {
  const parts = Object.keys(labels).sort().map((k) => k + "=" + labels[k]);
  return name + "{" + parts.join(",") + "}";
}

// Per-second rate of each sample of counter `name` since the previous poll.
function rates(stats, name) {
  const out = [];
  const prev = state.prev;
  const dt = prev ? stats.time - prev.time : 0;
  const before = new Map();
  if (prev) {
    for (const s of samples(prev, name)) {
      before.set(seriesKey(name, s.labels), s.value);
    }
  }
  for (const s of samples(stats, name)) {
    const old = before.get(seriesKey(name, s.labels));
    let rate = null;
    if (dt > 0 && old !== undefined && s.value >= old) {
      rate = (s.value - old) / dt;
    }
    out.push({ labels: s.labels, value: s.value, rate: rate });
  }
  return out;
}

function sum(list, f) {
  let total = 0;
  for (const x of list) {
    total += f(x) || 0;
  }
  return total;
}

function fmtRate(r) {
  if (r === null || r === undefined) {
    return "–";
  }
  if (r >= 100) {
    return r.toFixed(0);
  }
  return r.toFixed(r >= 10 ? 1 : 2);
}

function fmtBytes(n) {
  if (n === null || n === undefined) {
    return "–";
  }
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function fmtPct(x) {
  return x === null || x === undefined ? "–" : (x * 100).toFixed(1) + " %";
}

function setText(id, text) {
  const e = byId(id);
  if (e.textContent !== text) {
    e.textContent = text;
  }
}

// A cell: a string, or {text, cls, num}.
function fillCell(td, cell) {
  const c = typeof cell === "object" && cell !== null ? cell : { text: cell };
  const text = c.text === null || c.text === undefined ? "–" : String(c.text);
  if (td.textContent !== text) {
    td.textContent = text;
  }
  const cls = [c.num ? "num" : "", c.cls || ""].join(" ").trim();
  if (td.className !== cls) {
    td.className = cls;
  }
  if (c.title !== undefined && td.title !== c.title) {
    td.title = c.title;
  }
}

// Updates table `id` to `rows` ([{key, data: {attr: value}, cells: [...],
// buttons: [{label, action}]}]) in place, in the given order.
function render(id, rows) {
  const tbody = byId(id).tBodies[0];
  let known = state.rows.get(id);
  if (!known) {
    known = new Map();
    state.rows.set(id, known);
  }
  const seen = new Set();
  for (const row of rows) {
    seen.add(row.key);
    let tr = known.get(row.key);
    if (!tr) {
      tr = document.createElement("tr");
      for (const [k, v] of Object.entries(row.data || {})) {
        tr.dataset[k] = v;
      }
      for (let i = 0; i < row.cells.length; i++) {
        tr.appendChild(document.createElement("td"));
      }
      if (row.buttons) {
        const td = document.createElement("td");
        for (const b of row.buttons) {
          const button = document.createElement("button");
          button.type = "button";
          button.textContent = b.label;
          button.dataset.action = b.label;
          button.addEventListener("click", b.action);
          td.appendChild(button);
          td.appendChild(document.createTextNode(" "));
        }
        tr.appendChild(td);
      }
      known.set(row.key, tr);
    }
    row.cells.forEach((cell, i) => fillCell(tr.cells[i], cell));
    tbody.appendChild(tr); // moves it into order; a no-op when it is there
  }
  for (const [key, tr] of known) {
    if (!seen.has(key)) {
      tr.remove();
      known.delete(key);
    }
  }
}

function spark(id, values) {
  const svg = byId(id);
  const shown = values.filter((v) => v !== null);
  let line = svg.firstChild;
  if (!line) {
    line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    svg.appendChild(line);
  }
  if (shown.length < 2) {
    line.setAttribute("points", "");
    return;
  }
  const max = Math.max(...shown, 1e-9);
  const step = 120 / (SPARK_POINTS - 1);
  const offset = SPARK_POINTS - values.length;
  const points = [];
  values.forEach((v, i) => {
    if (v !== null) {
      points.push(((offset + i) * step).toFixed(1) + "," + (23 - (v / max) * 22).toFixed(1));
    }
  });
  line.setAttribute("points", points.join(" "));
}

function push(series, v) {
  series.push(v);
  if (series.length > SPARK_POINTS) {
    series.shift();
  }
}

function notice(text, ok) {
  const n = byId("notice");
  n.textContent = text;
  n.className = ok ? "done" : "error";
}

// A mutating call with the token; the answer goes to the notice line.
async function act(method, path, body) {
  const headers = {};
  if (token()) {
    headers["Authorization"] = "Bearer " + token();
  }
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
  }
  try {
    const r = await fetch(path, {
      method: method,
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = (await r.text()).trim();
    if (r.ok) {
      notice(method + " " + path + ": done", true);
    } else {
      notice(method + " " + path + " refused (" + r.status + "): " + text, false);
    }
  } catch (e) {
    notice(method + " " + path + " failed: " + e.message, false);
  }
  poll();
}

function path(...parts) {
  return "/" + parts.map(encodeURIComponent).join("/");
}

// --- sections --------------------------------------------------------------

function overview(stats) {
  const reqs = rates(stats, "edge_http_requests_total");
  const known = reqs.some((r) => r.rate !== null);
  const rps = known ? sum(reqs, (r) => r.rate) : null;
  setText("rps", fmtRate(rps));
  push(state.rpsSeries, rps);
  spark("rps-spark", state.rpsSeries);
  const errs = reqs.filter((r) => r.labels.class === "5xx");
  setText("errs", known ? fmtRate(sum(errs, (r) => r.rate)) : "–");
  const bytes = rates(stats, "edge_http_response_body_bytes_total");
  setText("bps", known ? fmtBytes(sum(bytes, (r) => r.rate)) : "–");
  setText("conns", String(sum(samples(stats, "edge_connections_open"), (s) => s.value)));
  const dns = rates(stats, "edge_dns_queries_total");
  setText("qps", dns.some((r) => r.rate !== null) ? fmtRate(sum(dns, (r) => r.rate)) : "–");

  const info = samples(stats, "edge_build_info")[0];
  const gen = samples(stats, "edge_config_generation")[0];
  const start = samples(stats, "process_start_time_seconds")[0];
  const parts = [];
  if (info) {
    parts.push("version " + (info.labels.version || "?"));
  }
  if (gen) {
    parts.push("config generation " + gen.value);
  }
  if (start && start.value > 0) {
    parts.push("up " + duration(stats.time - start.value));
  }
  setText("node", parts.join(" · "));
}

function duration(s) {
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) {
    return d + "d " + h + "h";
  }
  if (h > 0) {
    return h + "h " + m + "m";
  }
  return m + "m " + (s % 60) + "s";
}

function listeners(stats) {
  const open = new Map(samples(stats, "edge_connections_open").map((s) => [s.labels.listener, s.value]));
  const rows = rates(stats, "edge_connections_total").map((r) => ({
    key: r.labels.listener,
    data: { listener: r.labels.listener },
    cells: [
      r.labels.listener,
      { text: open.get(r.labels.listener) || 0, num: true },
      { text: fmtRate(r.rate), num: true },
      { text: r.value, num: true },
    ],
  }));
  rows.sort((a, b) => a.key.localeCompare(b.key));
  render("listeners", rows);
}

function routes(stats) {
  const by = new Map();
  for (const r of rates(stats, "edge_http_requests_total")) {
    const key = r.labels.route + "\u0000" + r.labels.pool;
    let e = by.get(key);
    if (!e) {
      e = { route: r.labels.route, pool: r.labels.pool, total: null, classes: {} };
      by.set(key, e);
    }
    if (r.rate !== null) {
      e.total = (e.total || 0) + r.rate;
      e.classes[r.labels.class] = (e.classes[r.labels.class] || 0) + r.rate;
    }
  }
  const bytes = new Map(rates(stats, "edge_http_response_body_bytes_total").map((r) => [r.labels.route, r.rate]));
  const rows = [];
  for (const [key, e] of by) {
    const cls = (c) => ({ text: e.total === null ? "–" : fmtRate(e.classes[c] || 0), num: true, cls: c === "5xx" && e.classes[c] > 0 ? "bad" : "" });
    rows.push({
      key: key,
      data: { route: e.route },
      cells: [e.route, e.pool, { text: fmtRate(e.total), num: true }, cls("2xx"), cls("3xx"), cls("4xx"), cls("5xx"),
        { text: bytes.get(e.route) === null || bytes.get(e.route) === undefined ? "–" : fmtBytes(bytes.get(e.route)), num: true }],
    });
  }
  rows.sort((a, b) => a.key.localeCompare(b.key));
  render("routes", rows);
}

function pools(list) {
  const rows = [];
  for (const pool of list) {
    for (const b of pool.backends) {
      const health = !pool.health_checked ? { text: "not checked", cls: "muted" }
        : b.healthy ? { text: "up", cls: "ok" }
        : { text: "down", cls: "bad", title: b.health_error || "" };
      const breaker = b.breaker === "closed" ? { text: "closed", cls: "muted" } : { text: b.breaker, cls: "bad" };
      const weight = b.effective_weight === b.weight ? String(b.weight) : b.effective_weight + " of " + b.weight;
      rows.push({
        key: pool.name + "\u0000" + b.address,
        data: { pool: pool.name, backend: b.address },
        cells: [
          pool.name,
          { text: b.address, title: b.resolved },
          health,
          { text: b.admin, cls: b.admin === "enabled" ? "ok" : "warn" },
          { text: b.usable ? "yes" : "no", cls: b.usable ? "ok" : "bad" },
          breaker,
          { text: b.ejected ? "for " + Math.ceil((b.ejected_for_ms || 0) / 1000) + " s" : "no", cls: b.ejected ? "bad" : "muted" },
          { text: b.in_flight, num: true },
          { text: b.ewma_ms === null ? "–" : b.ewma_ms.toFixed(2), num: true },
          { text: weight, num: true },
          { text: b.requests, num: true },
          { text: b.failures, num: true, cls: b.failures > 0 ? "warn" : "" },
        ],
        buttons: ["drain", "disable", "enable"].map((a) => ({
          label: a,
          action: () => act("POST", path("pools", pool.name, "backends", b.address, a)),
        })).concat([{
          // A backend named by host name is removed by its name (all its
          // addresses); the API wants it in maintenance first.
          label: "remove",
          action: () => act("DELETE", path("pools", pool.name, "backends", b.address.split("@")[0])),
        }]),
      });
    }
  }
  render("pools", rows);
}

function cache(stats) {
  const objects = samples(stats, "edge_cache_objects");
  const bytes = new Map(samples(stats, "edge_cache_bytes").map((s) => [s.labels.tier, s.value]));
  const cap = new Map(samples(stats, "edge_cache_capacity_bytes").map((s) => [s.labels.tier, s.value]));
  const reqs = rates(stats, "edge_cache_requests_total");
  const hitsBy = new Map();
  for (const r of reqs) {
    if (r.labels.status === "hit" && r.rate !== null) {
      hitsBy.set(r.labels.tier, (hitsBy.get(r.labels.tier) || 0) + r.rate);
    }
  }
  render("cache", objects.map((s) => {
    const tier = s.labels.tier;
    const c = cap.get(tier);
    return {
      key: tier,
      data: { tier: tier },
      cells: [tier, { text: s.value, num: true }, { text: fmtBytes(bytes.get(tier)), num: true },
        { text: fmtBytes(c), num: true }, { text: c ? fmtPct((bytes.get(tier) || 0) / c) : "–", num: true },
        { text: state.prev ? fmtRate(hitsBy.get(tier) || 0) : "–", num: true }],
    };
  }));
  const byStatus = new Map();
  for (const r of reqs) {
    if (r.rate !== null) {
      byStatus.set(r.labels.status, (byStatus.get(r.labels.status) || 0) + r.rate);
    }
  }
  render("cache-status", [...byStatus.keys()].sort().map((st) => ({
    key: st, data: { status: st }, cells: [st, { text: fmtRate(byStatus.get(st)), num: true }],
  })));

  // Hit ratio over the window: hits (fresh or stale) of lookups that could hit.
  const hits = sum(reqs, (r) => (r.labels.status === "hit" || r.labels.status === "stale" ? r.value : 0));
  const lookups = sum(reqs, (r) => (r.labels.status === "bypass" ? 0 : r.value));
  state.ratio.push({ time: stats.time, hits: hits, lookups: lookups });
  while (state.ratio.length > 1 && stats.time - state.ratio[0].time > RATIO_WINDOW_S) {
    state.ratio.shift();
  }
  const first = state.ratio[0];
  const dl = lookups - first.lookups;
  const ratio = dl > 0 ? (hits - first.hits) / dl : null;
  setText("hit-ratio", fmtPct(ratio));
  push(state.hitSeries, ratio);
  spark("hit-spark", state.hitSeries);
}

function sites(list, stats) {
  const answers = new Map(rates(stats, "edge_dns_geo_answers_total").map((r) => [r.labels.site, r.rate]));
  render("sites", list.map((s) => ({
    key: s.name,
    data: { site: s.name },
    cells: [
      s.name,
      { text: s.up ? "up" : "down", cls: s.up ? "ok" : "bad" },
      { text: s.healthy ? "yes" : "no", cls: s.healthy ? "ok" : "bad" },
      { text: s.drained ? "yes" : "no", cls: s.drained ? "warn" : "muted" },
      { text: s.utilization === null || s.utilization === undefined ? "–" : fmtPct(s.utilization), num: true },
      { text: Array.isArray(s.nodes) ? s.nodes.length : "–", num: true },
      { text: fmtRate(answers.has(s.name) ? answers.get(s.name) : null), num: true },
    ],
    buttons: ["drain", "undrain"].map((a) => ({ label: a, action: () => act("POST", path("dns", "sites", s.name, a)) })),
  })));
}

function limits(stats) {
  const by = new Map();
  for (const r of rates(stats, "edge_ratelimit_decisions_total")) {
    let e = by.get(r.labels.limit);
    if (!e) {
      e = {};
      by.set(r.labels.limit, e);
    }
    e[r.labels.result] = r.rate;
  }
  const cell = (v) => ({ text: fmtRate(v === undefined ? (state.prev ? 0 : null) : v), num: true });
  render("limits", [...by.keys()].sort().map((name) => {
    const e = by.get(name);
    return { key: name, data: { limit: name }, cells: [name, cell(e.allowed), cell(e.limited), cell(e.would_limit), cell(e.exempt)] };
  }));
}

function reloads(stats) {
  const parts = samples(stats, "edge_config_reloads_total").map((s) => s.labels.result + ": " + s.value);
  const last = samples(stats, "edge_config_last_reload_success_timestamp_seconds")[0];
  if (last && last.value > 0) {
    parts.push("last applied " + new Date(last.value * 1000).toLocaleString());
  }
  setText("reloads", parts.length ? "config applications — " + parts.join(", ") : "");
}

function events(list) {
  for (const e of list) {
    state.events.push(e);
    state.lastEvent = Math.max(state.lastEvent, e.seq);
  }
  while (state.events.length > EVENTS_SHOWN) {
    state.events.shift();
  }
  const rows = state.events.slice().reverse().map((e) => ({
    key: String(e.seq),
    data: { seq: String(e.seq), level: e.level },
    cells: [
      new Date(e.time * 1000).toLocaleTimeString(),
      { text: e.level, cls: e.level === "ERROR" ? "bad" : e.level === "WARN" ? "warn" : "muted" },
      e.target,
      { text: e.message, cls: "wrap" },
      { text: e.fields, cls: "wrap muted" },
    ],
  }));
  render("events", rows);
}

// --- the loop --------------------------------------------------------------

let polling = false;

async function poll() {
  if (polling) {
    return;
  }
  polling = true;
  try {
    const [stats, poolList, siteList, eventList] = await Promise.all([
      getJSON("/stats"),
      getJSON("/pools"),
      getJSON("/dns/sites"),
      getJSON("/events?after=" + state.lastEvent),
    ]);
    overview(stats);
    listeners(stats);
    routes(stats);
    pools(poolList);
    cache(stats);
    sites(siteList, stats);
    limits(stats);
    reloads(stats);
    events(eventList);
    state.prev = stats;
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (e) {
    notice("cannot read the admin API: " + e.message, false);
  } finally {
    polling = false;
  }
}

function start() {
  const input = byId("token");
  input.value = sessionStorage.getItem("edge-admin-token") || "";
  input.addEventListener("change", () => sessionStorage.setItem("edge-admin-token", input.value.trim()));
  byId("forget").addEventListener("click", () => {
    sessionStorage.removeItem("edge-admin-token");
    input.value = "";
    notice("token forgotten", true);
  });
  byId("add-backend").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const pool = byId("add-pool").value.trim();
    const weight = Number(byId("add-weight").value || 1);
    act("POST", path("pools", pool, "backends"), { address: byId("add-address").value.trim(), weight: weight });
  });
  poll();
  setInterval(poll, POLL_MS);
}

start();
