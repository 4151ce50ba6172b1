// delineate review page: three views with contours, lesion triage, export.
// Plain JavaScript and canvas; everything comes from this server.
"use strict";

// The token comes in the URL fragment (never sent to the server in a URL);
// it is kept for this tab only and removed from the address bar.
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  sessionStorage.setItem("delineate-token", fragment.get("token"));
  history.replaceState(null, "", location.pathname);
}
const token = sessionStorage.getItem("delineate-token") || "";

const $ = (id) => document.getElementById(id);
const api = (path, opts = {}) =>
  fetch("api/" + path, { ...opts, headers: { ...(opts.headers || {}), Authorization: "Bearer " + token } });

const COLORS = { undecided: [255, 210, 40], accepted: [60, 230, 90], rejected: [120, 120, 140], selected: [255, 60, 60] };
const state = { meta: null, cursor: [0, 0, 0], sel: -1, decisions: {}, lo: 0, hi: 1, zoom: 1, saving: Promise.resolve() };
// axis: 0 sagittal (index i), 1 coronal (j), 2 axial (k); the screen axes of
// each view as volume axes (columns, rows), rows flipped where noted.
const views = [
  { name: "axial", axis: 2, cols: 0, rows: 1, flip: false },
  { name: "coronal", axis: 1, cols: 0, rows: 2, flip: true },
  { name: "sagittal", axis: 0, cols: 1, rows: 2, flip: true },
].map((v) => ({ ...v, canvas: $(v.name), label: $(v.name + "-label"), data: null, want: -1 }));

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function main() {
  const r = await api("meta");
  if (!r.ok) {
    status((await r.json().catch(() => ({}))).error || `error ${r.status}`, true);
    return;
  }
  const m = (state.meta = await r.json());
  $("title").textContent = "delineate review · " + m.name;
  document.title = "delineate review · " + m.name;
  [state.lo, state.hi] = m.window;
  state.decisions = Object.fromEntries(Object.entries(m.review.decisions || {}).map(([k, v]) => [+k, v]));
  // The reviewer is the signed-in account (the server records it).
  $("reviewer").value = m.user || m.review.reviewer || "";
  $("reviewer").readOnly = true;
  $("send").hidden = !m.can_send;
  $("export").disabled = !m.can_export_rtstruct;
  state.cursor = m.size.map((n) => Math.floor(n / 2));
  renderList();
  if (m.lesions.length) select(0);
  else refresh();
  const notes = (m.notices || []).join(" · ");
  status(`${m.lesions.length} proposed lesion(s), AI draft by ${m.model || "the model"}` + (notes ? " · " + notes : ""), !!notes);
  $("wl-lo").value = state.lo.toFixed(0);
  $("wl-hi").value = state.hi.toFixed(0);
}

function decision(id) {
  return state.decisions[id] || "undecided";
}

function renderList() {
  const ul = $("lesions");
  ul.innerHTML = "";
  state.meta.lesions.forEach((l, n) => {
    const li = document.createElement("li");
    li.dataset.id = l.id;
    li.dataset.p = l.confidence;
    li.dataset.state = decision(l.id);
    li.innerHTML = `<span>${l.id}</span><span>${l.confidence.toFixed(2)}</span>` +
      `<span>${l.volume_mm3.toFixed(0)} mm³</span><span>${l.equivalent_diameter_mm.toFixed(1)} mm</span>` +
      `<span class="state">${decision(l.id)}</span>`;
    li.addEventListener("click", () => select(n));
    if (n === state.sel) li.classList.add("selected");
    ul.appendChild(li);
  });
}

function select(n) {
  const ls = state.meta.lesions;
  if (!ls.length) return;
  state.sel = Math.max(0, Math.min(ls.length - 1, n));
  state.cursor = ls[state.sel].centre.slice();
  document.querySelectorAll("#lesions li").forEach((li, k) => li.classList.toggle("selected", k === state.sel));
  const li = document.querySelectorAll("#lesions li")[state.sel];
  if (li) li.scrollIntoView({ block: "nearest" });
  refresh();
}

function decide(value) {
  const l = state.meta.lesions[state.sel];
  if (!l) return;
  if (value === "undecided") delete state.decisions[l.id];
  else state.decisions[l.id] = value;
  const li = document.querySelectorAll("#lesions li")[state.sel];
  li.dataset.state = decision(l.id);
  li.querySelector(".state").textContent = decision(l.id);
  save();
  if (value !== "undecided" && state.sel < state.meta.lesions.length - 1) select(state.sel + 1);
  else refresh();
}

