// status.js: fills the status page from /status (gateway/gw_status.c). No libraries.
"use strict";

const COLORS = ["#1b6ca8", "#d1495b", "#edae49", "#00798c", "#66a182", "#8d6a9f"];

function text(id, v) { document.getElementById(id).textContent = String(v); }

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function cell(v, cls) {
  const td = document.createElement("td");
  td.textContent = String(v);
  if (cls) td.className = cls;
  return td;
}

// Each account's share of the whole cluster: the product of normalized shares up the tree.
function policyShares(share) {
  const byName = new Map(share.map(r => [r.account, r]));
  const out = new Map();
  for (const r of share) {
    let s = 1, x = r;
    while (x && x.depth > 0) { s *= x.norm_shares; x = byName.get(x.parent); }
    out.set(r.account, s);
  }
  return out;
}

function renderCluster(c) {
  const nodes = c.nodes || [];
  const sum = k => nodes.reduce((a, n) => a + (n[k] || 0), 0);
  const up = nodes.filter(n => !["DOWN", "UNKNOWN"].includes(String(n.state).split("+")[0])).length;
  text("nodes-up", up); text("nodes-total", nodes.length);
  text("cpus-used", sum("cpus_used")); text("cpus-total", sum("cpus"));
  text("gpus-used", sum("gpus_used")); text("gpus-total", sum("gpus"));
  document.getElementById("cpu-bar").style.width = (sum("cpus") ? 100 * sum("cpus_used") / sum("cpus") : 0) + "%";
  document.getElementById("gpu-bar").style.width = (sum("gpus") ? 100 * sum("gpus_used") / sum("gpus") : 0) + "%";

  const q = new Map();
  for (const j of c.jobs || []) {
    const e = q.get(j.account) || { pending: 0, running: 0 };
    if (j.state === "PENDING") e.pending++;
    if (j.state === "RUNNING") e.running++;
    q.set(j.account, e);
  }
  fill(document.querySelector("#queue tbody"), [...q.keys()].sort().map(a => {
    const tr = document.createElement("tr");
    tr.dataset.account = a;
    tr.append(cell(a), cell(q.get(a).pending, "pending"), cell(q.get(a).running, "running"));
    return tr;
  }));

  const policy = policyShares(c.share || []);
  const usage = (c.usage || []).filter(r => r.billed > 0);
  const days = [...new Set(usage.map(r => r.period))].sort();
  const insts = [...new Set(usage.map(r => r.name))].sort();
  const total = usage.reduce((a, r) => a + r.billed, 0);
  fill(document.querySelector("#shares tbody"), insts.map(name => {
    const tr = document.createElement("tr");
    tr.dataset.institution = name;
    const mine = usage.filter(r => r.name === name).reduce((a, r) => a + r.billed, 0);
    tr.append(cell(name), cell(((policy.get(name) || 0) * 100).toFixed(1) + "%", "policy"),
              cell((total ? 100 * mine / total : 0).toFixed(1) + "%", "delivered"));
    return tr;
  }));
  drawChart(days, insts, usage, policy);
}

function drawChart(days, insts, usage, policy) {
  const svg = document.getElementById("share-chart"), NS = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const W = 760, H = 240, L = 40, R = 220, T = 10, B = 30, pw = W - L - R, ph = H - T - B;
  const add = (tag, attrs, content) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (content !== undefined) e.textContent = content;
    svg.append(e);
    return e;
  };
  for (let k = 0; k <= 4; k++) {
    const y = T + ph - ph * k / 4;
    add("line", { x1: L, x2: L + pw, y1: y, y2: y, stroke: "#ddd" });
    add("text", { x: L - 4, y: y + 4, "text-anchor": "end" }, (25 * k) + "%");
  }
  const bw = days.length ? pw / days.length : pw;
  days.forEach((d, di) => {
    const rows = usage.filter(r => r.period === d), tot = rows.reduce((a, r) => a + r.billed, 0);
    let y = T + ph;
    insts.forEach((name, ii) => {
      const v = rows.filter(r => r.name === name).reduce((a, r) => a + r.billed, 0);
      const h = tot ? ph * v / tot : 0;
      y -= h;
      add("rect", { x: L + di * bw + 2, y, width: Math.max(bw - 4, 1), height: h, fill: COLORS[ii % COLORS.length],
                    "data-institution": name, "data-day": d });
    });
    add("text", { x: L + di * bw + bw / 2, y: H - 12, "text-anchor": "middle" }, d);
  });
  let acc = 0;
  insts.forEach((name, ii) => {
    acc += policy.get(name) || 0;
    const y = T + ph - ph * Math.min(acc, 1);
    add("line", { x1: L, x2: L + pw, y1: y, y2: y, stroke: COLORS[ii % COLORS.length], "stroke-dasharray": "6 4" });
    add("rect", { x: L + pw + 10, y: T + 16 * ii, width: 10, height: 10, fill: COLORS[ii % COLORS.length] });
    add("text", { x: L + pw + 26, y: T + 16 * ii + 9 }, name + " (policy " + ((policy.get(name) || 0) * 100).toFixed(0) + "%)");
  });
}

function render(st) {
  text("replicas-up", (st.replicas || []).filter(r => r.up).length);
  text("queued", st.queued);
  text("inflight", (st.replicas || []).reduce((a, r) => a + r.inflight, 0));
  text("slots", (st.replicas || []).filter(r => r.up).reduce((a, r) => a + r.slots, 0));
  const inf = st.inference || {};
  text("generations", inf.generations || 0);
  text("tokens", inf.completion_tokens || 0);
  text("mean-ttft", Math.round(1000 * (inf.mean_ttft_s || 0)));
  if (st.cluster) renderCluster(st.cluster);
  text("updated", new Date().toISOString());
}

async function refresh() {
  try {
    const r = await fetch("/status", { cache: "no-store" });
    if (r.ok) render(await r.json());
  } catch (e) {
    text("updated", "failed: " + e);
  }
}

refresh();
setInterval(refresh, 5000);
