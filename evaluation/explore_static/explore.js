// dermsim region explorer: plain JavaScript, no libraries, nothing loaded from elsewhere.
// Regions are kept in source pixels of the server's EXIF-oriented rendition of an image
// (the <img> shows exactly that rendition), so zoom only changes how they are drawn.
"use strict";

const $ = (id) => document.getElementById(id);
const SIDES = ["a", "b"];
const HANDLE = 7; // corner grab radius, in screen pixels
const COLOURS = { a: "#00a6d6", b: "#ff7a1a" };

const state = {
  info: null,
  mode: "one", // "one": two regions on image A; "two": image A and image B
  zoom: "fit",
  active: "a", // the region the next drag on empty space draws
  regions: { a: null, b: null }, // {x, y, w, h} in source pixels, or null
  panels: {}, // side -> {name, img, canvas, width, height}
  drag: null,
  busy: false,
  extra: [], // index rows loaded as images ({name, label}), kept in the image lists
  groupAsked: 0, // the latest "is image A in this index?" question (older answers are dropped)
};

// ------------------------------------------------------------------ helpers

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

function setStatus(text) {
  $("status").textContent = text;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = { error: `${response.status} ${response.statusText}` };
  }
  if (!response.ok) {
    throw new Error(body && body.error ? body.error : `${response.status} ${response.statusText}`);
  }
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function boxText(box) {
  return box ? `${box.x},${box.y},${box.w},${box.h}` : "";
}

function clamp(v, lo, hi) {
  return Math.min(Math.max(v, lo), hi);
}

// The panel a region is drawn on: both on A in one-image mode.
function panelOf(side) {
  return state.mode === "one" ? "a" : side;
}

function regionsOn(panelSide) {
  return SIDES.filter((s) => panelOf(s) === panelSide);
}

// ------------------------------------------------------------------ images

function fillImageLists(images, keep = {}) {
  for (const side of SIDES) {
    const select = $(`image-${side}`);
    const current = keep[side] ?? select.value;
    select.replaceChildren(el("option", { value: "", text: "choose an image…" }));
    for (const image of [...images, ...state.extra]) {
      select.append(el("option", { value: image.name, text: image.label }));
    }
    if (current && [...images, ...state.extra].some((i) => i.name === current)) select.value = current;
  }
}

async function refreshImages(keep = {}) {
  const { images } = await api("/api/images");
  fillImageLists(images, keep);
}

function loadImage(side, name) {
  const panel = state.panels[side];
  panel.name = name;
  if (side === "a") refreshGroup();
  const img = panel.img;
  delete img.dataset.loaded;
  for (const s of regionsOn(side)) setRegion(s, null);
  if (!name) {
    img.hidden = true;
    img.removeAttribute("src");
    panel.width = panel.height = 0;
    $(`dims-${side}`).textContent = "";
    layout(side);
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    img.onload = () => {
      panel.width = img.naturalWidth;
      panel.height = img.naturalHeight;
      img.hidden = false;
      $(`dims-${side}`).textContent =
        `${panel.width} × ${panel.height} px (EXIF orientation applied); ` +
        "region coordinates are in these pixels";
      layout(side);
      img.dataset.loaded = name; // for tests and assistive tooling: this image is ready
      resolve();
    };
    img.onerror = async () => {
      img.hidden = true;
      panel.width = panel.height = 0;
      layout(side);
      try {
        await api(img.src);
        showError(`${name}: the image could not be shown`);
      } catch (err) {
        showError(err.message);
      }
      resolve();
    };
    img.src = `/api/image/${encodeURIComponent(name)}`;
  });
}

