// syncfleet console: times in the browser's zone, live updates over server-sent
// events, the run chart. No inline script anywhere (the CSP forbids it).
(function () {
  "use strict";

  // ---- times -------------------------------------------------------------------
  function relText(ms) {
    var s = Math.round(Math.abs(ms) / 1000), future = ms > 0, t;
    if (s < 5) return future ? "now" : "just now";
    if (s < 60) t = s + " s";
    else if (s < 3600) t = Math.floor(s / 60) + " min" + (s < 600 && s % 60 ? " " + (s % 60) + " s" : "");
    else if (s < 86400) t = Math.floor(s / 3600) + " h" + (Math.floor(s / 60) % 60 ? " " + (Math.floor(s / 60) % 60) + " min" : "");
    else t = Math.floor(s / 86400) + " d";
    return future ? "in " + t : t + " ago";
  }
  function fmtTimes(root) {
    var now = Date.now();
    (root || document).querySelectorAll("time[data-rel]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) return;
      el.textContent = relText(d.getTime() - now);
      el.title = d.toLocaleString();
    });
    (root || document).querySelectorAll("time[data-abs]:not([data-done])").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) return;
      el.textContent = d.toLocaleString();
      el.title = d.toISOString();
      el.setAttribute("data-done", "1");
    });
  }

  // ---- refresh of live regions (leading + trailing throttle) ----------------------
  var pending = {}, last = {};
  function refresh(sel) {
    var el = document.querySelector(sel);
    if (!el || !window.htmx) return;
    // Never yank a form away from someone typing in it.
    if (el.contains(document.activeElement) && document.activeElement.matches("input,select,textarea")) {
      schedule(sel, 1000);
      return;
    }
    last[sel] = Date.now();
    htmx.trigger(el, "sf-live");
  }
  function schedule(sel, wait) {
    if (pending[sel]) return;
    pending[sel] = setTimeout(function () { pending[sel] = null; refresh(sel); }, wait);
  }
  function soon(sel) {
    var since = Date.now() - (last[sel] || 0);
    if (since > 700 && !pending[sel]) refresh(sel);
    else schedule(sel, Math.max(100, 700 - since));
  }

  // ---- live events ---------------------------------------------------------------
  function setLive(on) {
    var el = document.getElementById("live-state");
    if (el) { el.classList.toggle("on", on); el.title = on ? "Live updates on" : "Live updates reconnecting…"; }
  }
  function onCard(ev) {
    var d = JSON.parse(ev.data);
    var card = document.getElementById("card-" + d.id);
    if (card) {
      var tmp = document.createElement("div");
      tmp.innerHTML = d.html;
      var fresh = tmp.firstElementChild;
      if (fresh) { card.replaceWith(fresh); fmtTimes(fresh); }
    }
    var detail = document.getElementById("detail");
    if (detail && detail.getAttribute("data-id") === d.id && document.querySelector("#history[data-first]")) soon("#live");
    REGIONS.forEach(function (s) { if (document.querySelector(s)) soon(s); });
  }
  // Lists that follow every integration of the workspace (Failures, Outbox, Conflicts)
  // and the navigation's counts.
  var REGIONS = ["#failures", "#outbox", "#conflicts", "#nav-count-conflicts"];
  function onCounts(ev) {
    var d = JSON.parse(ev.data), el = document.getElementById("counts");
    if (!el) return;
    var tmp = document.createElement("div");
    tmp.innerHTML = d.html;
    if (tmp.firstElementChild) el.replaceWith(tmp.firstElementChild);
  }
  function onResync() {
    ["#live"].concat(REGIONS).forEach(function (s) { if (document.querySelector(s)) soon(s); });
    if (document.getElementById("list") && window.htmx) {
      htmx.ajax("GET", location.pathname + location.search, { target: "#list", swap: "outerHTML", headers: { "HX-Target": "list" } });
    }
  }
  function onMessage(m) {
    switch (m.name) {
      case "open": case "hello": setLive(true); break;
      case "error": setLive(false); break;
      case "card": onCard(m); break;
      case "counts": onCounts(m); break;
      case "resync": onResync(); break;
      case "logout": location.href = "/login"; break;
    }
  }
  // One stream per browser session, shared by its tabs through a SharedWorker
  // (live-worker.js): a browser allows six connections per host, and a stream holds one
  // for as long as its page is open. Where SharedWorker is missing, a stream of its own.
  function connect() {
    var b = document.body, url = b.getAttribute("data-events");
    if (!url) return;
    var worker = b.getAttribute("data-live-worker"), tag = b.getAttribute("data-live-tag");
    if (window.SharedWorker && worker && tag) {
      try {
        var sw = new SharedWorker(worker, { name: "syncfleet-live" });
        sw.port.onmessage = function (e) { onMessage(e.data || {}); };
        sw.port.start();
        var join = function (cursor) { sw.port.postMessage({ type: "join", tag: tag, url: url, cursor: cursor }); };
        join(b.getAttribute("data-since"));
        window.addEventListener("pagehide", function () { sw.port.postMessage({ type: "leave" }); });
        // Back from the page cache: rejoin; what happened meanwhile comes as a resync.
        window.addEventListener("pageshow", function (e) { if (e.persisted) join(""); });
        window.sfEvents = "shared";
        return;
      } catch (err) { /* a stream of its own, below */ }
    }
    if (!window.EventSource) return;
    var es = new EventSource(url);
    es.onopen = function () { setLive(true); };
    es.onerror = function () { setLive(false); };
    NAMES.forEach(function (name) {
      es.addEventListener(name, function (ev) {
        if (name === "logout") es.close();
        onMessage({ name: name, data: ev.data });
      });
    });
    window.sfEvents = "own";
    // Free the connection as soon as the page goes (browsers allow few per host).
    window.addEventListener("pagehide", function () { es.close(); });
  }
  var NAMES = ["hello", "card", "counts", "resync", "logout"];

  // ---- chart ---------------------------------------------------------------------
  var COLORS = { SUCCESS: "#15803d", FAILED: "#b91c1c", RATE_LIMITED: "#b45309" };
  function drawChart() {
    var el = document.getElementById("chart");
    if (!el || !window.uPlot || el.getAttribute("data-drawn")) return;
    var pts = JSON.parse(el.getAttribute("data-chart") || "[]");
    var xs = [], series = { SUCCESS: [], FAILED: [], RATE_LIMITED: [] };
    pts.forEach(function (p) {
      xs.push(p[0]);
      Object.keys(series).forEach(function (k) { series[k].push(p[2] === k ? p[1] : null); });
    });
    function s(label, k) {
      return { label: label, stroke: COLORS[k], width: 0, paths: function () { return null; }, points: { show: true, size: 7, fill: COLORS[k] },
        value: function (u, v) { return v == null ? "—" : v + " ms"; } };
    }
    el.setAttribute("data-drawn", "1");
    new uPlot({
      width: Math.max(300, el.clientWidth), height: 220,
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(10, max * 1.15)]; } } },
      axes: [{}, { label: "duration (ms)", size: 70 }],
      series: [{}, s("success", "SUCCESS"), s("failed", "FAILED"), s("rate limited", "RATE_LIMITED")],
      legend: { show: false },
      cursor: { points: { size: 9 } }
    }, [xs, series.SUCCESS, series.FAILED, series.RATE_LIMITED], el);
  }

  // ---- toasts --------------------------------------------------------------------
  function ageToasts() {
    document.querySelectorAll("#toasts .toast:not([data-aging])").forEach(function (t) {
      t.setAttribute("data-aging", "1");
      setTimeout(function () { t.remove(); }, t.classList.contains("error") ? 12000 : 7000);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.body.setAttribute("data-ready", "1");
    fmtTimes();
    setInterval(fmtTimes, 1000);
    drawChart();
    connect();
    // A live reload must not replace a region while one of its actions is in flight
    // (its answer would be lost with the element): try again shortly.
    document.body.addEventListener("htmx:beforeSwap", function (e) {
      var t = e.detail.target;
      if (t && ["live", "failures", "outbox", "conflicts"].indexOf(t.id) >= 0 && t.querySelector(".htmx-request")) {
        e.detail.shouldSwap = false;
        schedule("#" + t.id, 400);
      }
    });
    document.body.addEventListener("htmx:afterSettle", function (e) {
      fmtTimes();
      drawChart();
      ageToasts();
    });
  });
})();