// Decisions are saved after every change, one request after another.
function save() {
  const body = JSON.stringify({ reviewer: $("reviewer").value.trim(), time: "", decisions: state.decisions });
  state.saving = state.saving.then(async () => {
    const r = await api("decisions", { method: "POST", body, headers: { "Content-Type": "application/json" } });
    if (!r.ok) status("not saved: " + ((await r.json().catch(() => ({}))).error || r.status), true);
    else {
      const n = Object.keys(state.decisions).length;
      status(`saved: ${n} of ${state.meta.lesions.length} decided`);
    }
  });
  return state.saving;
}

async function exportRt(send) {
  await save();
  status(send ? "exporting and sending…" : "exporting…");
  const r = await api("export", { method: "POST", body: JSON.stringify({ send }), headers: { "Content-Type": "application/json" } });
  const j = await r.json().catch(() => ({}));
  if (!r.ok) return status(j.error || `export failed (${r.status})`, true);
  const sent = (j.queued || []).map((d) => `${d}: queued for delivery`).join("; ")
    + (j.unchanged ? ` (revision ${j.revision} unchanged: nothing new)` : ` (revision ${j.revision})`);
  $("status").innerHTML = "";
  const a = document.createElement("a");
  a.textContent = `RTSTRUCT with ${j.rois} lesion(s)`;
  a.href = "#";
  a.addEventListener("click", async (e) => {
    e.preventDefault();
    const b = await (await api("export/rtstruct.dcm")).blob();
    const u = URL.createObjectURL(b);
    const d = Object.assign(document.createElement("a"), { href: u, download: state.meta.name + "-reviewed-rtstruct.dcm" });
    d.click();
    URL.revokeObjectURL(u);
  });
  $("status").append("exported: ", a, sent ? " · " + sent : "");
  $("status").dataset.exported = j.rois;
}

// Loads the slice each view needs, then draws it.
function refresh() {
  views.forEach(async (v) => {
    const index = state.cursor[v.axis];
    if (v.data && v.data.index === index) return draw(v);
    v.want = index;
    const r = await api(`slice/${v.axis}/${index}`);
    if (!r.ok || v.want !== index) return;
    const w = +r.headers.get("x-width"), h = +r.headers.get("x-height");
    const buf = await r.arrayBuffer();
    v.data = { index, w, h, img: new Float32Array(buf, 0, w * h), lab: new Uint16Array(buf, w * h * 4, w * h) };
    draw(v);
  });
}

function draw(v) {
  const d = v.data;
  if (!d) return;
  const c = v.canvas, box = c.parentElement.getBoundingClientRect();
  c.width = box.width;
  c.height = box.height;
  const sp = state.meta.spacing;
  const mmW = d.w * sp[v.cols], mmH = d.h * sp[v.rows];
  const scale = Math.min(box.width / mmW, box.height / mmH) * state.zoom;
  // The image, windowed, with contours of each lesion in its decision's colour.
  const im = new ImageData(d.w, d.h);
  const span = Math.max(1e-6, state.hi - state.lo);
  const selId = state.sel >= 0 ? state.meta.lesions[state.sel].id : -1;
  for (let y = 0; y < d.h; y++) {
    for (let x = 0; x < d.w; x++) {
      const n = y * d.w + x, o = n * 4;
      const g = Math.max(0, Math.min(255, ((d.img[n] - state.lo) / span) * 255));
      im.data[o] = im.data[o + 1] = im.data[o + 2] = g;
      im.data[o + 3] = 255;
      const l = d.lab[n];
      if (l && (x === 0 || y === 0 || x === d.w - 1 || y === d.h - 1 ||
          d.lab[n - 1] !== l || d.lab[n + 1] !== l || d.lab[n - d.w] !== l || d.lab[n + d.w] !== l)) {
        const col = l === selId ? COLORS.selected : COLORS[decision(l)];
        im.data[o] = col[0]; im.data[o + 1] = col[1]; im.data[o + 2] = col[2];
      }
    }
  }
  const off = document.createElement("canvas");
  off.width = d.w; off.height = d.h;
  off.getContext("2d").putImageData(im, 0, 0);
  const ctx = c.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, c.width, c.height);
  ctx.imageSmoothingEnabled = false;
  // Centred on the cursor when zoomed in, else on the image.
  const cx = state.cursor[v.cols] + 0.5, cyRaw = state.cursor[v.rows] + 0.5;
  const cy = v.flip ? d.h - cyRaw : cyRaw;
  const drawW = mmW * scale, drawH = mmH * scale;
  let ox = (box.width - drawW) / 2, oy = (box.height - drawH) / 2;
  if (state.zoom > 1) {
    ox = box.width / 2 - cx * sp[v.cols] * scale;
    oy = box.height / 2 - cy * sp[v.rows] * scale;
  }
  ctx.drawImage(off, ox, oy, drawW, drawH);
  // Crosshair at the cursor.
  ctx.strokeStyle = "rgba(80,200,255,0.45)";
  ctx.lineWidth = 1;
  const px = ox + cx * sp[v.cols] * scale, py = oy + cy * sp[v.rows] * scale;
  ctx.beginPath();
  ctx.moveTo(px, 0); ctx.lineTo(px, c.height); ctx.moveTo(0, py); ctx.lineTo(c.width, py);
  ctx.stroke();
  v.geom = { ox, oy, scale, sx: sp[v.cols], sy: sp[v.rows], h: d.h };
  c.dataset.slice = d.index;
  v.label.textContent = `${v.name} ${d.index + 1}/${state.meta.size[v.axis]}`;
  $("zoom").textContent = state.zoom.toFixed(1);
}