// Size the image for the zoom, and the canvas over it.
function layout(side) {
  const panel = state.panels[side];
  const { img, canvas } = panel;
  if (!panel.width) {
    canvas.width = canvas.height = 0;
    canvas.style.width = canvas.style.height = "0px";
    return;
  }
  let scale;
  if (state.zoom === "fit") { // the panel's width, at most 60% of the window's height
    const box = panel.stage.parentElement;
    const style = getComputedStyle(box);
    const inner = box.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const roomW = Math.max(100, inner - 2);
    const roomH = Math.max(160, Math.round(window.innerHeight * 0.6));
    scale = Math.min(roomW / panel.width, roomH / panel.height);
  } else {
    scale = Number(state.zoom);
  }
  const w = Math.max(1, Math.round(panel.width * scale));
  const h = Math.max(1, Math.round(panel.height * scale));
  img.style.width = `${w}px`;
  img.style.height = `${h}px`;
  img.classList.toggle("pixelated", scale >= 2);
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(w * ratio);
  canvas.height = Math.round(h * ratio);
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h}px`;
  draw(side);
}

// Screen-pixels-per-source-pixel of a panel, as displayed now.
function scaleOf(side) {
  const panel = state.panels[side];
  const rect = panel.canvas.getBoundingClientRect();
  return panel.width ? rect.width / panel.width : 1;
}

function toSource(side, event) {
  const panel = state.panels[side];
  const rect = panel.canvas.getBoundingClientRect();
  const s = scaleOf(side);
  return {
    x: clamp((event.clientX - rect.left) / s, 0, panel.width),
    y: clamp((event.clientY - rect.top) / s, 0, panel.height),
  };
}

// ------------------------------------------------------------------ regions

function setRegion(side, box, fromInputs = false) {
  state.regions[side] = box;
  if (!fromInputs) {
    for (const k of ["x", "y", "w", "h"]) $(`${side}-${k}`).value = box ? box[k] : "";
  }
  draw(panelOf(side));
}

function readInputs(side) {
  const values = ["x", "y", "w", "h"].map((k) => $(`${side}-${k}`).value.trim());
  if (values.some((v) => v === "")) return null;
  const [x, y, w, h] = values.map(Number);
  if (![x, y, w, h].every(Number.isInteger)) return null;
  return { x, y, w, h };
}

function draw(panelSide) {
  const panel = state.panels[panelSide];
  if (!panel) return;
  const { canvas } = panel;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!panel.width) return;
  const s = (canvas.width / panel.width);
  const ratio = window.devicePixelRatio || 1;
  for (const side of regionsOn(panelSide)) {
    const box = state.regions[side];
    if (!box) continue;
    const [x, y, w, h] = [box.x * s, box.y * s, box.w * s, box.h * s];
    ctx.lineWidth = 2 * ratio;
    ctx.strokeStyle = "rgba(0,0,0,0.55)";
    ctx.strokeRect(x - ratio, y - ratio, w + 2 * ratio, h + 2 * ratio);
    ctx.strokeStyle = COLOURS[side];
    ctx.strokeRect(x, y, w, h);
    ctx.fillStyle = COLOURS[side] + "22";
    ctx.fillRect(x, y, w, h);
    ctx.fillStyle = COLOURS[side];
    for (const [cx, cy] of [[x, y], [x + w, y], [x, y + h], [x + w, y + h]]) {
      ctx.fillRect(cx - 3 * ratio, cy - 3 * ratio, 6 * ratio, 6 * ratio);
    }
    ctx.font = `${12 * ratio}px system-ui, sans-serif`;
    ctx.fillText(side.toUpperCase(), x + 4 * ratio, y + 14 * ratio);
  }
}

// What a press at screen point p (source coords src) grabs on a panel.
function hitTest(panelSide, src) {
  const tol = HANDLE / scaleOf(panelSide);
  // the active region first, so overlapping regions stay reachable
  const order = regionsOn(panelSide).sort((x, y) => (y === state.active) - (x === state.active));
  for (const side of order) {
    const b = state.regions[side];
    if (!b) continue;
    const corners = { nw: [b.x, b.y], ne: [b.x + b.w, b.y], sw: [b.x, b.y + b.h], se: [b.x + b.w, b.y + b.h] };
    for (const [name, [cx, cy]] of Object.entries(corners)) {
      if (Math.abs(src.x - cx) <= tol && Math.abs(src.y - cy) <= tol) return { side, mode: name };
    }
    if (src.x >= b.x && src.x <= b.x + b.w && src.y >= b.y && src.y <= b.y + b.h) {
      return { side, mode: "move" };
    }
  }
  return null;
}

function onPointerDown(panelSide, event) {
  if (event.button !== 0 || !state.panels[panelSide].width) return;
  event.preventDefault();
  const src = toSource(panelSide, event);
  const hit = hitTest(panelSide, src);
  let side;
  let mode;
  if (hit) {
    ({ side, mode } = hit);
  } else {
    side = state.mode === "one" ? state.active : panelSide;
    mode = "draw";
    if (state.mode === "two") $(`whole-${side}`).checked = false;
  }
  state.drag = { panelSide, side, mode, start: src, box: state.regions[side] && { ...state.regions[side] } };
  selectActive(side);
}

function onPointerMove(event) {
  const drag = state.drag;
  if (!drag) {
    for (const panelSide of SIDES) {
      const panel = state.panels[panelSide];
      if (!panel.width || event.target !== panel.canvas) continue;
      const hit = hitTest(panelSide, toSource(panelSide, event));
      const cursors = { nw: "nwse-resize", se: "nwse-resize", ne: "nesw-resize", sw: "nesw-resize", move: "move" };
      panel.canvas.style.cursor = hit ? cursors[hit.mode] : "crosshair";
    }
    return;
  }
  event.preventDefault();
  const panel = state.panels[drag.panelSide];
  const p = toSource(drag.panelSide, event);
  const W = panel.width;
  const H = panel.height;
  let box;
  if (drag.mode === "draw") {
    const x0 = Math.round(Math.min(drag.start.x, p.x));
    const y0 = Math.round(Math.min(drag.start.y, p.y));
    const x1 = Math.round(Math.max(drag.start.x, p.x));
    const y1 = Math.round(Math.max(drag.start.y, p.y));
    box = { x: x0, y: y0, w: x1 - x0, h: y1 - y0 };
  } else if (drag.mode === "move") {
    const b = drag.box;
    box = {
      x: clamp(Math.round(b.x + p.x - drag.start.x), 0, W - b.w),
      y: clamp(Math.round(b.y + p.y - drag.start.y), 0, H - b.h),
      w: b.w,
      h: b.h,
    };
  } else {
    const b = drag.box;
    let [x0, y0, x1, y1] = [b.x, b.y, b.x + b.w, b.y + b.h];
    if (drag.mode.includes("n")) y0 = Math.round(p.y);
    if (drag.mode.includes("s")) y1 = Math.round(p.y);
    if (drag.mode.includes("w")) x0 = Math.round(p.x);
    if (drag.mode.includes("e")) x1 = Math.round(p.x);
    box = {
      x: Math.min(x0, x1), y: Math.min(y0, y1), w: Math.abs(x1 - x0), h: Math.abs(y1 - y0),
    };
  }
  setRegion(drag.side, box);
}

function onPointerUp() {
  const drag = state.drag;
  if (!drag) return;
  state.drag = null;
  const box = state.regions[drag.side];
  if (!box || box.w < 1 || box.h < 1) {
    setRegion(drag.side, drag.box); // a click, not a drag: keep what was there
    return;
  }
  // one-image mode: after drawing A, the next drag draws B (and back)
  if (drag.mode === "draw" && state.mode === "one") {
    const other = drag.side === "a" ? "b" : "a";
    if (!state.regions[other]) selectActive(other);
  }
}

function selectActive(side) {
  state.active = side;
  $(`active-${side}`).checked = true;
}

// ------------------------------------------------------------------ mode and zoom

function setMode(mode) {
  state.mode = mode;
  $("panel-b").hidden = mode === "one";
  $("panel-a-title").textContent = mode === "one" ? "Image (regions A and B)" : "Image A";
  for (const side of SIDES) {
    $(`region-${side}`).querySelector(".whole").hidden = mode === "one";
    $(`region-${side}`).querySelector(".active").hidden = mode === "two";
    if (mode === "one") {
      $(`whole-${side}`).checked = false;
      toggleWhole(side);
    }
  }
  setRegion("a", null);
  setRegion("b", null);
  selectActive("a");
  if (mode === "two" && !state.panels.b.name && state.panels.a.name) {
    $("image-b").value = state.panels.a.name;
    loadImage("b", state.panels.a.name);
  }
  for (const side of SIDES) layout(side);
}

function toggleWhole(side) {
  const whole = $(`whole-${side}`).checked;
  for (const k of ["x", "y", "w", "h"]) $(`${side}-${k}`).disabled = whole;
  if (whole) setRegion(side, null);
}

// ------------------------------------------------------------------ comparing

function request() {
  const a = state.panels.a.name;
  const b = state.mode === "one" ? a : state.panels.b.name;
  if (!a || !b) throw new Error(state.mode === "one" ? "choose an image first" : "choose both images first");
  const boxes = {};
  for (const side of SIDES) {
    const typed = readInputs(side);
    const whole = state.mode === "two" && $(`whole-${side}`).checked;
    if (whole) {
      boxes[side] = "";
    } else if (typed) {
      boxes[side] = boxText(typed);
    } else if (state.mode === "two" && !state.regions[side]) {
      boxes[side] = ""; // no region drawn: the whole image
    } else {
      throw new Error(`draw region ${side.toUpperCase()} (or type x, y, w, h) first`);
    }
  }
  return { image_a: a, box_a: boxes.a, image_b: b, box_b: boxes.b };
}

async function compare() {
  if (state.busy) return;
  clearError();
  let body;
  try {
    body = request();
  } catch (err) {
    showError(err.message);
    return;
  }
  state.busy = true;
  $("compare").disabled = true;
  setStatus(`scoring with ${state.info.scorers.length} scorers…`);
  try {
    const result = await api("/api/compare", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    showResult(result);
    await refreshHistory();
    setStatus(`${result.id} done`);
  } catch (err) {
    showError(err.message);
    setStatus("");
  } finally {
    state.busy = false;
    $("compare").disabled = false;
  }
}

function scorerLabel(s) {
  // kind · backbone · who trained it (run) · heads · exporter (bridge.core.runtime.model_label)
  return s.synthetic ? `${s.label} (synthetic)` : s.label;
}

function showResult(result) {
  $("results-section").hidden = false;
  const where = (name, box) => `${name}${box ? ` [${box}]` : " (whole)"}`;
  $("results-caption").textContent =
    `${result.id}: ${where(result.image_a, result.box_a)} vs ${where(result.image_b, result.box_b)}`;
  const tbody = $("results").querySelector("tbody");
  tbody.replaceChildren();
  for (const r of result.results) {
    const cell = r.error
      ? el("td", { class: "failed", text: r.error })
      : el("td", {
        class: "num", "data-testid": "distance", "data-value": String(r.distance),
        title: String(r.distance), text: r.distance.toFixed(6),
      });
    tbody.append(el("tr", { "data-testid": "result-row", "data-scorer": r.scorer },
      el("td", { text: scorerLabel(r), title: r.scorer }), cell));
  }
  const crops = $("crops");
  crops.replaceChildren();
  for (const c of result.crops) {
    crops.append(el("figure", { "data-testid": "crops" },
      el("div", { class: "pair" },
        el("img", { src: c.a, alt: `Region A as fed to the scorers, ${c.size[1]}×${c.size[0]} px`, "data-testid": "crop-a" }),
        el("img", { src: c.b, alt: `Region B as fed to the scorers, ${c.size[1]}×${c.size[0]} px`, "data-testid": "crop-b" })),
      el("figcaption", { text: c.fitted
        ? `A and B fitted to ${c.size[1]}×${c.size[0]} (${c.policy.replaceAll("_", " ")}): their sizes differ or the scorer needs its own`
        : `A and B at their own size, ${c.size[1]}×${c.size[0]}, as the reference packages score them` })));
  }
  const maps = $("maps");
  maps.replaceChildren();
  for (const m of result.maps) {
    maps.append(el("figure", { "data-testid": "heat-map" },
      el("img", { src: m.image, alt: `Distance map of ${m.label}` }),
      el("figcaption", { text: `${m.label}, over A; max ${m.max.toFixed(3)}, mean ${m.mean.toFixed(3)}` })));
  }
  $("map-legend").hidden = result.maps.length === 0;
}

// ------------------------------------------------------------------ find similar

function setupSimilar(info) {
  const select = $("index");
  select.replaceChildren();
  for (const index of info.indexes) {
    select.append(el("option", {
      value: index.id,
      text: `${index.label}${index.synthetic ? " (synthetic)" : ""}`,
      title: `${index.id}: ${index.count} rows, ${index.dim}-d ${index.tap}/${index.pooling} at ${index.size} px, ${index.search} search`,
    }));
  }
  const none = info.indexes.length === 0;
  if (none) select.append(el("option", { value: "", text: "no index open" }));
  for (const id of ["index", "k", "find-similar"]) $(id).disabled = none;
  $("no-index").hidden = !none;
  $("k").value = info.default_k;
  $("k").max = info.max_k;
  const problems = $("index-problems");
  problems.replaceChildren(...info.index_problems.map((p) => el("li", { text: p })));
  problems.hidden = info.index_problems.length === 0;
}

// Whether image A is in the chosen index: "exclude this lesion" is offered only then.
async function refreshGroup() {
  const box = $("exclude-own");
  const label = $("exclude-own-label");
  const asked = ++state.groupAsked;
  const index = $("index").value;
  const image = state.panels.a && state.panels.a.name;
  box.disabled = true;
  label.title = "Image A is not in this index";
  if (!index || !image) {
    box.checked = false;
    return;
  }
  try {
    const params = new URLSearchParams({ index, image });
    const { group } = await api(`/api/similar/group?${params}`);
    if (asked !== state.groupAsked) return; // another image or index was chosen meanwhile
    box.disabled = group.length === 0;
    box.checked = group.length > 0; // by default, the query's own lesion is no answer
    label.title = group.length
      ? `Leave out the index's copies of image A, with their lesion and patient: ${group.join(", ")}`
      : "Image A is not in this index";
  } catch (err) {
    if (asked === state.groupAsked) label.title = err.message;
  }
}

