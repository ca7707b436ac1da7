/* peersync dashboard: builds the page from the JSON document embedded in it (peersync/dashboard/data.py).
   Everything is built with DOM calls and textContent (never innerHTML), so file names and contents are
   shown, never interpreted.  Served mode (config.live) polls api/data and adds the action buttons. */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("peersync-config").textContent);
  var doc = JSON.parse(document.getElementById("peersync-data").textContent);
  var charts = [];
  var lastUpdate = Date.now();
  var armed = {}; // drop buttons waiting for their second click: id -> timer

  // -- small helpers ---------------------------------------------------------------------------
  function h(tag, attrs) {
    var el = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (key) {
        var value = attrs[key];
        if (value === null || value === undefined || value === false) return;
        if (key === "class") el.className = value;
        else if (key === "text") el.textContent = value;
        else if (key.slice(0, 2) === "on") el.addEventListener(key.slice(2), value);
        else el.setAttribute(key, value === true ? "" : value);
      });
    }
    for (var i = 2; i < arguments.length; i++) add(el, arguments[i]);
    return el;
  }
  function add(el, kid) {
    if (kid === null || kid === undefined || kid === false) return;
    if (Array.isArray(kid)) { kid.forEach(function (k) { add(el, k); }); return; }
    el.appendChild(typeof kid === "object" ? kid : document.createTextNode(String(kid)));
  }
  function plural(n, word, words) { return n + " " + (n === 1 ? word : (words || word + "s")); }
  function bytes(n) {
    if (n === null || n === undefined) return "—";
    var units = ["bytes", "kB", "MB", "GB", "TB"], v = n, i = 0;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return i === 0 ? v + " bytes" : v.toFixed(v < 10 ? 1 : 0) + " " + units[i];
  }
  function ms(t) { return t ? Date.parse(t) : NaN; }
  function span(seconds) {
    var s = Math.abs(seconds);
    if (s < 45) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 129600) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " d";
  }
  function ago(t) {
    var when = ms(t);
    if (isNaN(when)) return "never";
    var s = (Date.now() - when) / 1000;
    if (Math.abs(s) < 10) return "just now";
    return s > 0 ? span(s) + " ago" : "in " + span(s);
  }
  function stamp(t) {
    var d = new Date(ms(t));
    if (isNaN(d)) return "unknown";
    var p = function (n) { return (n < 10 ? "0" : "") + n; };
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " + p(d.getHours()) + ":" + p(d.getMinutes());
  }
  function due(t) { return ms(t) <= Date.now() + 10000 ? "due now" : "next " + ago(t); }
  function when(t) { return h("time", { datetime: t || "", title: stamp(t) }, ago(t)); }
  function pill(text, tone) { return h("span", { class: "pill " + (tone || "muted") }, text); }
  function dot(tone) { return h("span", { class: "dot " + tone, "aria-hidden": "true" }); }
  function notice(text, tone) {
    return text ? h("div", { class: "notice " + (tone || "warn"), role: "status" }, h("strong", null, tone === "bad" ? "Problem: " : "Note: "), text) : null;
  }
  function section(id, title, count, body, extra) {
    return h("section", { class: "card", id: id },
      h("div", { class: "card-head" }, h("h2", null, title), count !== null && count !== undefined ? h("span", { class: "count" }, String(count)) : null, extra || null),
      body);
  }
  function kv(rows) {
    return h("dl", { class: "kv" }, rows.filter(Boolean).map(function (r) {
      return h("div", { class: "kv-row" }, h("dt", null, r[0]), h("dd", null, r[1]));
    }));
  }
  function table(headers, rows, cls) {
    return h("div", { class: "table-wrap" }, h("table", { class: cls || "" },
      h("thead", null, h("tr", null, headers.map(function (x) { return Array.isArray(x) ? h("th", { class: x[1] }, x[0]) : h("th", null, x); }))),
      h("tbody", null, rows)));
  }
  function empty(text) { return h("p", { class: "empty" }, text); }

  // -- header and tiles ------------------------------------------------------------------------
  function header() {
    var badge = config.live
      ? h("span", { class: "badge live", id: "live-badge" }, dot("ok"), h("span", null, "Live · updated ", h("span", { id: "updated" }, "just now")))
      : h("span", { class: "badge" }, "Snapshot of ", stamp(doc.generated));
    return h("header", { class: "top" }, h("div", { class: "top-inner" },
      h("div", { class: "brand" },
        h("div", { class: "logo", "aria-hidden": "true" }, "⇄"),
        h("div", null, h("h1", null, "peersync ", h("span", { class: "host" }, doc.host || "")),
          h("div", { class: "sub" }, h("span", { class: "mono" }, doc.workspace || ""), " · peersync ", doc.peersync || "?"))),
      badge));
  }

  function tiles() {
    var peers = (doc.peers && doc.peers.items) || [];
    var up = peers.filter(function (p) { return p.seen && p.seen.reachable; }).length;
    var syncs = (doc.history && doc.history.entries) || [];
    var last = syncs[0];
    var conflicts = (doc.conflicts && doc.conflicts.items) || [];
    var b = doc.backups || {};
    var snaps = b.snapshots || [];
    var latest = snaps.length ? snaps[snaps.length - 1] : null;
    var auto = doc.auto || {};
    var tiles = [
      tile("Peers", peers.length ? up + "/" + peers.length : "none", peers.length ? "reachable when last seen" : "add one: peersync peers add",
        !peers.length ? "muted" : up === peers.length ? "ok" : up ? "warn" : "bad", "#peers"),
      tile("Last sync", last ? ago(last.time) : "never", last ? (last.ok ? "with " + last.peer + " · ok" : "with " + last.peer + " · failed") : "no sync yet",
        !last ? "muted" : last.ok ? "ok" : "bad", "#timeline"),
      tile("Conflicts", String(conflicts.length), conflicts.length ? "versions kept aside" : "nothing kept aside",
        conflicts.length ? "warn" : "ok", "#conflicts"),
      tile("Backups", latest ? ago(latest.time) : "none", backupLine(b), backupTone(b, latest), "#backups"),
      tile("Auto-sync", modeName(auto), autoLine(auto), auto.mode && auto.mode !== "off" ? "ok" : "muted", "#auto")
    ];
    return h("nav", { class: "tiles", "aria-label": "Summary" }, tiles);
  }
  function tile(label, value, line, tone, href) {
    return h("a", { class: "tile " + tone, href: href },
      h("div", { class: "tile-label" }, dot(tone), label),
      h("div", { class: "tile-value" }, value),
      h("div", { class: "tile-line" }, line));
  }
  function backupLine(b) {
    if (!b.available) return "not built in";
    if (b.last_run && b.last_run.ok === false) return "last run failed";
    var n = (b.snapshots || []).length;
    return n ? plural(n, "snapshot") + (b.next_due ? " · " + due(b.next_due) : "") : "run: peersync backup now";
  }
  function backupTone(b, latest) {
    if (!b.available || !latest) return b.last_run && b.last_run.ok === false ? "bad" : "muted";
    if (b.last_run && b.last_run.ok === false) return "bad";
    return b.due ? "warn" : "ok";
  }
  function modeName(auto) {
    return { watch: "watch", cron: "cron", heartbeat: "heartbeat", off: "off" }[auto.mode] || "unknown";
  }
  function autoLine(auto) {
    var hb = auto.heartbeat || {};
    if (auto.mode === "watch") return "daemon running (pid " + auto.watch.pid + ")";
    if (auto.mode === "heartbeat") return "every " + span(hb.interval) + (hb.next_due ? " · " + due(hb.next_due) : "");
    if (auto.mode === "cron") return "OpenClaw cron job";
    return auto.notice ? "state unreadable" : "turn on: peersync auto on";
  }

  // -- peers ----------------------------------------------------------------------------------
  function peersSection() {
    var p = doc.peers || {};
    var items = p.items || [];
    var body = [notice(p.notice, "bad")];
    if (!items.length && !p.notice) body.push(empty("No peers yet. Add one with: peersync peers add NAME HOST --user U --path P"));
    body.push(h("div", { class: "peer-grid" }, items.map(peerCard)));
    return section("peers", "Peers", items.length, body);
  }
  function peerCard(p) {
    var seen = p.seen;
    var tone = !seen ? "muted" : seen.reachable ? "ok" : "bad";
    var state = !seen ? "not seen yet" : (seen.reachable ? "reachable" : "unreachable");
    var where = p.kind === "cloud" ? p.host : (p.user ? p.user + "@" : "") + p.host + (p.path ? ":" + p.path : "");
    var ls = p.last_sync;
    var counts = ls ? syncCounts(ls) : null;
    return h("article", { class: "peer", "data-peer": p.name },
      h("div", { class: "peer-head" }, dot(tone), h("h3", null, p.name), pill(p.kind === "cloud" ? "cloud · " + (p.mode || "") : "SSH", "muted"),
        h("span", { class: "peer-state " + tone }, state)),
      h("div", { class: "mono small where", title: where }, where),
      kv([
        ["Last seen", seen ? [when(seen.time), h("span", { class: "muted" }, seen.source === "probe" ? " (checked)" : " (by a sync)")] : "never"],
        seen && seen.error ? ["Error", h("span", { class: "bad-text" }, seen.error)] : null,
        ["Round trip", seen && seen.rtt_ms !== null && seen.rtt_ms !== undefined ? seen.rtt_ms.toFixed(0) + " ms" : "—"],
        ["Clock offset", seen && typeof seen.clock_offset_s === "number" ? (seen.clock_offset_s >= 0 ? "+" : "") + seen.clock_offset_s.toFixed(2) + " s" : "—"],
        ["Version", seen && seen.version ? seen.version : "—"],
        ["Last sync", ls ? [when(ls.time), " ", pill(ls.ok ? "ok" : "failed", ls.ok ? "ok" : "bad")] : "never"],
        ls && !ls.ok && ls.error && !(seen && seen.error === ls.error) ? ["Why", h("span", { class: "bad-text" }, ls.error)] : null,
        counts ? ["Moved", counts] : null,
        ["Pending here", p.pending === null || p.pending === undefined ? "—" : p.pending === 0 ? "nothing" : plural(p.pending, "local change")],
        p.backoff ? ["Backing off", "failed " + p.backoff.failures + "×, next try " + ago(p.backoff.retry_at)] : null
      ]));
  }
  function syncCounts(e) {
    var parts = [["↑", e.pushed, "pushed"], ["↓", e.pulled, "pulled"], ["⇄", e.merged, "merged"], ["✕", e.deleted, "deleted"], ["!", e.conflicts, "conflicts"]]
      .filter(function (x) { return x[1]; })
      .map(function (x) { return h("span", { class: "mini", title: x[1] + " " + x[2] }, x[0] + " " + x[1]); });
    return parts.length ? parts : h("span", { class: "muted" }, "nothing to move");
  }

  // -- timeline -------------------------------------------------------------------------------
  var SERIES = [
    { key: "pushed", label: "pushed", color: "#2563eb" },
    { key: "pulled", label: "pulled", color: "#0d9488" },
    { key: "merged", label: "merged", color: "#7c3aed" },
    { key: "deleted", label: "deleted", color: "#64748b" },
    { key: "conflicts", label: "conflicts", color: "#d97706" }
  ];

  function timelineSection() {
    var hs = doc.history || {};
    var entries = hs.entries || [];
    var body = [notice(hs.notice, "bad")];
    if (!entries.length) {
      if (!hs.notice) body.push(empty("No syncs yet: the timeline starts with the first one."));
      return section("timeline", "Sync timeline", 0, body);
    }
    var failed = entries.filter(function (e) { return !e.ok; }).length;
    body.push(h("div", { class: "legend" }, SERIES.map(function (s) {
      return h("span", { class: "legend-item" }, h("i", { style: "background:" + s.color }), s.label);
    }), h("span", { class: "legend-item" }, h("i", { class: "fail" }), "failed sync")));
    body.push(h("div", { class: "chart", id: "sync-chart", role: "img", "aria-label": "Files moved per sync" }));
    var heads = ["When", "Peer", "Result", "Moved", ["Took", "num opt"]];
    body.push(table(heads, entries.slice(0, 12).map(historyRow), "history"));
    if (entries.length > 12) {
      body.push(h("details", { class: "more" }, h("summary", null, "All " + entries.length + " syncs"),
        table(heads, entries.slice(12).map(historyRow), "history")));
    }
    var title = hs.total > entries.length ? entries.length + " of " + hs.total : entries.length;
    return section("timeline", "Sync timeline", title, body,
      failed ? h("span", { class: "head-note bad-text" }, plural(failed, "failed sync")) : null);
  }
  function historyRow(e) {
    return h("tr", { class: e.ok ? "" : "failed-row" },
      h("td", null, when(e.time)),
      h("td", null, h("strong", null, e.peer), e.mode !== "sync" ? h("span", { class: "muted" }, " · " + e.mode) : null),
      h("td", null, e.ok ? pill("ok", "ok") : [pill("failed", "bad"), " ", h("span", { class: "bad-text small" }, e.error || "")]),
      h("td", null, syncCounts(e)),
      h("td", { class: "num opt" }, typeof e.seconds === "number" ? e.seconds.toFixed(1) + " s" : "—"));
  }

  function drawSyncChart() {
    var box = document.getElementById("sync-chart");
    var entries = ((doc.history || {}).entries || []).slice(0, 60).reverse();
    if (!box || !entries.length) return;
    var xs = entries.map(function (_, i) { return i; });
    var stacks = [], running = entries.map(function () { return 0; });
    SERIES.forEach(function (s) {
      running = running.map(function (v, i) { return v + (entries[i][s.key] || 0); });
      stacks.push(running.slice());
    });
    var top = Math.max(1, Math.max.apply(null, running));
    var fails = entries.map(function (e) { return e.ok ? null : Math.max(top * 0.08, 0.5); });
    // Stacked bars: each series is drawn from 0 to its running total, tallest first.
    var order = SERIES.map(function (s, i) { return i; }).reverse();
    var data = [xs].concat(order.map(function (i) { return stacks[i].map(function (v) { return v || null; }); }), [fails]);
    var bars = uPlot.paths.bars({ size: [0.7, 28], gap: 1 });
    var series = [{ label: "sync" }].concat(order.map(function (i) {
      var s = SERIES[i];
      return { label: s.label, fill: s.color, stroke: s.color, width: 0, paths: bars, points: { show: false },
        value: function (u, v, si, idx) { return idx === null ? "—" : entries[idx][s.key] || 0; } };
    }), [{ label: "failed", fill: "#dc2626", stroke: "#dc2626", width: 0, paths: bars, points: { show: false },
      value: function (u, v, si, idx) { return idx === null ? "—" : (entries[idx].ok ? "" : "failed"); } }]);
    var label = function (i) {
      var e = entries[i];
      if (!e) return "";
      var d = new Date(ms(e.time));
      var p = function (n) { return (n < 10 ? "0" : "") + n; };
      return (d.getMonth() + 1) + "/" + d.getDate() + " " + p(d.getHours()) + ":" + p(d.getMinutes());
    };
    var opts = {
      width: Math.max(240, box.clientWidth), height: box.clientWidth < 500 ? 170 : 210,
      legend: { show: false }, cursor: { points: { show: false }, drag: { x: false, y: false } },
      scales: { x: { time: false, range: [-0.6, entries.length - 0.4] }, y: { range: [0, top * 1.12] } },
      axes: [
        { stroke: "#64748b", grid: { show: false }, ticks: { show: false }, space: 70, incrs: [1, 2, 3, 5, 10, 20, 50],
          values: function (u, splits) { return splits.map(function (i) { return Number.isInteger(i) ? label(i) : ""; }); }, font: "11px system-ui, sans-serif" },
        { stroke: "#64748b", grid: { stroke: "rgba(100,116,139,0.15)" }, ticks: { show: false }, size: 40, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000],
          values: function (u, splits) { return splits.map(function (v) { return Number.isInteger(v) ? v : ""; }); }, font: "11px system-ui, sans-serif" }
      ],
      series: series
    };
    charts.push(new uPlot(opts, data, box));
  }

  // -- conflicts ------------------------------------------------------------------------------
  function conflictsSection() {
    var c = doc.conflicts || {};
    var items = c.items || [];
    var body = [notice(c.notice, "bad")];
    if (!items.length && !c.notice) body.push(empty("No conflicts: every version that lost one would be kept here."));
    body.push(items.map(conflictCard));
    return section("conflicts", "Conflicts kept aside", items.length, body);
  }
  function conflictCard(c) {
    var pills = [pill(c.reason, "warn")];
    if (c.peer) pills.push(pill("from " + c.peer, "muted"));
    if (typeof c.size === "number") pills.push(pill(bytes(c.size), "muted"));
    var diff;
    if (c.diff) {
      diff = h("div", { class: "diff-box" },
        h("div", { class: "diff-legend" }, h("span", { class: "del" }, "− only in the live file"), h("span", { class: "ins" }, "+ only in the kept version")),
        h("pre", { class: "diff", "aria-label": "diff of " + c.path }, c.diff.map(function (row) {
          var cls = { "+": "ins", "-": "del", "@": "hunk", "…": "hunk" }[row[0]] || "ctx";
          var mark = { "+": "+", "-": "−", "@": "", "…": "" }[row[0]];
          return h("span", { class: "line " + cls }, h("span", { class: "mark" }, mark === undefined ? " " : mark), row[1] + "\n");
        })));
    }
    var note = c.diff_note ? h("p", { class: "muted small" }, c.diff_note) : null;
    var live = c.live ? (c.live.exists ? "live file: " + bytes(c.live.size) : "no live file now") : null;
    var actions = config.live && c.actions ? h("div", { class: "actions" },
      h("button", { class: "btn primary", "data-action": "restore", "data-id": c.id, onclick: function () { act("conflicts/" + encodeURIComponent(c.id) + "/restore", this); } }, "Restore this version"),
      h("button", { class: "btn danger", "data-action": "drop", "data-id": c.id, onclick: function () { dropClick(c, this); } }, "Drop")) : null;
    return h("article", { class: "conflict", "data-id": c.id },
      h("div", { class: "conflict-head" }, h("h3", { class: "mono" }, c.path), h("span", { class: "muted small" }, c.id, " · kept ", when(c.time))),
      h("div", { class: "pills" }, pills, live ? h("span", { class: "muted small" }, live) : null),
      diff, note,
      h("div", { class: "commands" },
        h("div", { class: "cmd-label" }, "Restore or drop from a terminal:"),
        h("code", { class: "cmd" }, c.commands.restore), h("code", { class: "cmd" }, c.commands.drop)),
      actions);
  }
  function dropClick(c, button) {
    if (armed[c.id]) {
      clearTimeout(armed[c.id]);
      delete armed[c.id];
      act("conflicts/" + encodeURIComponent(c.id) + "/drop", button);
      return;
    }
    button.textContent = "Click again to drop for good";
    button.classList.add("armed");
    armed[c.id] = setTimeout(function () { delete armed[c.id]; button.textContent = "Drop"; button.classList.remove("armed"); }, 5000);
  }

  // -- trash and deletion records -------------------------------------------------------------
  function trashSection() {
    var t = doc.trash || {};
    var batches = t.batches || [];
    var r = doc.records || {};
    var records = r.items || [];
    var body = [];
    body.push(h("h3", { class: "sub-head" }, "Trash ", h("span", { class: "muted small" }, "(" + (t.dir || "trash") + ", kept " + (t.days || "?") + " days)")));
    if (!batches.length) body.push(empty("The trash is empty."));
    else body.push(table(["Deleted", "By", "Files", ["Size", "num"], "Kept until"], batches.map(function (b) {
      return h("tr", null,
        h("td", null, when(b.time)),
        h("td", null, b.sync ? ["sync with ", h("strong", null, b.sync.peer)] : h("span", { class: "muted" }, "a sync started by a peer")),
        h("td", null, h("details", null, h("summary", null, plural(b.files, "file")),
          h("ul", { class: "paths" }, b.paths.map(function (p) { return h("li", { class: "mono small" }, p); }),
            b.files > b.paths.length ? h("li", { class: "muted" }, "…and " + (b.files - b.paths.length) + " more") : null))),
        h("td", { class: "num" }, bytes(b.bytes)),
        h("td", null, b.kept_until ? stamp(b.kept_until).slice(0, 10) : "—"));
    }), "trash"));
    body.push(h("h3", { class: "sub-head" }, "Deletion records ", h("span", { class: "muted small" }, "(versions that stay deleted when a copy turns up)")));
    body.push(notice(r.notice, "bad"));
    if (!records.length && !r.notice) body.push(empty("No deletion records."));
    else if (records.length) body.push(table(["Path", "Deleted version", "Recorded", "Until"], records.slice(0, 50).map(function (x) {
      return h("tr", null, h("td", { class: "mono small" }, x.path), h("td", null, bytes(x.size) + ", modified " + stamp(x.mtime)),
        h("td", null, when(x.recorded)), h("td", null, x.expires ? stamp(x.expires).slice(0, 10) : "—"));
    }), "records"));
    if (r.total > 50) body.push(p("muted small", "…and " + (r.total - 50) + " more records."));
    return section("trash", "Trash and deletions", batches.length + records.length, body);
  }
  function p(cls, text) { return h("p", { class: cls }, text); }

  // -- backups --------------------------------------------------------------------------------
  function backupsSection() {
    var b = doc.backups || {};
    var snaps = b.snapshots || [];
    var body = [notice(b.notice, "bad")];
    if (b.available === false) {
      body.push(empty("This peersync has no backup engine."));
      return section("backups", "Backups", 0, body);
    }
    if (b.error) body.push(notice("the backup target could not be asked (" + b.error + "); showing what this machine knows.", "warn"));
    var lr = b.last_run, lv = b.last_verify;
    body.push(h("div", { class: "facts" },
      fact("Target", [h("span", { class: "mono small" }, b.target || "default"), b.encrypted ? pill("encrypted", "ok") : b.encrypted === false ? pill("not encrypted", "muted") : null]),
      fact("Snapshots", String(snaps.length) + (b.unreadable && b.unreadable.length ? " (+" + b.unreadable.length + " unreadable)" : "")),
      fact("Stored", b.repository ? bytes(b.repository.bytes) + " in " + plural(b.repository.objects, "object") : bytes(b.content_bytes) + " of content"),
      fact("Last backup", lr ? [when(lr.time), " ", pill(lr.ok ? "ok" : "failed", lr.ok ? "ok" : "bad")] : "never"),
      fact("Last verify", lv ? [when(lv.time), " ", pill(lv.ok ? "intact" : (lv.bad || 0) + " bad", lv.ok ? "ok" : "bad")] : h("span", { class: "muted" }, "never: peersync backup verify")),
      fact("Next due", b.interval ? (b.running ? "running now" : b.due ? "due now" : when(b.next_due)) : h("span", { class: "muted" }, "not scheduled (backup.interval)")),
      fact("Retention", b.retention ? b.retention.policy : h("span", { class: "muted" }, "keep everything (no backup.keep)")),
      fact("Passphrase", b.passphrase && b.passphrase.where ? h("span", { class: "mono small" }, b.passphrase.where) : h("span", { class: "muted" }, "generated by the first backup"))));
    if (lr && lr.ok === false && lr.error) body.push(notice("the last backup failed: " + lr.error, "bad"));
    if (!snaps.length) {
      body.push(empty(b.initialized ? "No snapshots at the target." : "No backups yet: peersync backup now"));
      return section("backups", "Backups", 0, body);
    }
    body.push(h("div", { class: "legend" },
      h("span", { class: "legend-item" }, h("i", { style: "background:#94a3b8" }), "snapshot size"),
      h("span", { class: "legend-item" }, h("i", { style: "background:#2563eb" }), "new content stored")));
    body.push(h("div", { class: "chart", id: "backup-chart", role: "img", "aria-label": "Snapshot sizes over time" }));
    var rows = snaps.slice().reverse().map(function (s) {
      var restore = config.live ? h("td", null, h("button", { class: "btn small", "data-action": "snapshot-restore", "data-id": s.id,
        onclick: function () { act("backups/" + encodeURIComponent(s.id) + "/restore", this); } }, "Restore to staging folder")) : null;
      return h("tr", { class: s.kept ? "" : "expiring" },
        h("td", null, h("div", null, when(s.time)), h("div", { class: "mono tiny muted" }, s.id)),
        h("td", { class: "opt" }, s.host + (s.own ? "" : " (other machine)")),
        h("td", { class: "num opt" }, s.files == null ? "—" : String(s.files)),
        h("td", { class: "num" }, s.bytes == null ? "—" : bytes(s.bytes)),
        h("td", { class: "num" }, s.added_bytes ? "+" + bytes(s.added_bytes) : "—"),
        h("td", null, s.kept ? [pill("kept", "ok"), " ", h("span", { class: "small muted" }, s.reasons.join(", "))] : [pill("expires", "warn"), " ", h("span", { class: "small muted" }, s.reasons.join(", "))]),
        restore);
    });
    var heads = ["Snapshot", ["Host", "opt"], ["Files", "num opt"], ["Size", "num"], ["Added", "num"], "Retention"];
    if (config.live) heads.push("");
    body.push(table(heads, rows, "snapshots"));
    return section("backups", "Backups", snaps.length, body);
  }
  function fact(label, value) { return h("div", { class: "fact" }, h("div", { class: "fact-label" }, label), h("div", { class: "fact-value" }, value)); }

  function drawBackupChart() {
    var box = document.getElementById("backup-chart");
    var snaps = (doc.backups || {}).snapshots || [];
    if (!box || !snaps.length) return;
    var xs = snaps.map(function (_, i) { return i; });
    var bars = uPlot.paths.bars({ size: [0.5, 24] });
    var label = function (i) { return snaps[i] ? stamp(snaps[i].time).slice(5) : ""; };
    var opts = {
      width: Math.max(240, box.clientWidth), height: box.clientWidth < 500 ? 160 : 190,
      legend: { show: false }, cursor: { points: { show: false }, drag: { x: false, y: false } },
      scales: { x: { time: false, range: [-0.6, snaps.length - 0.4] }, y: { range: function (u, lo, hi) { return [0, Math.max(1, hi) * 1.15]; } } },
      axes: [
        { stroke: "#64748b", grid: { show: false }, ticks: { show: false }, space: 80, incrs: [1, 2, 3, 5, 10, 20, 50],
          values: function (u, splits) { return splits.map(function (i) { return Number.isInteger(i) ? label(i) : ""; }); }, font: "11px system-ui, sans-serif" },
        { stroke: "#64748b", grid: { stroke: "rgba(100,116,139,0.15)" }, ticks: { show: false }, size: 64,
          values: function (u, splits) { return splits.map(bytes); }, font: "11px system-ui, sans-serif" }
      ],
      series: [{}, { label: "size", fill: "rgba(148,163,184,0.55)", stroke: "#94a3b8", width: 0, paths: bars, points: { show: false } },
        { label: "added", stroke: "#2563eb", width: 2, points: { show: true, size: 6, fill: "#2563eb" } }]
    };
    charts.push(new uPlot(opts, [xs, snaps.map(function (s) { return s.bytes; }), snaps.map(function (s) { return s.added_bytes; })], box));
  }

  // -- auto-sync ------------------------------------------------------------------------------
  function autoSection() {
    var a = doc.auto || {};
    if (a.notice) return section("auto", "Auto-sync", null, notice(a.notice, "bad"));
    var hb = a.heartbeat || {}, w = a.watch || {}, cron = a.cron || {}, dash = a.dashboard || {};
    var backing = ((doc.peers || {}).items || []).filter(function (p) { return p.backoff; });
    return section("auto", "Auto-sync", null, kv([
      ["Driven by", h("strong", null, { watch: "the watch daemon", cron: "an OpenClaw cron job", heartbeat: "the agent's heartbeat", off: "nothing: sync by hand" }[a.mode] || "unknown")],
      ["Heartbeat", hb.enabled ? ["on, every " + span(hb.interval) + " (gives up after " + span(hb.timeout) + ")", hb.installed ? "" : h("span", { class: "warn-text" }, " — HEARTBEAT.md does not run it yet: peersync init --heartbeat")] : "off (peersync auto on)"],
      hb.enabled ? ["Last heartbeat sync", hb.last_run ? when(hb.last_run) : "not yet"] : null,
      hb.enabled ? ["Next due", hb.next_due ? (ms(hb.next_due) <= Date.now() + 10000 ? "at the next heartbeat" : when(hb.next_due)) : "—"] : null,
      hb.session_start || hb.session_end ? ["Session hooks", [hb.session_start ? "start" : null, hb.session_end ? "end" : null].filter(Boolean).join(" and ")] : null,
      ["Watch daemon", w.running ? ["running", h("span", { class: "muted" }, " (pid " + w.pid + ")")] : "not running"],
      ["OpenClaw cron", cron.installed === null || cron.installed === undefined ? h("span", { class: "muted" }, "not known to this version") : cron.installed ? "installed" + (cron.detail ? " — " + cron.detail : "") : "not installed"],
      ["Backing off", backing.length ? backing.map(function (p) { return p.name + " (next try " + ago(p.backoff.retry_at) + ")"; }).join(", ") : "no peer"],
      ["This page", dash.refresh ? "rewritten after each automatic sync (" + dash.out + ")" : "written on demand (dashboard.refresh: true rewrites it after each automatic sync)"]
    ]));
  }

  // -- the page -------------------------------------------------------------------------------
  function render() {
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    var app = document.getElementById("app");
    var scrollY = window.scrollY;
    var openDetails = Array.prototype.map.call(document.querySelectorAll("details[open] > summary"), function (s) { return s.textContent; });
    app.replaceChildren(
      header(),
      h("div", { class: "wrap" }, tiles(),
      h("main", null, peersSection(), timelineSection(), conflictsSection(), backupsSection(), trashSection(), autoSection()),
      h("footer", null, "Generated by peersync ", doc.peersync, " on ", doc.host, " at ", stamp(doc.generated), ". ",
        doc.contents ? "This page holds file contents of this machine's conflicts: keep it on this machine." : "File contents are left out of this page.")));
    Array.prototype.forEach.call(document.querySelectorAll("details > summary"), function (s) {
      if (openDetails.indexOf(s.textContent) >= 0) s.parentNode.open = true;
    });
    drawSyncChart();
    drawBackupChart();
    window.scrollTo(0, scrollY);
  }

  function toast(text, tone) {
    var box = document.getElementById("toast"); // outside #app: a re-render keeps it
    if (!box) document.body.appendChild(box = h("div", { id: "toast", role: "status", "aria-live": "polite" }));
    box.replaceChildren(h("div", { class: "toast " + (tone || "ok") }, text));
    clearTimeout(toast.timer);
    toast.timer = setTimeout(function () { box.replaceChildren(); }, 8000);
  }

  function act(path, button) {
    button.disabled = true;
    button.classList.add("busy");
    fetch("api/" + path, { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}", credentials: "same-origin" })
      .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
      .then(function (res) {
        toast(res.body.message || res.body.error || (res.ok ? "Done." : "Failed."), res.ok ? "ok" : "bad");
        if (res.body.doc) { doc = res.body.doc; lastUpdate = Date.now(); render(); }
        else button.disabled = false;
      })
      .catch(function (err) { toast("The dashboard server did not answer (" + err + ").", "bad"); button.disabled = false; });
  }

  function poll() {
    fetch("api/data", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (next) {
        lastUpdate = Date.now();
        if (JSON.stringify(next) !== JSON.stringify(doc)) { doc = next; render(); }
        setBadge(true);
      })
      .catch(function () { setBadge(false); })
      .then(function () { setTimeout(poll, config.refresh * 1000); });
  }
  function setBadge(ok) {
    var badge = document.getElementById("live-badge");
    if (!badge) return;
    badge.className = "badge live" + (ok ? "" : " offline");
    var up = document.getElementById("updated");
    if (up) up.textContent = ok ? "just now" : "— server not answering";
  }

  render();
  var resizeTimer;
  window.addEventListener("resize", function () { clearTimeout(resizeTimer); resizeTimer = setTimeout(render, 150); });
  if (config.live) {
    setTimeout(poll, config.refresh * 1000);
    setInterval(function () {
      var up = document.getElementById("updated");
      if (up && up.textContent.indexOf("server") < 0) up.textContent = ago(new Date(lastUpdate).toISOString());
    }, 1000);
  }
})();
