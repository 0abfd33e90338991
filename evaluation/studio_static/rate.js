// The rating page: one screen at a time; an answer is committed by the server before the
// page moves on, and a failed save stays on the page with a retry.
"use strict";

// saving: an answer is on its way (input waits); failed: {position, answer} not saved;
// loading: a screen is being fetched (input waits until its images are shown).
const state = {
  me: null, position: 0, screen: null, saving: false, failed: null, loading: true,
  active: "color", draft: {},
};
const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  let response;
  try {
    response = await fetch(path, { credentials: "same-origin", cache: "no-store", ...options });
  } catch (err) {
    throw new Error("the server cannot be reached (" + err.message + ")");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(data.error || ("HTTP " + response.status));
    error.status = response.status;
    throw error;
  }
  return data;
}

function showProgress(progress) {
  state.me = { ...state.me, ...progress };
  const { answered, total } = state.me;
  $("progress-bar").style.width = (total ? (100 * answered) / total : 0) + "%";
  $("progress-text").textContent = answered + " / " + total + " answered";
}

function setSaveState(text, kind) {
  const node = $("save-state");
  node.textContent = text;
  node.className = kind || "";
}

function figure(name, caption, extraClass) {
  const fig = document.createElement("figure");
  fig.className = extraClass;
  fig.dataset.image = name;
  const img = document.createElement("img");
  img.alt = caption;
  img.src = "/api/image/" + state.position + "/" + name;
  const cap = document.createElement("figcaption");
  cap.textContent = caption;
  fig.append(img, cap);
  return fig;
}

async function load(position) {
  position = Math.max(0, Math.min(position, state.me.total - 1));
  if (state.failed && state.failed.position !== position) {
    state.failed = null; // moving on: that answer was not saved, its screen shows unanswered
    $("failure").hidden = true;
  }
  state.loading = true;
  $("load-failure").hidden = true;
  let screen;
  try {
    screen = await api("/api/screen/" + position);
  } catch (err) {
    state.loading = false;
    $("load-failure-text").textContent = err.message;
    $("load-failure").hidden = false;
    state.retryLoad = position;
    return;
  }
  state.position = position;
  state.screen = screen;
  state.draft = screen.answer ? { ...screen.answer } : {};
  state.active = state.draft.color ? "texture" : "color";
  showProgress(screen);
  $("done").hidden = true;
  $("screen").hidden = false;
  $("where").textContent = "Screen " + (position + 1) + " of " + screen.total;
  $("previous").disabled = position === 0;
  $("next").disabled = !screen.answer || position >= screen.total - 1;
  const images = $("images");
  images.replaceChildren();
  const afc = state.me.design === "2afc";
  images.className = afc ? "images afc" : "images";
  $("hospital-answer").hidden = afc;
  $("afc-answer").hidden = !afc;
  if (afc) {
    $("question").textContent = "Which image is more similar to the reference?";
    images.append(figure("ref", "Reference", "reference"));
    images.append(figure("left", "Left", "candidate"), figure("right", "Right", "candidate"));
  } else {
    $("question").textContent =
      "How different are colour and texture between the lesion or scar and the comparison skin?";
    for (const name of screen.images) {
      const caption = name === "ref" ? "Lesion / scar" : "Comparison " + name.slice(1);
      images.append(figure(name, caption, name === "ref" ? "reference" : "comparison"));
    }
  }
  render();
  await Promise.all([...images.querySelectorAll("img")].map((img) => img.decode().catch(() => {})));
  state.loading = false;
  document.body.dataset.position = String(position);
  document.body.dataset.ready = "true";
}

function render() {
  for (const scale of document.querySelectorAll(".scale")) {
    const aspect = scale.dataset.aspect;
    scale.classList.toggle("active", aspect === state.active);
    for (const button of scale.querySelectorAll("button")) {
      button.classList.toggle("selected", Number(button.dataset.value) === state.draft[aspect]);
    }
  }
  for (const button of document.querySelectorAll(".choice")) {
    button.classList.toggle("selected", button.dataset.side === state.draft.side);
  }
  for (const fig of document.querySelectorAll(".images.afc figure.candidate")) {
    fig.classList.toggle("chosen", fig.dataset.image === state.draft.side);
  }
}

