"""The web view's single page: HTML, CSS and vanilla JS in one string, no external assets.

It polls ``/api/state`` every second and redraws: text goes in with ``textContent`` (peer-supplied
strings such as agent versions are never parsed as HTML); graphs are inline SVG built with DOM calls.
"""

from __future__ import annotations

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mycel node</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2430}
header{background:#1d2430;color:#fff;padding:10px 18px;display:flex;gap:18px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0}
code,.mono{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:14px;padding:14px}
section{background:#fff;border-radius:8px;padding:10px 14px;box-shadow:0 1px 3px #0002;overflow:auto}
h2{font-size:15px;margin:4px 0 8px}
table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:3px 6px;border-bottom:1px solid #eee;font-size:12px;vertical-align:top}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;background:#888;color:#fff}
.public{background:#2a8a3a}.private{background:#b8572a}.unknown{background:#777}
.muted{color:#778}.topic{display:inline-block;margin:4px;text-align:center}
#status{margin-left:auto;font-size:12px}
</style></head>
<body>
<header><h1>mycel node</h1><span id="peer-id" class="mono"></span>
<span>reachability <span id="reachability" class="badge unknown">unknown</span> <span id="autonat" class="muted"></span></span>
<span id="status" class="muted">connecting…</span></header>
<main>
<section><h2>Addresses</h2><ul id="addrs" class="mono"></ul><div class="muted" id="agent"></div></section>
<section><h2>Bandwidth <span class="muted" id="bw-now"></span></h2>
<svg id="bandwidth" width="440" height="140" role="img" aria-label="bandwidth over time"></svg>
<div class="muted"><span style="color:#2a6fdb">■</span> sent <span style="color:#d9822b">■</span> received (bytes/s, last 5 min)</div></section>
<section style="grid-column:1/-1"><h2>Connected peers (<span id="peer-count">0</span>)</h2>
<table><thead><tr><th>peer</th><th>transport</th><th>security</th><th>muxer</th><th>dir</th><th>RTT</th><th>agent</th><th>streams</th><th>gossip score</th><th>address</th></tr></thead>
<tbody id="peers"></tbody></table></section>
<section><h2>Open streams by protocol</h2><table><thead><tr><th>protocol</th><th>in</th><th>out</th></tr></thead><tbody id="streams"></tbody></table></section>
<section><h2>Gossipsub mesh</h2><div id="mesh"><span class="muted">no gossipsub service</span></div></section>
<section><h2>DHT routing table <span class="muted" id="dht-size"></span></h2><svg id="dht" width="440" height="130"></svg></section>
<section><h2>Relay</h2><div id="relay" class="muted">no reservations</div><h2>Hole punching</h2><div id="holepunch" class="muted">no DCUtR service</div></section>
</main>
<script>
"use strict";
const SVG = "http://www.w3.org/2000/svg";
function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function fill(node, children) { node.replaceChildren(...children); }
function fmtBytes(n) { const u = ["B","KB","MB","GB"]; let i = 0; while (n >= 1024 && i < 3) { n /= 1024; i++; } return n.toFixed(i ? 1 : 0) + " " + u[i]; }

function renderPeers(s) {
  document.getElementById("peer-count").textContent = s.peers;
  fill(document.getElementById("peers"), s.connections.map(c => {
    const tr = el("tr", {"data-peer": c.peer});
    const cells = [c.short, c.transport + (c.limited ? " (limited)" : ""), c.security, c.muxer, c.direction,
      c.rtt_ms === null ? "–" : c.rtt_ms.toFixed(2) + " ms", c.agent || "–", c.streams === null ? "–" : c.streams,
      s.pubsub && c.peer in s.pubsub.scores ? s.pubsub.scores[c.peer] : "–", c.addr];
    cells.forEach((v, i) => { const td = el("td", i === 0 || i === 9 ? {class: "mono", title: c.peer} : {}, v); tr.appendChild(td); });
    return tr;
  }));
}
function renderStreams(s) {
  fill(document.getElementById("streams"), s.streams.map(r => {
    const tr = el("tr", {"data-protocol": r.protocol});
    tr.append(el("td", {class: "mono"}, r.protocol), el("td", {}, r.inbound), el("td", {}, r.outbound));
    return tr;
  }));
}
function scoreColor(score) {
  if (score === null || score === undefined) return "#2a6fdb";
  return score < 0 ? "#c0392b" : "#2a8a3a";
}
function renderMesh(s) {
  const box = document.getElementById("mesh");
  if (!s.pubsub) { fill(box, [el("span", {class: "muted"}, "no gossipsub service")]); return; }
  if (!s.pubsub.topics.length) { fill(box, [el("span", {class: "muted"}, "not subscribed to any topic")]); return; }
  fill(box, s.pubsub.topics.map(t => {
    const W = 220, H = 220, cx = W / 2, cy = H / 2;
    const svg = el("svg:svg", {width: W, height: H, "data-topic": t.topic, class: "mesh-graph"});
    const n = t.peers.length;
    t.peers.forEach((p, i) => {
      const a = 2 * Math.PI * i / Math.max(n, 1) - Math.PI / 2, r = p.mesh ? 70 : 95;
      const x = cx + r * Math.cos(a), y = cy + r * Math.sin(a);
      svg.appendChild(el("svg:line", {x1: cx, y1: cy, x2: x, y2: y, stroke: p.mesh ? "#2a6fdb" : "#ccc",
        "stroke-width": p.mesh ? 2 : 1, "stroke-dasharray": p.mesh ? "" : "3,3"}));
      const g = el("svg:g", {class: p.mesh ? "mesh-peer" : "topic-peer", "data-peer": p.peer});
      g.appendChild(el("svg:title", {}, p.peer + (p.score === null ? "" : " score " + p.score)));
      g.appendChild(el("svg:circle", {cx: x, cy: y, r: 8, fill: p.mesh ? scoreColor(p.score) : "#fff", stroke: scoreColor(p.score), "stroke-width": 2}));
      g.appendChild(el("svg:text", {x: x, y: y + 20, "text-anchor": "middle", "font-size": 9}, "…" + p.peer.slice(-6) + (p.score === null ? "" : " " + p.score)));
      svg.appendChild(g);
    });
    svg.appendChild(el("svg:circle", {cx: cx, cy: cy, r: 11, fill: "#1d2430"}));
    svg.appendChild(el("svg:text", {x: cx, y: cy + 4, "text-anchor": "middle", "font-size": 9, fill: "#fff"}, "me"));
    const div = el("div", {class: "topic"});
    div.append(svg, el("div", {class: "mono"}, t.topic + " — mesh " + t.mesh + " / " + t.total_peers + " peers"));
    return div;
  }));
}
function renderDht(s) {
  const svg = document.getElementById("dht");
  if (!s.dht) { fill(svg, [el("svg:text", {x: 10, y: 20, fill: "#778"}, "no DHT service")]); document.getElementById("dht-size").textContent = ""; return; }
  document.getElementById("dht-size").textContent = s.dht.size + " peers, " + s.dht.connected + " connected";
  const b = s.dht.buckets, W = 440, H = 110, bw = Math.max(4, Math.min(26, (W - 20) / Math.max(b.length, 1)));
  const kids = [];
  b.forEach((n, i) => {
    const h = Math.round(H * n / Math.max(s.dht.k, 1));
    const r = el("svg:rect", {x: 10 + i * bw, y: H - h, width: bw - 2, height: h, fill: "#2a6fdb", class: "bucket", "data-bucket": i, "data-peers": n});
    r.appendChild(el("svg:title", {}, "bucket " + i + ": " + n + " peers"));
    kids.push(r);
    if (bw >= 12) kids.push(el("svg:text", {x: 10 + i * bw + bw / 2 - 1, y: H + 14, "text-anchor": "middle", "font-size": 9}, i));
  });
  kids.push(el("svg:line", {x1: 10, x2: W - 10, y1: H, y2: H, stroke: "#999"}));
  fill(svg, kids);
}
function renderBandwidth(s) {
  const svg = document.getElementById("bandwidth"), W = 440, H = 120, pts = s.bandwidth;
  const max = Math.max(1, ...pts.map(p => Math.max(p[1], p[2])));
  const line = (k, color) => el("svg:polyline", {fill: "none", stroke: color, "stroke-width": 1.5,
    points: pts.map((p, i) => (10 + i * (W - 20) / Math.max(pts.length - 1, 1)).toFixed(1) + "," + (H - H * p[k] / max).toFixed(1)).join(" ")});
  fill(svg, [el("svg:line", {x1: 10, x2: W - 10, y1: H, y2: H, stroke: "#999"}), line(1, "#2a6fdb"), line(2, "#d9822b"),
    el("svg:text", {x: 12, y: 12, "font-size": 10, fill: "#778"}, fmtBytes(max) + "/s")]);
  const last = pts[pts.length - 1];
  document.getElementById("bw-now").textContent = last ? "↑ " + fmtBytes(last[1]) + "/s ↓ " + fmtBytes(last[2]) + "/s" : "";
}
function renderRelay(s) {
  const box = document.getElementById("relay"), r = s.relay, items = [];
  r.held.forEach(h => items.push(el("div", {class: "mono reservation"}, "reservation on " + h.short + " until " + new Date(h.expire * 1000).toISOString())));
  if (r.serving) items.push(el("div", {}, "serving as a relay: " + r.serving.reservations + " reservations, " + r.serving.circuits + " circuits, " + fmtBytes(r.serving.bytes_relayed) + " relayed"));
  fill(box, items.length ? items : [el("span", {class: "muted"}, "no reservations")]);
  const hp = document.getElementById("holepunch");
  fill(hp, s.holepunch ? Object.entries(s.holepunch).map(([k, v]) => el("span", {style: "margin-right:10px"}, k + " " + v)) : [el("span", {class: "muted"}, "no DCUtR service")]);
}
function render(s) {
  document.getElementById("peer-id").textContent = s.peer_id;
  const badge = document.getElementById("reachability");
  badge.textContent = s.reachability; badge.className = "badge " + s.reachability;
  document.getElementById("autonat").textContent = s.autonat ? "AutoNAT confidence " + s.autonat.confidence +
    Object.entries(s.autonat.addrs).map(([a, r]) => " · " + a + " " + r).join("") : "";
  fill(document.getElementById("addrs"), s.addrs.map(a => el("li", {}, a)));
  document.getElementById("agent").textContent = s.agent + " — " + s.protocols.length + " protocols";
  renderPeers(s); renderStreams(s); renderMesh(s); renderDht(s); renderBandwidth(s); renderRelay(s);
}
async function tick() {
  const status = document.getElementById("status");
  try {
    const r = await fetch("/api/state", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    status.textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  } catch (e) { status.textContent = "node unreachable (" + e.message + ")"; }
  setTimeout(tick, 1000);
}
tick();
</script></body></html>
"""

__all__ = ["PAGE"]