function redrawAll() {
  views.forEach(draw);
}

views.forEach((v) => {
  v.canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    if (e.ctrlKey) {
      state.zoom = Math.max(1, Math.min(8, state.zoom * (e.deltaY < 0 ? 1.25 : 0.8)));
      return redrawAll();
    }
    const step = (e.deltaY > 0 ? 1 : -1) * (e.shiftKey ? 5 : 1);
    state.cursor[v.axis] = Math.max(0, Math.min(state.meta.size[v.axis] - 1, state.cursor[v.axis] + step));
    refresh();
  }, { passive: false });
  v.canvas.addEventListener("mousedown", (e) => {
    if (e.button === 2) {
      // Window/level: horizontal = width, vertical = level.
      const start = { x: e.clientX, y: e.clientY, lo: state.lo, hi: state.hi };
      const move = (m) => {
        const w0 = start.hi - start.lo, c0 = (start.hi + start.lo) / 2;
        const w = Math.max(1e-3, w0 * Math.exp((m.clientX - start.x) / 200));
        const c = c0 - ((m.clientY - start.y) / 200) * w0;
        state.lo = c - w / 2; state.hi = c + w / 2;
        $("wl-lo").value = state.lo.toFixed(0); $("wl-hi").value = state.hi.toFixed(0);
        redrawAll();
      };
      const up = () => { removeEventListener("mousemove", move); removeEventListener("mouseup", up); };
      addEventListener("mousemove", move);
      addEventListener("mouseup", up);
      return;
    }
    if (!v.geom) return;
    const r = v.canvas.getBoundingClientRect(), g = v.geom;
    const col = Math.floor((e.clientX - r.left - g.ox) / (g.sx * g.scale));
    let row = Math.floor((e.clientY - r.top - g.oy) / (g.sy * g.scale));
    if (v.flip) row = g.h - 1 - row;
    const size = state.meta.size;
    state.cursor[v.cols] = Math.max(0, Math.min(size[v.cols] - 1, col));
    state.cursor[v.rows] = Math.max(0, Math.min(size[v.rows] - 1, row));
    refresh();
  });
  v.canvas.addEventListener("contextmenu", (e) => e.preventDefault());
});

addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT") return;
  const k = e.key;
  if (k === "j" || k === "ArrowDown") select(state.sel + 1);
  else if (k === "k" || k === "ArrowUp") select(state.sel - 1);
  else if (k === "a") decide("accepted");
  else if (k === "r") decide("rejected");
  else if (k === "u") decide("undecided");
  else if (k === "e") exportRt(false);
  else if (k === "+" || k === "=") { state.zoom = Math.min(8, state.zoom * 1.25); redrawAll(); }
  else if (k === "-") { state.zoom = Math.max(1, state.zoom * 0.8); redrawAll(); }
  else return;
  e.preventDefault();
});
$("export").addEventListener("click", () => exportRt(false));
$("send").addEventListener("click", () => exportRt(true));
$("reviewer").addEventListener("change", () => {
  localStorage.setItem("delineate-reviewer", $("reviewer").value.trim());
  save();
});
for (const id of ["wl-lo", "wl-hi"]) {
  $(id).addEventListener("change", () => {
    state.lo = +$("wl-lo").value; state.hi = +$("wl-hi").value;
    redrawAll();
  });
}
addEventListener("resize", redrawAll);
main();