async function save(answer, position = state.position) {
  if (state.saving) return;
  state.saving = true;
  $("failure").hidden = true;
  setSaveState("saving…", "");
  let progress;
  try {
    progress = await api("/api/answer", { position, ...answer });
  } catch (err) {
    state.saving = false;
    state.failed = { position, answer };
    setSaveState("not saved", "failed");
    $("failure-text").textContent = err.message;
    $("failure").hidden = false;
    return;
  }
  state.saving = false;
  state.failed = null;
  showProgress(progress);
  setSaveState("screen " + (position + 1) + " saved ✓", "saved");
  if (state.position !== position) return; // the rater moved on meanwhile: stay there
  if (position + 1 < state.me.total) {
    await load(position + 1);
  } else if (progress.next === null) {
    finished();
  } else {
    await load(progress.next);
  }
}

const busy = () => state.saving || state.loading;

function finished() {
  $("screen").hidden = true;
  $("done").hidden = false;
}

function score(aspect, value) {
  if (busy()) return;
  state.draft[aspect] = value;
  state.active = aspect === "color" ? "texture" : "color";
  render();
  if (state.draft.color && state.draft.texture) {
    save({ color: state.draft.color, texture: state.draft.texture });
  }
}

function choose(side) {
  if (busy()) return;
  state.draft = { side };
  render();
  save({ side });
}

function wire() {
  for (const scale of document.querySelectorAll(".scale")) {
    for (const button of scale.querySelectorAll("button")) {
      button.addEventListener("click", () => score(scale.dataset.aspect, Number(button.dataset.value)));
    }
  }
  for (const button of document.querySelectorAll(".choice")) {
    button.addEventListener("click", () => choose(button.dataset.side));
  }
  $("images").addEventListener("click", (event) => {
    const fig = event.target.closest("figure.candidate");
    if (fig) choose(fig.dataset.image);
  });
  $("previous").addEventListener("click", () => busy() || load(state.position - 1));
  $("next").addEventListener("click", () => busy() || load(state.position + 1));
  $("review").addEventListener("click", () => load(0));
  $("retry").addEventListener("click", () => state.failed && save(state.failed.answer, state.failed.position));
  $("retry-load").addEventListener("click", () => load(state.retryLoad ?? state.position));
  document.addEventListener("keydown", (event) => {
    if ($("screen").hidden || event.altKey || event.ctrlKey || event.metaKey || busy()) return;
    const afc = state.me.design === "2afc";
    if (event.key === "ArrowLeft" && state.position > 0) load(state.position - 1);
    else if (event.key === "ArrowRight" && !$("next").disabled) load(state.position + 1);
    else if (afc && (event.key === "1" || event.key === "2")) choose(event.key === "1" ? "left" : "right");
    else if (!afc && "1234".includes(event.key) && event.key.length === 1) score(state.active, Number(event.key));
    else if (!afc && (event.key === "c" || event.key === "t")) {
      state.active = event.key === "c" ? "color" : "texture";
      render();
    } else return;
    event.preventDefault();
  });
}

async function start() {
  wire();
  try {
    state.me = await api("/api/me");
  } catch (err) {
    $("signin").hidden = false;
    if (err.status !== 403) $("signin").querySelector("p").textContent = err.message;
    document.body.dataset.ready = "true";
    return;
  }
  if (state.me.owner) {
    window.location.replace("/owner");
    return;
  }
  $("who").textContent = "study " + state.me.study + " · rater " + state.me.rater;
  showProgress(state.me);
  if (state.me.next === null) {
    finished();
    document.body.dataset.ready = "true";
  } else {
    await load(state.me.next);
  }
}

start();
