// dermsim region explorer: plain JavaScript, no libraries, nothing loaded from elsewhere.
// Regions are kept in source pixels of the server's EXIF-oriented rendition of an image
// (the <img> shows exactly that rendition), so zoom only changes how they are drawn.
"use strict";

const $ = (id) => document.getElementById(id);
const SIDES = ["a", "b"];
const HANDLE = 7; // corner / vertex grab radius, in screen pixels
const COLOURS = { a: "#00a6d6", b: "#ff7a1a" };
const MIN_STEP = 2; // an outline's points are at least this far apart, in source pixels
const MAX_POINTS = 400; // most points an outline keeps (a free-hand stroke is thinned to it)
const SIMPLIFY = 1; // a free-hand stroke keeps its shape to within this many source pixels

const state = {
  info: null,
  mode: "one", // "one": two regions on image A; "two": image A and image B
  zoom: "fit",
  active: "a", // the region the next drag on empty space draws
  tool: "box", // what a drag or click on empty space draws: "box", "polygon" or "freehand"
  regions: { a: null, b: null }, // {x, y, w, h} in source pixels, or null
  outlines: { a: null, b: null }, // {points: [[x, y], ...] in source pixels, closed}, or null
  drawing: null, // the side whose outline is being drawn (not yet closed)
  drawingOver: null, // what that side had before ({box, outline}): Esc puts it back
  selected: null, // {side, index}: the outline vertex Delete removes
  pointer: null, // the pointer in source pixels while an outline is drawn
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

// A side's region is a box ({x, y, w, h}), an outline ({points: [[x, y], ...], closed}) or
// nothing (the whole image in two-image mode); both in source pixels, drawn at any zoom.

function setRegion(side, box, fromInputs = false) {
  state.regions[side] = box;
  state.outlines[side] = null; // a box (or nothing) replaces an outline
  if (state.drawing === side) state.drawing = null;
  if (state.selected && state.selected.side === side) state.selected = null;
  if (!fromInputs) syncInputs(side);
  draw(panelOf(side));
}

function setOutline(side, outline) {
  state.regions[side] = null;
  state.outlines[side] = outline;
  syncInputs(side);
  draw(panelOf(side));
}

// The inputs show a box, or an outline's bounding box (read-only: edit the outline itself).
function syncInputs(side) {
  const outline = state.outlines[side];
  const box = outline ? outlineBounds(outline.points) : state.regions[side];
  const whole = state.mode === "two" && $(`whole-${side}`).checked;
  for (const k of ["x", "y", "w", "h"]) {
    $(`${side}-${k}`).value = box ? box[k] : "";
    $(`${side}-${k}`).disabled = whole || Boolean(outline);
  }
  const note = $(`${side}-outline`);
  note.hidden = !outline;
  if (!outline) return;
  const n = outline.points.length;
  note.textContent = outline.closed
    ? `outline, ${n} points (bounding box shown)`
    : `outline being drawn, ${n} point${n === 1 ? "" : "s"}: double-click, Enter or its first point closes it`;
  note.dataset.points = String(n);
  note.dataset.closed = String(outline.closed);
}

function outlineBounds(points) {
  if (!points.length) return null;
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const x = Math.floor(Math.min(...xs));
  const y = Math.floor(Math.min(...ys));
  return { x, y, w: Math.ceil(Math.max(...xs)) - x, h: Math.ceil(Math.max(...ys)) - y };
}

// "x1,y1 x2,y2 ..." in source pixels: what the server's parse_polygon reads.
function outlineText(points) {
  return points.map(([x, y]) => `${x},${y}`).join(" ");
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
  ctx.lineWidth = 2 * ratio;
  ctx.font = `${12 * ratio}px system-ui, sans-serif`;
  for (const side of regionsOn(panelSide)) {
    if (state.outlines[side]) {
      drawOutline(ctx, side, s, ratio);
      continue;
    }
    const box = state.regions[side];
    if (!box) continue;
    const [x, y, w, h] = [box.x * s, box.y * s, box.w * s, box.h * s];
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
    ctx.fillText(side.toUpperCase(), x + 4 * ratio, y + 14 * ratio);
  }
}

// An outline: its path (dashed on to the pointer while being drawn) and its vertices.
function drawOutline(ctx, side, s, ratio) {
  const { points, closed } = state.outlines[side];
  const screen = points.map(([x, y]) => [x * s, y * s]);
  const path = new Path2D();
  screen.forEach(([x, y], i) => (i ? path.lineTo(x, y) : path.moveTo(x, y)));
  if (closed) path.closePath();
  if (closed) {
    ctx.fillStyle = COLOURS[side] + "22";
    ctx.fill(path);
  }
  ctx.strokeStyle = "rgba(0,0,0,0.55)";
  ctx.lineWidth = 4 * ratio;
  ctx.stroke(path);
  ctx.strokeStyle = COLOURS[side];
  ctx.lineWidth = 2 * ratio;
  ctx.stroke(path);
  if (!closed && state.drawing === side && state.pointer && screen.length) {
    const [x, y] = screen[screen.length - 1];
    ctx.setLineDash([4 * ratio, 4 * ratio]);
    ctx.beginPath();
    ctx.moveTo(x, y);
    ctx.lineTo(state.pointer.x * s, state.pointer.y * s);
    ctx.stroke();
    ctx.setLineDash([]);
  }
  const selected = state.selected && state.selected.side === side ? state.selected.index : -1;
  screen.forEach(([x, y], i) => {
    const r = (i === selected ? 4.5 : 3) * ratio;
    ctx.fillStyle = i === selected ? "#ffffff" : COLOURS[side];
    ctx.fillRect(x - r, y - r, 2 * r, 2 * r);
    ctx.strokeStyle = "rgba(0,0,0,0.7)";
    ctx.lineWidth = ratio;
    ctx.strokeRect(x - r, y - r, 2 * r, 2 * r);
  });
  ctx.lineWidth = 2 * ratio;
  if (screen.length) {
    ctx.fillStyle = COLOURS[side];
    ctx.fillText(side.toUpperCase(), screen[0][0] + 6 * ratio, screen[0][1] - 6 * ratio);
  }
}

// What a press at source point src grabs on a panel: an outline's vertex, a box's corner
// or inside, or nothing.
function hitTest(panelSide, src) {
  const tol = HANDLE / scaleOf(panelSide);
  // the active region first, so overlapping regions stay reachable
  const order = regionsOn(panelSide).sort((x, y) => (y === state.active) - (x === state.active));
  for (const side of order) {
    const outline = state.outlines[side];
    if (!outline) continue;
    const index = outline.points.findIndex(([x, y]) => Math.abs(src.x - x) <= tol && Math.abs(src.y - y) <= tol);
    if (index >= 0) return { side, mode: "vertex", index };
  }
  if (state.tool !== "box") return null; // outlines are drawn over boxes, not moved with them
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

// The side a new region on this panel is for.
function targetSide(panelSide) {
  return state.mode === "one" ? state.active : panelSide;
}

function onPointerDown(panelSide, event) {
  if (event.button !== 0 || !state.panels[panelSide].width) return;
  event.preventDefault();
  state.panels[panelSide].canvas.focus({ preventScroll: true }); // its keys: Enter, Delete, Esc
  const src = toSource(panelSide, event);
  const point = [Math.round(src.x), Math.round(src.y)];
  const hit = hitTest(panelSide, src);
  const drawing = state.drawing && panelOf(state.drawing) === panelSide ? state.drawing : null;
  if (hit && hit.mode === "vertex") {
    const outline = state.outlines[hit.side];
    if (hit.side === drawing && hit.index === 0 && outline.points.length >= 3) {
      finishOutline(hit.side); // a click on the first point closes the outline
      return;
    }
    state.selected = { side: hit.side, index: hit.index };
    state.drag = { panelSide, side: hit.side, mode: "vertex", index: hit.index };
    selectActive(hit.side);
    draw(panelSide);
    return;
  }
  if (drawing) { // a polygon being drawn: one more point
    addPoint(drawing, point);
    return;
  }
  settleDrawing(); // one being drawn on the other panel
  const side = hit ? hit.side : targetSide(panelSide);
  const before = { box: state.regions[side] && { ...state.regions[side] }, outline: state.outlines[side] };
  if (!hit && state.mode === "two") $(`whole-${side}`).checked = false;
  state.selected = null;
  selectActive(side);
  if (hit) {
    state.drag = { panelSide, side, mode: hit.mode, start: src, box: before.box, before };
  } else if (state.tool === "box") {
    state.drag = { panelSide, side, mode: "draw", start: src, box: before.box, before };
  } else {
    state.drawing = side;
    state.drawingOver = before;
    setOutline(side, { points: [point], closed: false, freehand: state.tool === "freehand" });
    if (state.tool === "freehand") state.drag = { panelSide, side, mode: "freehand", before };
  }
}

// A point for an outline being drawn: dropped when closer than MIN_STEP to the last one
// (a double-click's second press, a slow free-hand stroke); clicks stop at MAX_POINTS.
function addPoint(side, point, capped = true) {
  const { points } = state.outlines[side];
  const last = points[points.length - 1];
  if (last && Math.hypot(point[0] - last[0], point[1] - last[1]) < MIN_STEP) return;
  if (capped && points.length >= MAX_POINTS) {
    setStatus(`an outline holds at most ${MAX_POINTS} points`);
    return;
  }
  points.push(point);
  syncInputs(side);
  draw(panelOf(side));
}

// Close the outline being drawn (at least 3 points; a free-hand one is simplified first).
// Returns whether it was closed.
function finishOutline(side) {
  const outline = state.outlines[side];
  if (!outline || outline.closed) return false;
  const points = outline.freehand ? thin(simplify(outline.points, SIMPLIFY)) : outline.points;
  if (points.length < 3) {
    setStatus("an outline needs at least 3 points");
    return false;
  }
  outline.points = points;
  outline.closed = true;
  state.drawing = null;
  state.selected = null;
  setOutline(side, outline);
  setStatus(`outline ${side.toUpperCase()}: ${outline.points.length} points`);
  if (state.mode === "one") nextActive(side);
  return true;
}

// Ramer-Douglas-Peucker: the fewest points of a stroke that stay within `tolerance`
// (source pixels) of every point dropped.
function simplify(points, tolerance) {
  if (points.length <= 3) return points;
  const [ax, ay] = points[0];
  const [bx, by] = points[points.length - 1];
  const length = Math.hypot(bx - ax, by - ay);
  let far = 0;
  let index = 0;
  for (let i = 1; i < points.length - 1; i++) {
    const [px, py] = points[i];
    const d = length > 0
      ? Math.abs((bx - ax) * (ay - py) - (ax - px) * (by - ay)) / length
      : Math.hypot(px - ax, py - ay);
    if (d > far) [far, index] = [d, i];
  }
  if (far <= tolerance) return [points[0], points[points.length - 1]];
  const left = simplify(points.slice(0, index + 1), tolerance);
  return [...left.slice(0, -1), ...simplify(points.slice(index), tolerance)];
}

// At most MAX_POINTS points, evenly spread along the list (a long free-hand stroke).
function thin(points) {
  if (points.length <= MAX_POINTS) return points;
  const step = points.length / MAX_POINTS;
  return Array.from({ length: MAX_POINTS }, (_, i) => points[Math.floor(i * step)]);
}

// Drop the outline being drawn; the side gets back what it had before.
function cancelOutline() {
  const side = state.drawing;
  if (!side) return;
  state.drawing = null;
  state.drag = null;
  restore(side, state.drawingOver || {});
  setStatus(`outline ${side.toUpperCase()} cancelled`);
}

// Backspace / Delete: the selected vertex (of the outline being drawn, if one is), else
// the last point of the outline being drawn. A closed outline keeps at least 3 points.
function deletePoint() {
  const sel = state.selected;
  const onSelected = sel && state.outlines[sel.side] && (!state.drawing || state.drawing === sel.side);
  const side = onSelected ? sel.side : state.drawing;
  if (!side) return;
  const outline = state.outlines[side];
  if (outline.closed && outline.points.length <= 3) {
    setStatus("an outline keeps at least 3 points (Clear removes it)");
    return;
  }
  const index = onSelected ? sel.index : outline.points.length - 1;
  outline.points.splice(index, 1);
  state.selected = null;
  if (!outline.points.length) {
    cancelOutline();
    return;
  }
  setOutline(side, outline);
  setStatus(`outline ${side.toUpperCase()}: point ${index + 1} removed`);
}

function onPointerMove(event) {
  const drag = state.drag;
  if (state.drawing) {
    const panelSide = panelOf(state.drawing);
    state.pointer = toSource(panelSide, event);
    if (!drag) draw(panelSide);
  }
  if (!drag) {
    for (const panelSide of SIDES) {
      const panel = state.panels[panelSide];
      if (!panel.width || event.target !== panel.canvas) continue;
      const hit = hitTest(panelSide, toSource(panelSide, event));
      const cursors = { nw: "nwse-resize", se: "nwse-resize", ne: "nesw-resize", sw: "nesw-resize", move: "move", vertex: "grab" };
      panel.canvas.style.cursor = hit ? cursors[hit.mode] : "crosshair";
    }
    return;
  }
  event.preventDefault();
  const panel = state.panels[drag.panelSide];
  const p = toSource(drag.panelSide, event);
  const W = panel.width;
  const H = panel.height;
  if (drag.mode === "vertex" || drag.mode === "freehand") {
    const outline = state.outlines[drag.side];
    const point = [Math.round(p.x), Math.round(p.y)];
    if (drag.mode === "vertex") outline.points[drag.index] = point;
    else addPoint(drag.side, point, false); // thinned when the stroke ends
    setOutline(drag.side, outline);
    return;
  }
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
  if (drag.mode === "vertex") return;
  if (drag.mode === "freehand") {
    if (!finishOutline(drag.side)) { // a click or a straight stroke: keep what was there
      state.drawing = null;
      restore(drag.side, drag.before);
    }
    return;
  }
  const box = state.regions[drag.side];
  if (!box || box.w < 1 || box.h < 1) {
    restore(drag.side, drag.before); // a click, not a drag: keep what was there
    return;
  }
  if (drag.mode === "draw" && state.mode === "one") nextActive(drag.side);
}

function restore(side, before) {
  if (before.outline) setOutline(side, before.outline);
  else setRegion(side, before.box || null);
}

// One-image mode: after drawing A, the next region drawn is B (and back), if it has none.
function nextActive(side) {
  const other = side === "a" ? "b" : "a";
  if (!state.regions[other] && !state.outlines[other]) selectActive(other);
}

function selectActive(side) {
  state.active = side;
  $(`active-${side}`).checked = true;
}

function clearRegion(side) {
  setRegion(side, null);
  setStatus("");
}

// ------------------------------------------------------------------ tools and keys

const TOOL_HELP = {
  box: "Box: drag to draw it, drag inside to move it, drag a corner to resize it.",
  polygon: "Polygon: click the points; double-click, Enter or the first point closes it.",
  freehand: "Free-hand: press and drag around the lesion; releasing closes it.",
};

// An unfinished outline: closed if it can be, else dropped.
function settleDrawing() {
  if (state.drawing && !finishOutline(state.drawing)) cancelOutline();
}

function setTool(tool) {
  settleDrawing();
  state.tool = tool;
  $(`tool-${tool}`).checked = true;
  const help = `${TOOL_HELP[tool]} Drag a vertex to move it; Delete removes the selected (or last) point; Esc cancels an unfinished outline.`;
  $("tool-help").textContent = help;
  $("tool-help").title = help; // one line, cut on narrow windows: the whole text on hover
}

// One zoom level up (+1) or down (-1) from the scale shown now ("fit" included).
function stepZoom(step) {
  const select = $("zoom");
  const levels = [...select.options].map((o) => o.value).filter((v) => v !== "fit").map(Number);
  const now = state.zoom === "fit" ? scaleOf("a") : Number(state.zoom);
  const next = step > 0
    ? levels.find((level) => level > now * 1.01)
    : [...levels].reverse().find((level) => level < now * 0.99);
  if (next === undefined) return;
  select.value = String(next);
  state.zoom = select.value;
  SIDES.forEach(layout);
}

function onKeyDown(event) {
  const target = event.target;
  const typing = target instanceof HTMLSelectElement || target instanceof HTMLTextAreaElement ||
    (target instanceof HTMLInputElement && !["radio", "checkbox"].includes(target.type));
  if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key;
  const tools = { b: "box", p: "polygon", f: "freehand" };
  if (tools[key.toLowerCase()]) {
    setTool(tools[key.toLowerCase()]);
  } else if (key === "+" || key === "=") {
    stepZoom(1);
  } else if (key === "-") {
    stepZoom(-1);
  } else if (key === "Escape" && state.drawing) {
    cancelOutline();
  } else if (key === "Enter" && state.drawing && !(target instanceof HTMLButtonElement)) {
    finishOutline(state.drawing);
  } else if ((key === "Backspace" || key === "Delete") && (state.drawing || state.selected)) {
    deletePoint();
  } else {
    return;
  }
  event.preventDefault();
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
  if ($(`whole-${side}`).checked) setRegion(side, null);
  else syncInputs(side);
}

// ------------------------------------------------------------------ comparing

function request() {
  const a = state.panels.a.name;
  const b = state.mode === "one" ? a : state.panels.b.name;
  if (!a || !b) throw new Error(state.mode === "one" ? "choose an image first" : "choose both images first");
  const body = { image_a: a, image_b: b };
  for (const side of SIDES) {
    const outline = state.outlines[side];
    const typed = readInputs(side);
    const whole = state.mode === "two" && $(`whole-${side}`).checked;
    if (outline && !outline.closed) {
      throw new Error(`finish outline ${side.toUpperCase()} first (double-click, Enter or click its first point)`);
    } else if (outline) {
      body[`polygon_${side}`] = outlineText(outline.points); // one or the other per side
    } else if (whole) {
      body[`box_${side}`] = "";
    } else if (typed) {
      body[`box_${side}`] = boxText(typed);
    } else if (state.mode === "two" && !state.regions[side]) {
      body[`box_${side}`] = ""; // no region drawn: the whole image
    } else {
      throw new Error(`draw region ${side.toUpperCase()} (or type x, y, w, h) first`);
    }
  }
  return body;
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

// A side of a comparison or history row, in words: [x,y,w,h], an outline, or (whole).
function regionText(row, side) {
  const polygon = row[`polygon_${side}`];
  if (polygon) {
    const bounds = row[`outline_box_${side}`];
    return `outline (${polygon.split(" ").length} points${bounds ? `, bounding box ${bounds}` : ""})`;
  }
  const box = row[`box_${side}`];
  return box ? `[${box}]` : "(whole)";
}

function scorerLabel(s) {
  // kind · backbone · who trained it (run) · heads · exporter (bridge.core.runtime.model_label)
  return s.synthetic ? `${s.label} (synthetic)` : s.label;
}

function showResult(result) {
  $("results-section").hidden = false;
  const where = (s) => `${result[`image_${s}`]} ${regionText(result, s)}`;
  $("results-caption").textContent = `${result.id}: ${where("a")} vs ${where("b")}`;
  // with an outline, what each scorer compared: the outline (masked scorers) or its bounding box
  const outlined = result.results.some((r) => r.region);
  $("results").querySelector("thead tr").replaceChildren(
    el("th", { scope: "col", text: "Scorer" }),
    ...(outlined ? [el("th", { scope: "col", text: "Region", title: "What the scorer compared" })] : []),
    el("th", { scope: "col", class: "num", text: "Distance" }));
  const tbody = $("results").querySelector("tbody");
  tbody.replaceChildren();
  for (const r of result.results) {
    const cell = r.error
      ? el("td", { class: "failed", text: r.error })
      : el("td", {
        class: "num", "data-testid": "distance", "data-value": String(r.distance),
        title: String(r.distance), text: r.distance.toFixed(6),
      });
    const region = outlined ? [el("td", {
      "data-testid": "region", "data-value": r.region,
      title: r.region === "outline" ? "a masked scorer: the regions weighed by their outlines"
        : "no mask inputs: the outline's bounding box was scored",
      text: r.region === "outline" ? "outline" : "bounding box",
    })] : [];
    tbody.append(el("tr", { "data-testid": "result-row", "data-scorer": r.scorer },
      el("td", { text: scorerLabel(r), title: r.scorer }), ...region, cell));
  }
  const crops = $("crops");
  crops.replaceChildren();
  for (const c of result.crops) {
    crops.append(el("figure", { "data-testid": "crops" },
      el("div", { class: "pair" },
        el("img", { src: c.a, alt: `Region A as fed to the scorers, ${c.size[1]}×${c.size[0]} px`, "data-testid": "crop-a" }),
        el("img", { src: c.b, alt: `Region B as fed to the scorers, ${c.size[1]}×${c.size[0]} px`, "data-testid": "crop-b" })),
      el("figcaption", { text: (c.fitted
        ? `A and B fitted to ${c.size[1]}×${c.size[0]} (${c.policy.replaceAll("_", " ")}): their sizes differ or the scorer needs its own`
        : `A and B at their own size, ${c.size[1]}×${c.size[0]}, as the reference packages score them`) +
        (c.outline ? "; dimmed outside the outline (masked scorers weigh it out, the others see the whole bounding box)" : "") })));
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
  const outline = state.outlines.a;
  const k = Number($("k").value || state.info.default_k);
  const body = { index: $("index").value, image, k, exclude_own: !$("exclude-own").disabled && $("exclude-own").checked };
  if (outline && !outline.closed) throw new Error("finish outline A first (double-click, Enter or click its first point)");
  if (outline) body.polygon = outlineText(outline.points); // pooled under the outline
  else body.box = whole || !typed ? "" : boxText(typed); // no region A: the whole image
  return body;
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
  const where = result.polygon ? `the bounding box [${result.box}] of outline A of ${result.image}`
    : result.box ? `region A [${result.box}] of ${result.image}` : `${result.image} (whole)`;
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
    settleDrawing();
    const keep = { box: state.regions.a, outline: state.outlines.a };
    state.panels.b.name = hit.image; // so that setMode does not load image A as B
    $("mode-two").checked = true;
    setMode("two");
    restore("a", keep);
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
      el("td", { text: row.id }),
      el("td", { text: row.image_a }), el("td", { text: regionText(row, "a"), title: row.polygon_a || row.box_a }),
      el("td", { text: row.image_b }), el("td", { text: regionText(row, "b"), title: row.polygon_b || row.box_b }),
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
    canvas.addEventListener("dblclick", (e) => {
      if (state.drawing && panelOf(state.drawing) === side) {
        e.preventDefault();
        finishOutline(state.drawing);
      }
    });
    $(`clear-${side}`).addEventListener("click", () => clearRegion(side));
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
  window.addEventListener("keydown", onKeyDown);
  for (const tool of ["box", "polygon", "freehand"]) {
    $(`tool-${tool}`).addEventListener("change", () => setTool(tool));
  }
  setTool("box");
  $("zoom-in").addEventListener("click", () => stepZoom(1));
  $("zoom-out").addEventListener("click", () => stepZoom(-1));
  window.addEventListener("resize", () => SIDES.forEach(layout));
  $("mode-one").addEventListener("change", () => setMode("one"));
  $("mode-two").addEventListener("change", () => setMode("two"));
  $("zoom").addEventListener("change", (e) => { state.zoom = e.target.value; SIDES.forEach(layout); });
  $("compare").addEventListener("click", compare);
  $("find-similar").addEventListener("click", findSimilar);
  $("index").addEventListener("change", refreshGroup);
  $("clear-regions").addEventListener("click", () => { clearRegion("a"); clearRegion("b"); selectActive("a"); });
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