function similarRequest() {
  const image = state.panels.a.name;
  if (!image) throw new Error("choose image A first");
  const whole = state.mode === "two" && $("whole-a").checked;
  const typed = readInputs("a");
  const k = Number($("k").value || state.info.default_k);
  return {
    index: $("index").value,
    image,
    box: whole || !typed ? "" : boxText(typed), // no region A: the whole image
    k,
    exclude_own: !$("exclude-own").disabled && $("exclude-own").checked,
  };
}

async function findSimilar() {
  if (state.busy) return;
  clearError();
  let body;
  try {
    body = similarRequest();
  } catch (err) {
    showError(err.message);
    return;
  }
  state.busy = true;
  $("find-similar").disabled = true;
  $("similar-status").textContent = `searching ${body.index}…`;
  try {
    const result = await api("/api/similar", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    showNeighbours(result);
    $("similar-status").textContent =
      `${result.neighbours.length} nearest of ${result.count} (${result.search} search, ` +
      `${Math.round(result.seconds * 1000)} ms)`;
  } catch (err) {
    showError(err.message);
    $("similar-status").textContent = "";
  } finally {
    state.busy = false;
    $("find-similar").disabled = false;
  }
}

function showNeighbours(result) {
  const index = state.info.indexes.find((i) => i.id === result.index);
  $("similar-results").hidden = false;
  const where = result.box ? `region A [${result.box}] of ${result.image}` : `${result.image} (whole)`;
  $("similar-caption").textContent =
    `Nearest to ${where} in ${index ? index.label : result.index}` +
    (result.excluded.length ? `; left out: ${result.excluded.join(", ")}` : "");
  const grid = $("neighbours");
  grid.replaceChildren(el("figure", { class: "query", "data-testid": "similar-query" },
    el("img", { src: result.query.image, alt: `Region A as embedded, ${result.query.size[1]}×${result.query.size[0]} px` }),
    el("figcaption", {}, el("b", { text: "query" }), el("br"),
      `region A as embedded, ${result.query.size[1]}×${result.query.size[0]}`)));
  for (const hit of result.neighbours) {
    const who = [hit.label || "no label", hit.lesion_id || hit.patient_id].filter(Boolean).join(" · ");
    const button = el("button", {
      type: "button", class: "thumb", title: `${hit.id}${hit.box ? ` [${hit.box}]` : ""}: load as image B`,
    }, el("img", {
      src: hit.thumb, alt: `Neighbour ${hit.rank}: ${hit.id}`, "data-testid": "neighbour-thumb", loading: "lazy",
    }));
    button.addEventListener("click", () => loadNeighbour(hit, result.index));
    grid.append(el("figure", { class: "neighbour", "data-testid": "neighbour", "data-id": hit.id },
      button,
      el("figcaption", {},
        el("b", { text: `#${hit.rank} ` }),
        el("span", {
          class: "num", "data-testid": "neighbour-distance", "data-value": String(hit.distance),
          title: String(hit.distance), text: hit.distance.toFixed(6),
        }),
        el("br"),
        el("span", { class: "who", text: who, title: hit.id }))));
  }
}

// A neighbour as image B (two-image mode; region A kept), its indexed region as region B.
async function loadNeighbour(hit, index) {
  clearError();
  if (!state.extra.some((i) => i.name === hit.image)) {
    state.extra.push({ name: hit.image, label: `${hit.id} (index ${index})` });
    await refreshImages();
  }
  $("image-b").value = hit.image;
  if (state.mode === "one") {
    const keep = state.regions.a;
    state.panels.b.name = hit.image; // so that setMode does not load image A as B
    $("mode-two").checked = true;
    setMode("two");
    if (keep) setRegion("a", keep);
  }
  await loadImage("b", hit.image);
  const box = hit.box ? hit.box.split(",").map(Number) : null;
  $("whole-b").checked = !box;
  toggleWhole("b");
  if (box) setRegion("b", { x: box[0], y: box[1], w: box[2], h: box[3] });
  $("panel-b").scrollIntoView({ block: "nearest" });
  setStatus(`${hit.id} loaded as image B: Compare scores region A against it`);
}

// ------------------------------------------------------------------ history

async function refreshHistory() {
  const { history } = await api("/api/history");
  const scorers = state.info.scorers;
  const head = el("tr", {},
    ...["#", "Image A", "Region A", "Image B", "Region B"].map((t) => el("th", { scope: "col", text: t })),
    ...scorers.map((s) => el("th", { scope: "col", class: "num", title: s.id, text: scorerLabel(s) })));
  $("history").querySelector("thead").replaceChildren(head);
  const tbody = $("history").querySelector("tbody");
  tbody.replaceChildren();
  for (const row of history) {
    tbody.append(el("tr", { "data-testid": "history-row" },
      el("td", { text: row.id }), el("td", { text: row.image_a }), el("td", { text: row.box_a || "whole" }),
      el("td", { text: row.image_b }), el("td", { text: row.box_b || "whole" }),
      ...scorers.map((s) => {
        const d = row.distances[s.id];
        return el("td", { class: "num", text: d === null || d === undefined ? "–" : d.toFixed(6) });
      })));
  }
  $("download-csv").hidden = history.length === 0;
  $("clear-history").disabled = history.length === 0;
}

// ------------------------------------------------------------------ uploads

async function upload(side, input) {
  const file = input.files && input.files[0];
  input.value = "";
  if (!file) return;
  clearError();
  if (file.size > state.info.max_upload_bytes) {
    showError(`${file.name}: ${file.size} bytes exceeds the upload limit of ${state.info.max_upload_bytes} bytes`);
    return;
  }
  setStatus(`uploading ${file.name}…`);
  try {
    const result = await api(`/api/upload?name=${encodeURIComponent(file.name)}`, {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: file,
    });
    await refreshImages();
    $(`image-${side}`).value = result.name;
    await loadImage(side, result.name);
    setStatus(`${file.name}: ${result.width} × ${result.height} px`);
  } catch (err) {
    showError(`Upload failed: ${err.message}`);
    setStatus("");
  }
}

// ------------------------------------------------------------------ start

// One panel and one region fieldset per side, from the page's templates.
function stampSides() {
  for (const [template, before] of [["panel-template", null], ["region-template", "actions"]]) {
    const tpl = $(template);
    for (const side of SIDES) {
      const html = tpl.innerHTML.replaceAll("{side}", side).replaceAll("{SIDE}", side.toUpperCase());
      const where = before ? tpl.parentElement.querySelector(`.${before}`) : null;
      if (where) where.insertAdjacentHTML("beforebegin", html);
      else tpl.parentElement.insertAdjacentHTML("beforeend", html);
    }
  }
  $("panel-b").hidden = true;
  $("active-a").checked = true;
}

async function start() {
  stampSides();
  for (const side of SIDES) {
    state.panels[side] = {
      name: "", width: 0, height: 0, img: $(`img-${side}`), canvas: $(`canvas-${side}`), stage: $(`stage-${side}`),
    };
    const canvas = $(`canvas-${side}`);
    canvas.addEventListener("mousedown", (e) => onPointerDown(side, e));
    $(`image-${side}`).addEventListener("change", (e) => { clearError(); loadImage(side, e.target.value); });
    $(`upload-${side}`).addEventListener("change", (e) => upload(side, e.target));
    $(`whole-${side}`).addEventListener("change", () => toggleWhole(side));
    $(`active-${side}`).addEventListener("change", () => { state.active = side; });
    for (const k of ["x", "y", "w", "h"]) {
      $(`${side}-${k}`).addEventListener("input", () => {
        const box = readInputs(side);
        state.regions[side] = box;
        draw(panelOf(side));
      });
    }
  }
  window.addEventListener("mousemove", onPointerMove);
  window.addEventListener("mouseup", onPointerUp);
  window.addEventListener("resize", () => SIDES.forEach(layout));
  $("mode-one").addEventListener("change", () => setMode("one"));
  $("mode-two").addEventListener("change", () => setMode("two"));
  $("zoom").addEventListener("change", (e) => { state.zoom = e.target.value; SIDES.forEach(layout); });
  $("compare").addEventListener("click", compare);
  $("find-similar").addEventListener("click", findSimilar);
  $("index").addEventListener("change", refreshGroup);
  $("clear-regions").addEventListener("click", () => { setRegion("a", null); setRegion("b", null); selectActive("a"); });
  $("error-close").addEventListener("click", clearError);
  $("clear-history").addEventListener("click", async () => {
    try {
      await api("/api/history/clear", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
      await refreshHistory();
    } catch (err) {
      showError(err.message);
    }
  });

  try {
    state.info = await api("/api/info");
    const n = state.info.scorers.length;
    const kinds = [...new Set(state.info.scorers.map((s) => s.metric.toUpperCase()))].join(" / ");
    const m = state.info.indexes.length;
    $("summary").textContent = `${n} scorer${n === 1 ? "" : "s"} loaded (${kinds}, onnxruntime)` +
      (state.info.images_dir ? `; images from ${state.info.images_dir}/` : "; no image folder: upload images") +
      (m ? `; ${m} archive index${m === 1 ? "" : "es"}` : "");
    $("synthetic-badge").hidden = !(state.info.synthetic_images || state.info.scorers.some((s) => s.synthetic));
    setupSimilar(state.info);
    await refreshImages();
    await refreshHistory();
    document.body.dataset.ready = "true";
  } catch (err) {
    showError(`The explorer could not start: ${err.message}`);
  }
}

document.addEventListener("DOMContentLoaded", start);
