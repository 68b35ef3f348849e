// microfetch's pages: relative times, live numbers from the JSON API, and the charts (uPlot).
// Loaded as a file with the page's CSP nonce; it builds DOM nodes, never HTML strings.
"use strict";
const microfetch = (() => {
  const UNITS = [["TB", 1e12], ["GB", 1e9], ["MB", 1e6], ["kB", 1e3]];
  function size(value) {
    if (!value) return "0 B";
    for (const [unit, scale] of UNITS) {
      if (Math.abs(value) >= scale) return `${trim((value / scale).toPrecision(3))} ${unit}`;
    }
    return `${Math.round(value)} B`;
  }
  // "1.50" → "1.5", "2.00" → "2", "100" stays "100" (only zeros after a decimal point go).
  const trim = text => text.includes(".") ? text.replace(/0+$/, "").replace(/\.$/, "") : text;
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "unknown";
    seconds = Math.floor(seconds);
    if (seconds < 60) return `${seconds} s`;
    const days = Math.floor(seconds / 86400), hours = Math.floor(seconds % 86400 / 3600);
    const minutes = Math.floor(seconds % 3600 / 60);
    if (days) return `${days} d ${hours} h`;
    return hours ? `${hours} h ${minutes} min` : `${minutes} min`;
  }
  function ago(iso) {
    const seconds = (Date.now() - Date.parse(iso)) / 1000;
    if (seconds < 0) return "in " + duration(-seconds);
    return seconds < 10 ? "just now" : duration(seconds) + " ago";
  }
  const money = value => value === null || value === undefined ? "–" : "$" + value.toFixed(2);
  const number = value => (value ?? 0).toLocaleString("en");
  const eta = s => s === null || s === undefined ? "unknown: nothing fetched in the last hour"
    : s === 0 ? "nothing left" : duration(s);
  const FORMATS = {size, duration, eta, money, number, text: v => v ?? ""};

  function timeElement(iso, never = "never") {
    if (!iso) return document.createTextNode(never);
    const time = document.createElement("time");
    time.dateTime = iso;
    time.title = iso.replace("T", " ").replace("Z", " UTC");
    time.textContent = ago(iso);
    return time;
  }
  function refreshTimes() {
    for (const time of document.querySelectorAll("time[datetime]")) time.textContent = ago(time.dateTime);
  }
  function get(object, path) {
    return path.split(".").reduce((value, key) => value == null ? value : value[key], object);
  }
  function cell(row, content, numeric = false) {
    const td = row.insertCell();
    if (numeric) td.className = "num";
    if (content instanceof Node) td.append(content); else td.textContent = content;
    return td;
  }
  // Behind a proxy the site may live under a prefix (X-Forwarded-Prefix): links keep it.
  const root = () => document.body.dataset.root || "";
  function link(href, text) {
    const a = document.createElement("a");
    a.href = root() + href;
    a.textContent = text;
    return a;
  }
  function fill(tbody, rows, columns, empty) {
    tbody.replaceChildren();
    if (!rows.length) {
      const row = tbody.insertRow();
      cell(row, empty).colSpan = columns;
      return null;
    }
    return rows.map(() => tbody.insertRow());
  }

  // The overview's numbers and tables, from /api/overview.
  function showOverview(o) {
    for (const node of document.querySelectorAll("[data-o]")) {
      node.textContent = FORMATS[node.dataset.format || "number"](get(o, node.dataset.o));
    }
    const meter = document.getElementById("spend-meter");
    if (meter) { meter.max = o.spend.cap || 1; meter.value = o.spend.today; }
    const workers = document.querySelector("#workers tbody");
    const wrows = fill(workers, o.workers, 8, "No live workers.");
    (wrows || []).forEach((row, i) => {
      const w = o.workers[i];
      cell(row, w.name);
      cell(row, link(`/taxa/${w.taxonomy_id}`, String(w.taxonomy_id)));
      cell(row, `${w.backend}, ${w.phase}`);
      cell(row, `${w.runs_done} of ${w.runs}`, true);
      cell(row, size(w.bytes), true);
      cell(row, timeElement(w.created_at));
      cell(row, money(w.cost_so_far), true);
      cell(row, w.last_error);
    });
    const etas = document.querySelector("#etas tbody");
    const erows = fill(etas, o.taxa_eta, 5, "Nothing left to fetch.");
    (erows || []).forEach((row, i) => {
      const t = o.taxa_eta[i];
      cell(row, link(`/taxa/${t.taxonomy_id}`, `${t.taxonomy_id} ${t.scientific_name}`));
      cell(row, number(t.runs_to_go), true);
      cell(row, size(t.bytes_to_go), true);
      cell(row, `${number(t.runs_last_hour)} runs, ${size(t.bytes_last_hour)}`, true);
      cell(row, t.eta_seconds === null ? "no progress in the last hour" : duration(t.eta_seconds));
    });
    const list = document.getElementById("attention-list");
    if (list) showAttention(list, o.attention);
  }
  const ACTIONS = {clear: "Release (clear needs_attention)", retry: "Retry failed runs"};
  function showAttention(list, items) {
    list.replaceChildren();
    document.getElementById("attention-none").hidden = items.length > 0;
    for (const item of items) {
      const li = document.createElement("li");
      li.append(item.reason + ". ");
      const fix = document.createElement("span");
      fix.append("Clears it: ");
      const code = document.createElement("code");
      code.textContent = item.command;
      fix.append(code);
      li.append(fix);
      if (item.action && item.taxonomy_id && list.dataset.csrf) {
        // Signed in: the same form the taxon page has (its CSRF token came with this page).
        const form = document.createElement("form");
        form.method = "post";
        form.className = "inline";
        form.action = `${root()}/taxa/${item.taxonomy_id}/action`;
        for (const [name, value] of [["csrf", list.dataset.csrf], ["action", item.action]]) {
          const input = document.createElement("input");
          input.type = "hidden"; input.name = name; input.value = value;
          form.append(input);
        }
        const button = document.createElement("button");
        button.type = "submit";
        button.textContent = `${ACTIONS[item.action]} of ${item.taxonomy_id}`;
        form.append(" ", button);
        li.append(form);
      }
      list.append(li);
    }
  }
  async function poll(url, show, seconds) {
    async function once() {
      try {
        const response = await fetch(url, {headers: {Accept: "application/json"}});
        if (response.ok) show(await response.json());
      } catch (e) { /* the daemon is restarting: try again next time */ }
      refreshTimes();
    }
    setInterval(once, seconds * 1000);
  }

  // Charts: cumulative runs and bytes, one distinguishable line per series.
  const PALETTE = ["#000000", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                   "#17becf", "#8c564b", "#e377c2", "#7f7f7f"];
  const DASHES = [[], [], [8, 4], [2, 3], [10, 3, 2, 3], [], [8, 4], [2, 3], [10, 3, 2, 3], []];
  // Time ticks at the resolution the span needs, so that no two read the same.
  const pad = n => String(n).padStart(2, "0");
  function tick(seconds, span) {
    const d = new Date(seconds * 1000);
    const hm = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
    if (span < 3600) return `${hm}:${pad(d.getUTCSeconds())}`;
    if (span < 2 * 86400) return hm;
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${hm}`;
  }
  const day = seconds => new Date(seconds * 1000).toISOString().slice(0, 10);
  function chart(container, data, kind, title) {
    const width = Math.min(960, Math.max(320, container.clientWidth || 760));
    const axis = kind === "runs" ? "runs fetched (cumulative)" : "data fetched (cumulative)";
    const first = data.t[0], last = data.t.at(-1), span = last - first;
    const days = day(first) === day(last) ? day(first) : `${day(first)} to ${day(last)}`;
    const opts = {
      title, width, height: 280,
      tzDate: ts => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
      scales: {x: {time: true}, y: {range: (u, min, max) => [0, Math.max(1, max * 1.05)]}},
      axes: [
        {label: `time (UTC), ${days}`, labelSize: 20, stroke: "#222", grid: {stroke: "#eee"},
         space: span < 2 * 86400 ? 70 : 130, values: (u, ticks) => ticks.map(v => tick(v, span))},
        {label: axis, labelSize: 20, size: 70, stroke: "#222", grid: {stroke: "#eee"},
         // Whole runs only: no "2.5 runs" tick.
         incrs: kind === "runs" ? [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4,
                                   5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7] : undefined,
         values: (u, ticks) => ticks.map(v => kind === "runs" ? number(v) : size(v))},
      ],
      series: [{label: "time (UTC)", value: "{YYYY}-{MM}-{DD} {HH}:{mm}"}].concat(
        data.series.map((s, i) => ({
          label: s.label, stroke: PALETTE[i % PALETTE.length], width: i === 0 ? 2.5 : 2,
          dash: DASHES[i % DASHES.length], points: {show: false},
          value: (u, v) => v === null ? "–" : (kind === "runs" ? number(v) : size(v)),
        }))),
      legend: {live: true},
    };
    return new uPlot(opts, [data.t, ...data.series.map(s => s[kind])], container);
  }
  async function charts(url, target) {
    const box = document.getElementById(target);
    try {
      const response = await fetch(url, {headers: {Accept: "application/json"}});
      if (!response.ok) { box.textContent = "The chart's data could not be loaded."; return; }
      const data = await response.json();
      if (!data.t.length) { box.textContent = "No runs fetched yet."; return; }
      box.replaceChildren();
      for (const [kind, title] of [["runs", "Runs fetched"], ["bytes", "Data fetched"]]) {
        const holder = document.createElement("div");
        holder.className = "chart";
        holder.setAttribute("role", "img");
        const last = data.series.map(s => `${s.label}: ${kind === "runs" ? number(s[kind].at(-1)) : size(s[kind].at(-1))}`);
        holder.setAttribute("aria-label", `${title} over time, so far ${last.join("; ")}`);
        box.append(holder);
        chart(holder, data, kind, title);
      }
    } catch (e) { box.textContent = "The chart's data could not be loaded."; }
  }
  return {poll, showOverview, charts, refreshTimes, size, duration};
})();
