// corelane's live page: draws what the reads under api/v1 answer and follows the live
// stream. Every string from the API reaches the page as text (textContent, attributes),
// never as markup: process names and reasons are other people's data.
"use strict";

(() => {
  const API = "api/v1/";
  const POLL_MS = 2000;            // the reads, while the stream is down (and the cores always)
  const CALM_POLL_MS = 10000;      // the event lists, while the stream tells of changes
  const STREAM_RETRY_MS = 5000;    // a stream the browser gave up on is opened again
  const STALE_MS = 10000;          // no new host sample for this long: the data is not live
  const EVENT_DEBOUNCE_MS = 300;   // a burst of events costs one refresh
  const MAX_PROCESS_PAGES = 20;    // /processes pages of 1000 read per refresh
  const LIST_LIMIT = 50;
  const STREAM_TYPES = "classifications,decisions,enforcements,alert";

  const $ = (id) => document.getElementById(id);

  // --- small tools -------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : String(child ?? ""));
    }
    return node;
  }

  function show(emptyId, message) {
    const note = $(emptyId);
    note.hidden = !message;
    note.textContent = message || "";
  }

  function clock(iso) {
    if (!iso) return "";
    const t = new Date(iso);
    return isNaN(t) ? String(iso) : t.toLocaleTimeString([], { hour12: false });
  }

  function count(n, what) {
    return `${n} ${what}${n === 1 ? "" : "s"}`;
  }

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  // A tier group's memory and pressure (tier limits), where the host reports them.
  function groupUse(pool) {
    const parts = [];
    if (pool.memory_bytes !== null && pool.memory_bytes !== undefined) {
      parts.push(`memory ${bytes(pool.memory_bytes)}`);
    }
    for (const [figure, value] of Object.entries(pool.pressure || {})) {
      if (figure.endsWith("_some")) parts.push(`${figure.replace("_some", "")} pressure ${value.toFixed(1)} %`);
    }
    return parts.map((p) => " · " + p).join("");
  }

  function percent(share) {
    return share === null || share === undefined ? "" : `${(share * 100).toFixed(1)} %`;
  }

  // "0-3,8" -> [0, 1, 2, 3, 8]
  function cpulist(text) {
    const out = [];
    for (const part of String(text || "").split(",")) {
      const [lo, hi] = part.trim().split("-").map((n) => parseInt(n, 10));
      if (isNaN(lo)) continue;
      for (let c = lo; c <= (isNaN(hi) ? lo : hi); c++) out.push(c);
    }
    return out;
  }

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function read(path) {
    let response;
    try {
      response = await fetch(API + path, { cache: "no-store",
                                           headers: { Accept: "application/json" } });
    } catch (err) {
      throw new ApiError(0, "the API does not answer");
    }
    if (!response.ok) {
      let message = `${path}: HTTP ${response.status}`;
      try { message = (await response.json()).message || message; } catch (err) { /* not JSON */ }
      throw new ApiError(response.status, message);
    }
    return response.json();
  }

  // --- what the page knows -----------------------------------------------------------

  const known = {
    topology: null, cores: null, tiers: null, processes: null, health: null,
    sampledAt: null, sampleSeenAt: 0, lastAnswer: 0, failures: {},
    streamOpen: false,
  };

  // --- the header ----------------------------------------------------------------------

  function drawHeader() {
    const tiers = known.tiers;
    $("host").textContent = (tiers && tiers.host) || (known.health && known.health.host) || "…";
    $("mode").textContent = (tiers && tiers.mode) || "not planned yet";
    $("strategy").textContent = (tiers && tiers.strategy) || "not planned yet";
    $("plan").textContent = tiers && tiers.plan_seq !== null && tiers.plan_seq !== undefined
      ? `#${tiers.plan_seq} at ${clock(tiers.planned_at)}` : "none yet";
    const health = $("health");
    health.replaceChildren();
    if (known.health) {
      const h = known.health;
      const troubled = Object.entries(h.parts || {}).filter(([, p]) => p.state !== "ok");
      health.append(el("span", { class: `state-${h.status}` }, h.status));
      if (troubled.length) {
        health.append(" (" + troubled.map(([name, p]) =>
          `${name} ${p.state}${p.reason ? ": " + p.reason : ""}`).join("; ") + ")");
      }
    } else {
      health.textContent = "…";
    }
    drawLiveness();
  }

  function drawLiveness() {
    const badge = $("liveness");
    const now = Date.now();
    const failure = [...new Set(Object.values(known.failures))].join("; ");
    let state, text;
    if (failure && now - known.lastAnswer > STALE_MS) {
      state = "offline";
      text = `offline: ${failure}`;
    } else if (!known.sampledAt) {
      state = "waiting";
      text = "waiting for data";
    } else if (now - known.sampleSeenAt > STALE_MS) {
      state = "stale";
      text = `stale: no new sample for ${Math.round((now - known.sampleSeenAt) / 1000)} s`;
    } else {
      state = "live";
      text = known.streamOpen ? "live" : "live (polling: the stream is down)";
    }
    badge.dataset.state = state;
    badge.dataset.stream = known.streamOpen ? "open" : "down";
    badge.textContent = text;
    const problem = $("problem");
    problem.hidden = !failure;
    problem.textContent = failure;
  }

  // --- the heatmap ---------------------------------------------------------------------

  const COLOURS = [[0, [16, 38, 61]], [30, [31, 111, 139]], [60, [224, 181, 52]],
                   [85, [232, 97, 44]], [100, [200, 29, 37]]];

  function colour(busy) {
    const p = Math.max(0, Math.min(100, busy));
    for (let i = 1; i < COLOURS.length; i++) {
      const [hi, b] = COLOURS[i];
      const [lo, a] = COLOURS[i - 1];
      if (p <= hi) {
        const f = (p - lo) / (hi - lo);
        const mix = a.map((v, k) => Math.round(v + (b[k] - v) * f));
        return `rgb(${mix[0]}, ${mix[1]}, ${mix[2]})`;
      }
    }
    return "rgb(200, 29, 37)";
  }

  // Which tiers' pools hold each CPU in the newest plan.
  function poolsByCpu() {
    const pools = new Map();
    for (const tier of (known.tiers && known.tiers.tiers) || []) {
      for (const cpu of cpulist(tier.cpus)) {
        if (!pools.has(cpu)) pools.set(cpu, []);
        pools.get(cpu).push(tier.tier);
      }
    }
    return pools;
  }

  function cpuRows() {
    const cpus = new Map();   // cpu -> its topology entry (or null)
    for (const c of (known.topology && known.topology.cpus) || []) cpus.set(c.cpu, c);
    if (!cpus.size && known.cores) {
      for (const c of known.cores.live) cpus.set(c.cpu, null);
      for (const p of known.cores.series) if (!cpus.has(p.cpu)) cpus.set(p.cpu, null);
    }
    return [...cpus.entries()].sort((a, b) => a[0] - b[0]);
  }

  // The window's columns: one per step (the history's buckets, gaps left blank) and a
  // last one for the newest sample.
  function columns(stepS, windowMin) {
    const cores = known.cores;
    const buckets = Math.max(1, Math.round(windowMin * 60 / stepS));
    const stepMs = stepS * 1000;
    let newest = cores.sampled_at ? Math.floor(Date.parse(cores.sampled_at) / stepMs) * stepMs : 0;
    for (const p of cores.series) newest = Math.max(newest, Date.parse(p.ts));
    const start = newest - (buckets - 1) * stepMs;
    const cells = Array.from({ length: buckets + 1 }, () => new Map());
    const times = Array.from({ length: buckets }, (_, i) => start + i * stepMs);
    times.push(cores.sampled_at ? Date.parse(cores.sampled_at) : null);
    for (const p of cores.series) {
      const i = Math.round((Date.parse(p.ts) - start) / stepMs);
      if (i >= 0 && i < buckets) cells[i].set(p.cpu, p);
    }
    for (const c of cores.live) {
      cells[buckets].set(c.cpu, { percent_avg: c.percent, percent_max: c.percent, live: true });
    }
    return { cells, times };
  }

  const heat = { rows: [], cells: [], times: [], rowPx: 18 };

  function drawHeatmap() {
    const canvas = $("heatmap");
    const labels = $("core-labels");
    const rows = known.cores ? cpuRows() : [];
    const { stepS, windowMin } = chosenWindow();
    const { cells, times } = rows.length ? columns(stepS, windowMin) : { cells: [], times: [] };
    const drawn = cells.filter((column) => column.size > 0).length;
    heat.rows = rows; heat.cells = cells; heat.times = times;
    // Few CPUs get tall rows; many get thin ones, so a big host still fits on a screen.
    heat.rowPx = rows.length <= 8 ? 28 : rows.length <= 32 ? 16
      : Math.max(3, Math.floor(576 / rows.length));
    document.documentElement.style.setProperty("--row", `${heat.rowPx}px`);

    const pools = poolsByCpu();
    const labelEvery = Math.ceil(12 / heat.rowPx);
    labels.replaceChildren(...rows.map(([cpu, info], index) => {
      const kind = info && info.core_type ? info.core_type : "";
      const held = pools.get(cpu) || [];
      const item = el("li", { "data-cpu": cpu, "data-pools": held.join(" "),
                              title: `cpu ${cpu}${kind ? " · " + kind : ""}` +
                                     (held.length ? " · " + held.join(", ") : "") });
      if (index % labelEvery === 0) {
        item.append(`cpu ${cpu} `);
        if (kind) item.append(el("span", { class: "type" }, kind), " ");
        if (held.length) {
          item.append(el("span", { class: "pools" },
                         held.slice(0, 2).join(", ") + (held.length > 2 ? ` +${held.length - 2}` : "")));
        }
      }
      return item;
    }));

    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(100, canvas.clientWidth || canvas.parentElement.clientWidth - 200);
    const height = rows.length * heat.rowPx;
    canvas.style.height = `${height}px`;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.fillStyle = "#0b1015";
    g.fillRect(0, 0, width, height);
    const colPx = cells.length ? width / cells.length : width;
    cells.forEach((column, x) => {
      rows.forEach(([cpu], y) => {
        const point = column.get(cpu);
        if (!point) return;
        g.fillStyle = colour(point.percent_avg);
        g.fillRect(x * colPx, y * heat.rowPx, Math.ceil(colPx), heat.rowPx - (heat.rowPx > 6 ? 1 : 0));
      });
    });
    if (cells.length) {   // the newest sample stands apart from the averaged steps
      g.fillStyle = "#0b1015";
      g.fillRect((cells.length - 1) * colPx, 0, 2, height);
    }
    canvas.dataset.cores = String(rows.length);
    canvas.dataset.columns = String(drawn);
    canvas.dataset.step = String(stepS);

    const axis = $("heatmap-axis");
    axis.replaceChildren();
    if (drawn) {
      axis.append(el("span", {}, clock(new Date(times[0]).toISOString())),
                  el("span", {}, `one column per ${stepS} s; the last is the newest sample`),
                  el("span", {}, "now"));
    }
    show("heatmap-empty", rows.length && drawn ? "" : "waiting for data: no host sample yet");
  }

  function chosenWindow() {
    const windowMin = parseInt($("window").value, 10) || 5;
    return { windowMin, stepS: Math.max(1, windowMin) };   // 5 min: 5 s steps, 1 h: 60 s
  }

  function explainCell(event) {
    const canvas = $("heatmap");
    const tip = $("heatmap-tip");
    if (!heat.rows.length || !heat.cells.length) return;
    const box = canvas.getBoundingClientRect();
    const x = Math.floor((event.clientX - box.left) / (box.width / heat.cells.length));
    const y = Math.floor((event.clientY - box.top) / heat.rowPx);
    const row = heat.rows[y];
    const point = row && heat.cells[x] ? heat.cells[x].get(row[0]) : null;
    if (!point) { tip.textContent = ""; return; }
    const when = heat.times[x] ? clock(new Date(heat.times[x]).toISOString()) : "";
    tip.textContent = point.live
      ? `cpu ${row[0]} now (${when}): ${point.percent_avg.toFixed(1)} % busy`
      : `cpu ${row[0]} from ${when}: ${point.percent_avg.toFixed(1)} % busy on average, ` +
        `${point.percent_max.toFixed(1)} % at most`;
  }

  // --- tiers and members ---------------------------------------------------------------

  function drawTiers() {
    const list = $("tier-list");
    const tiers = (known.tiers && known.tiers.tiers) || [];
    const processes = known.processes || [];
    const byTier = new Map(tiers.map((t) => [t.tier, []]));
    for (const p of processes) {
      const tier = p.tier || "unplaced";
      if (!byTier.has(tier)) byTier.set(tier, []);
      byTier.get(tier).push(p);
    }
    const pools = new Map(tiers.map((t) => [t.tier, t]));
    list.replaceChildren(...[...byTier.entries()].map(([tier, members]) => {
      const pool = pools.get(tier);
      members.sort((a, b) => (b.cpu_share - a.cpu_share) || (a.pid - b.pid));
      const meta = pool
        ? `cpus ${pool.cpus || "none"} · ${count(pool.cores, "core")} · ` +
          `${count(pool.members, "member")} · ` +
          `demand ${pool.demand_cores.toFixed(2)} cores · delay ${pool.run_delay_ms_s.toFixed(1)} ms/s` +
          groupUse(pool)
        : "classified into this tier; no pool in the newest plan yet";
      return el("section", { class: "tier", "data-tier": tier, "data-members": members.length },
        el("h3", {}, tier),
        el("p", { class: "meta" }, meta),
        el("ul", { class: "members" }, ...members.map((p) => el("li", {
            class: "member", "data-pid": p.pid, "data-start-time": p.start_time,
            title: [p.cmdline, p.class ? `${p.class} (${p.source || "?"}): ${p.reason}` : "not classified yet",
                    p.cpus ? `cores ${p.cpus}` : ""].filter(Boolean).join("\n") },
          el("span", { class: "pid mono" }, p.pid),
          el("span", { class: "name" }, p.name),
          el("span", { class: "class" }, p.class || "unclassified"),
          el("span", { class: "cpu" }, percent(p.cpu_share))))));
    }));
    show("tiers-empty", byTier.size ? "" : "waiting for data: no plan yet");
  }

  // --- decisions, enforcements, alerts -------------------------------------------------

  function processName(pid) {
    const p = (known.processes || []).find((q) => q.pid === pid);
    return p ? p.name : "";
  }

  function target(row) {
    if (row.target === "process" && row.pid !== null && row.pid !== undefined) {
      const name = processName(row.pid);
      return `${row.pid}${name ? " " + name : ""}`;
    }
    return `${row.target} ${(row.container_id || "").slice(0, 12)}`;
  }

  function reasonCell(text, extra) {
    return el("td", { class: extra ? `reason ${extra}` : "reason" },
              el("div", { class: "clamp", title: text }, text));
  }

  function drawDecisions(page) {
    const rows = page.items.map((d) => el("tr", {
        "data-pid": d.pid, "data-tier": d.tier, "data-plan": d.plan_seq },
      el("td", { class: "when" }, clock(d.ts)), el("td", {}, target(d)), el("td", {}, d.tier),
      el("td", { class: "mono" }, d.cpus), el("td", {}, d.nice ?? ""), el("td", {}, d.policy || ""),
      reasonCell(d.reason)));
    $("decision-rows").replaceChildren(...rows);
    show("decisions-empty", rows.length ? "" : "waiting for data: no decision recorded yet");
  }

  function change(before, after) {
    before = before || {}; after = after || {};
    const keys = [...new Set([...Object.keys(before || {}), ...Object.keys(after || {})])];
    return keys.filter((k) => JSON.stringify(before[k]) !== JSON.stringify(after[k]))
      .map((k) => `${k} ${JSON.stringify(before[k] ?? null)}→${JSON.stringify(after[k] ?? null)}`)
      .join(", ");
  }

  function drawEnforcements(page) {
    const rows = page.items.map((e) => el("tr", {
        "data-pid": e.pid, "data-outcome": e.outcome, "data-plan": e.plan_seq },
      el("td", { class: "when" }, clock(e.ts)), el("td", {}, target(e)), el("td", {}, e.tier || ""),
      el("td", { class: `outcome-${e.outcome}` }, e.outcome), reasonCell(e.reason),
      reasonCell(change(e.before, e.after), "mono")));
    $("enforcement-rows").replaceChildren(...rows);
    show("enforcements-empty", rows.length ? "" : "waiting for data: nothing enforced yet");
  }

  function drawAlerts(listId, page, none) {
    const items = page.items.map((a) => el("li", {
        "data-alert-id": a.alert_id, "data-rule": a.rule, "data-state": a.state },
      el("span", { class: `severity-${a.severity}` }, a.severity), " ",
      el("strong", {}, a.rule), " ", a.message, " ",
      el("span", { class: "when" }, a.resolved_at
        ? `${clock(a.opened_at)}–${clock(a.resolved_at)}` : `since ${clock(a.opened_at)}`)));
    $(listId).replaceChildren(...items);
    show(listId + "-empty", items.length ? "" : none);
  }

  // --- reading: what each refresh reads and draws --------------------------------------

  async function allProcesses() {
    const out = [];
    let offset = 0;
    for (let page = 0; page < MAX_PROCESS_PAGES && offset !== null; page++) {
      const answer = await read(`processes?limit=1000&offset=${offset}`);
      out.push(...answer.items);
      offset = answer.next_offset ?? null;
    }
    return out;
  }

  // The window comes from the history; until it is open, the newest sample alone.
  async function readCores(windowMin, stepS) {
    try {
      return await read(`core-utilization?from=-${windowMin}m&step=${stepS}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 503) return read("core-utilization");
      throw err;
    }
  }

  const refreshes = {
    // the live view: the cores, the plan, health (cheap: no query but the window's)
    async live() {
      const { stepS, windowMin } = chosenWindow();
      const [cores, tiers, health] = await Promise.all([
        readCores(windowMin, stepS), read("tiers"), read("health")]);
      if (!known.topology || (tiers.host && known.topology.host !== tiers.host)) {
        known.topology = await read("topology");
      }
      if (cores.sampled_at && cores.sampled_at !== known.sampledAt) {
        known.sampledAt = cores.sampled_at;
        known.sampleSeenAt = Date.now();
      }
      known.cores = cores; known.tiers = tiers; known.health = health;
      drawHeader();
      drawHeatmap();
      drawTiers();
    },
    async members() {
      known.processes = await allProcesses();
      drawTiers();
    },
    async events() {
      const [decisions, enforcements, open, resolved] = await Promise.all([
        read(`decisions?limit=${LIST_LIMIT}`), read(`enforcements?limit=${LIST_LIMIT}`),
        read(`alerts?state=open&limit=${LIST_LIMIT}`), read("alerts?state=resolved&limit=10")]);
      drawDecisions(decisions);
      drawEnforcements(enforcements);
      drawAlerts("alerts-open", open, "no open alert");
      drawAlerts("alerts-resolved", resolved, "none resolved");
    },
  };

  // Each refresh runs on its own: one at a time, again after its interval, or sooner when
  // the stream says something changed.
  const loops = {};

  function interval(name) {
    return name === "live" || !known.streamOpen ? POLL_MS : CALM_POLL_MS;
  }

  async function run(name) {
    const loop = loops[name];
    clearTimeout(loop.timer);
    if (loop.running) { loop.again = true; return; }
    loop.running = true;
    try {
      await refreshes[name]();
      known.lastAnswer = Date.now();
      delete known.failures[name];
    } catch (err) {
      // The history answers 503 while corelane starts: that is waiting, not a fault.
      if (!(err instanceof ApiError && err.status === 503)) {
        known.failures[name] = err.message || String(err);
      }
    } finally {
      loop.running = false;
      drawLiveness();
      const soon = loop.again;
      loop.again = false;
      loop.timer = setTimeout(() => run(name), soon ? 0 : interval(name));
    }
  }

  function soon(name) {
    const loop = loops[name];
    clearTimeout(loop.timer);
    loop.timer = setTimeout(() => run(name), EVENT_DEBOUNCE_MS);
  }

  // --- the stream ----------------------------------------------------------------------

  function follow() {
    if (!window.EventSource) return;    // polling alone, as while the stream is down
    const source = new EventSource(API + "stream?types=" + STREAM_TYPES);
    source.onopen = () => { known.streamOpen = true; drawLiveness(); };
    source.onerror = () => {
      known.streamOpen = false;
      drawLiveness();
      if (source.readyState === EventSource.CLOSED) setTimeout(follow, STREAM_RETRY_MS);
    };
    const changed = (...names) => () => names.forEach(soon);
    source.addEventListener("decisions", changed("events", "members", "live"));
    source.addEventListener("classifications", changed("members"));
    source.addEventListener("enforcements", changed("events"));
    source.addEventListener("alert", changed("events"));
    source.addEventListener("dropped", changed("events", "members", "live"));
  }

  function start() {
    for (const name of Object.keys(refreshes)) {
      loops[name] = { timer: null, running: false, again: false };
      run(name);
    }
    follow();
    $("window").addEventListener("change", () => run("live"));
    $("heatmap").addEventListener("mousemove", explainCell);
    $("heatmap").addEventListener("mouseleave", () => { $("heatmap-tip").textContent = ""; });
    window.addEventListener("resize", drawHeatmap);
    setInterval(drawLiveness, 1000);
  }

  start();
})();
