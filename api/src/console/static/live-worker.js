// syncfleet console: one event stream per browser session, shared by all its tabs.
//
// A browser keeps at most six HTTP/1.1 connections per host, and an EventSource holds
// one for as long as its page is open: without this, the seventh tab of the console
// would wait for a connection (its page would not even load). Every tab of a session
// joins this shared worker instead; the worker holds one EventSource per session (the
// page names its session by an opaque tag) and passes every event on to the session's
// tabs. A tab joining later names the feed position its page was rendered at and gets
// the card events it missed since, from the worker's ring, or a `resync`.
// See docs/architecture.md §12.3.
"use strict";

var RING = 512;
var NAMES = ["hello", "card", "counts", "resync", "logout"];
var streams = {}; // tag -> { es, ports, ring, start, dropped, epoch, counts, open }

function parseId(id) {
  var i = (id || "").lastIndexOf("-");
  if (i < 0) return null;
  var seq = parseInt(id.slice(i + 1), 10);
  return isNaN(seq) ? null : { epoch: id.slice(0, i), seq: seq };
}

function send(st, msg) {
  st.ports.forEach(function (p) { p.postMessage(msg); });
}

function open(tag, url, cursor) {
  var c = parseId(cursor);
  var st = { es: null, ports: [], ring: [], start: c ? c.seq : 0, dropped: -1, epoch: c ? c.epoch : null, counts: null, open: false };
  var es = new EventSource(url);
  st.es = es;
  es.onopen = function () { st.open = true; send(st, { name: "open" }); };
  es.onerror = function () { st.open = false; send(st, { name: "error" }); };
  NAMES.forEach(function (name) {
    es.addEventListener(name, function (ev) {
      var id = parseId(ev.lastEventId);
      // Another replica or a restart: positions of the old epoch mean nothing now.
      if (id && id.epoch !== st.epoch) {
        st.epoch = id.epoch;
        st.ring = [];
        st.start = id.seq;
        st.dropped = -1;
      }
      var msg = { name: name, data: ev.data, id: ev.lastEventId, seq: id ? id.seq : null };
      if (name === "card" && id) {
        st.ring.push(msg);
        if (st.ring.length > RING) st.dropped = st.ring.shift().seq;
      }
      if (name === "counts") st.counts = msg;
      send(st, msg);
      if (name === "logout") { es.close(); delete streams[tag]; }
    });
  });
  streams[tag] = st;
  return st;
}

// What a tab rendered at `cursor` missed: the card events after it, or a resync when
// the worker cannot know (another epoch, before its stream began, or dropped).
function catchUp(st, port, cursor) {
  var c = parseId(cursor);
  if (!c || c.epoch !== st.epoch || c.seq < st.start || c.seq < st.dropped) {
    port.postMessage({ name: "resync", data: "{}" });
  } else {
    st.ring.forEach(function (m) { if (m.seq > c.seq) port.postMessage(m); });
  }
  if (st.counts) port.postMessage(st.counts);
  if (st.open) port.postMessage({ name: "open" });
}

function leave(port) {
  Object.keys(streams).forEach(function (tag) {
    var st = streams[tag], i = st.ports.indexOf(port);
    if (i < 0) return;
    st.ports.splice(i, 1);
    if (!st.ports.length) { st.es.close(); delete streams[tag]; }
  });
}

self.onconnect = function (e) {
  var port = e.ports[0];
  port.onmessage = function (m) {
    var d = m.data || {};
    if (d.type === "join" && d.tag && d.url) {
      var st = streams[d.tag];
      if (st) {
        st.ports.push(port);
        catchUp(st, port, d.cursor);
      } else {
        // A new stream starts at this page's position: the server replays from there.
        st = open(d.tag, d.url, d.cursor);
        st.ports.push(port);
      }
    } else if (d.type === "leave") {
      leave(port);
    }
  };
  port.start();
};
