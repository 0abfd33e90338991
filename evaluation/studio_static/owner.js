// The owner's page: per-rater progress, agreement so far and test-retest, refreshed.
"use strict";

const $ = (id) => document.getElementById(id);

function fill(table, header, rows) {
  const head = table.querySelector("thead");
  if (header) {
    const tr = document.createElement("tr");
    for (const text of header) {
      const th = document.createElement("th");
      th.textContent = text;
      tr.append(th);
    }
    head.replaceChildren(tr);
  }
  const body = table.querySelector("tbody");
  body.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  }));
}

const LABELS = {
  icc_2_1: "ICC(2,1)", krippendorff_alpha_interval: "alpha (interval)",
  krippendorff_alpha_ordinal: "alpha (ordinal)", krippendorff_alpha_nominal: "alpha (nominal)",
  pairwise_agreement: "pairwise agreement", n_items_all_raters: "items rated by all",
  n_items_two_raters: "items judged by 2+ raters",
};
const number = (v) => (v.value === null ? "n/a" : v.value.toFixed(3));
const percent = (v) => (v === null || v === undefined ? "–" : Math.round(100 * v) + "%");

function render(status) {
  $("title").textContent = "study " + status.study + " · " + status.design + " · " +
    status.items + " items" + (status.synthetic ? " · synthetic" : "");
  fill($("raters"), null, status.raters.map((r) => [
    r.rater, r.answered + " / " + r.total, r.items_answered, r.repeats_answered, r.last_saved || "–",
  ]));
  const aspects = Object.entries(status.agreement);
  const names = Object.keys(aspects[0][1]).filter((k) => !k.startsWith("n_"));
  const count = Object.keys(aspects[0][1]).find((k) => k.startsWith("n_"));
  fill($("agreement"), ["aspect", ...names.map((n) => LABELS[n] || n), LABELS[count] || count],
    aspects.map(([aspect, v]) => [aspect, ...names.map((n) => number(v[n])), v[count]]));
  const reasons = [...new Set(aspects.flatMap(([, v]) => names.map((n) => v[n].why).filter(Boolean)))];
  $("why").textContent = reasons.length ? "n/a: " + reasons.join("; ") : "";
  const retest = Object.entries(status.retest);
  if (status.design === "2afc") {
    fill($("retest"), ["rater", "repeats", "same choice"], retest.map(([r, v]) => [r, v.n, percent(v.same_choice)]));
  } else {
    fill($("retest"), ["rater", "repeats", "colour exact", "colour within 1", "texture exact", "texture within 1"],
      retest.map(([r, v]) => [r, v.n, percent(v.color.exact), percent(v.color.within_one),
        percent(v.texture.exact), percent(v.texture.within_one)]));
  }
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

async function refresh() {
  const response = await fetch("/api/status", { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) {
    $("signin").hidden = false;
    $("status").hidden = true;
    document.body.dataset.ready = "true";
    return false;
  }
  render(await response.json());
  $("status").hidden = false;
  document.body.dataset.ready = "true";
  return true;
}

refresh().then((ok) => ok && setInterval(refresh, 5000));
