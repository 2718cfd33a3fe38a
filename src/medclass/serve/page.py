"""The web page served at ``/``: drop an image or DICOM file, or many, and read the results or a triage list.

For a model trained with clinical fields (the model card's ``clinical_fields``), the page shows an input per
field (a number input for a numeric field, a list of the training categories and "unknown" for a categorical
one) and sends the values filled in as form fields with a single image (empty: missing); the result names the
values the service used. A triage list of several files uses the images alone (the fields describe one patient).

When the service has a PACS node's worklist (``medclass serve --worklist``), the page lists its studies as
``GET /v1/worklist`` ranks them: referrals first, then by urgency.

The triage list puts the most urgent case first by each prediction's ``urgency`` (the service's ranking
key: P(positive class) for a binary model, else the summed probability of the model card's
``triage.classes``), and its column header names those classes.
"""

from __future__ import annotations

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>medclass</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#1b1b1b}
#drop{border:2px dashed #888;border-radius:8px;padding:2rem;text-align:center;cursor:pointer}
#drop.over{background:#eef5fb}
table{border-collapse:collapse;width:100%;margin-top:1rem}
td,th{border-bottom:1px solid #ddd;padding:.3rem;text-align:left}
.refer{color:#b00;font-weight:600}img.heat{width:224px;image-rendering:pixelated}
#clinical label{margin-right:1rem}.note{color:#555;font-size:13px}
</style></head><body>
<h1>medclass</h1><p id="card">Loading model&hellip;</p>
<label>Bearer token (if the service needs one): <input id="token" type="password"></label>
<fieldset id="clinical" hidden><legend>Clinical fields (leave empty when unknown)</legend><div id="fields"></div>
<p class="note">Sent with a single image; a triage list of several files uses the images alone.</p></fieldset>
<div id="drop" tabindex="0">Drop an image or DICOM file here, or several for a triage list (or click to choose)
<input id="files" type="file" multiple hidden></div>
<div id="single"></div>
<section id="worklist" hidden><h2>PACS worklist</h2>
<table><thead><tr><th>#</th><th>study</th><th>urgency</th><th>finding</th><th>refer</th></tr></thead>
<tbody></tbody></table></section>
<table id="triage" hidden><thead><tr><th>file</th><th id="urgent">p</th><th>decision</th><th>refer</th></tr></thead>
<tbody></tbody></table>
<script>
const $ = (id) => document.getElementById(id);
let card = null;
const fmt = (t) => (typeof t === "number" ? t.toFixed(3) : "argmax");
const auth = () => ($("token").value ? {Authorization: "Bearer " + $("token").value} : {});
async function loadCard() {
  const r = await fetch("/v1/model", {headers: auth()});
  if (!r.ok) { $("card").textContent = "Model card: " + r.status + " (token?)"; return; }
  card = await r.json();
  const clinical = card.clinical_fields || [];
  $("card").textContent = `${card.name}: ${card.task}, labels ${card.labels.join(", ")}; ` +
    `operating threshold ${fmt(card.operating_threshold)}` +
    (clinical.length ? `; clinical fields ${clinical.map((c) => c.name).join(", ")}` : "");
  showFields(clinical);
}
async function loadWorklist() {
  const r = await fetch("/v1/worklist", {headers: auth()});
  if (!r.ok) { $("worklist").hidden = true; return; }
  const rows = (await r.json()).studies;
  const uid = (u) => (u.length > 24 ? "\u2026" + u.slice(-22) : u);
  $("worklist").querySelector("tbody").innerHTML = rows.map((s) =>
    `<tr><td>${s.rank}</td><td title="${esc(s.study_uid)}">${esc(uid(s.study_uid))}</td>` +
    `<td>${s.urgency.toFixed(3)}</td>` +
    `<td>${esc(s.finding)}</td><td class="${s.refer ? "refer" : ""}">${s.refer ? "refer" : ""}</td></tr>`).join("");
  $("worklist").hidden = false;
}
function showFields(clinical) {
  const box = $("fields"); box.replaceChildren();
  for (const c of clinical) {
    const label = document.createElement("label"); label.append(c.name + " ");
    let input;
    if (c.kind === "numeric") {
      input = document.createElement("input"); input.type = "number"; input.step = "any";
    } else {
      input = document.createElement("select");
      for (const v of ["", ...c.categories]) input.add(new Option(v || "unknown", v));
    }
    input.dataset.field = c.name; label.append(input); box.append(label);
  }
  $("clinical").hidden = !clinical.length;
}
function upload(file, fields) {
  const f = new FormData(); f.append("file", file);
  if (fields) for (const e of document.querySelectorAll("#fields [data-field]")) {
    if (e.value.trim() !== "") f.append(e.dataset.field, e.value.trim());
  }
  return f;
}
function usedFields(clinical) {
  return Object.entries(clinical).map(([k, v]) => `${k} ${v === null ? "unknown" : v}`).join(", ");
}
async function predict(file, fields) {
  const r = await fetch("/v1/predict", {method: "POST", body: upload(file, fields), headers: auth()});
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.status);
  return body;
}
const ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
function esc(v) { return String(v).replace(/[&<>"']/g, (c) => ENTITIES[c]); }
function urgentLabel() { return card && card.triage ? card.triage.classes.join(" + ") : "urgent"; }
async function showOne(file) {
  const out = $("single"); out.innerHTML = "";
  try {
    const res = await predict(file, true);
    const rows = Object.entries(res.probabilities).map(
      ([k, v]) => `<tr><td>${esc(k)}</td><td>${v.toFixed(3)}</td></tr>`);
    out.innerHTML = `<h2>${esc(file.name)}</h2><p id="decision">Decision: <b>${esc(res.decision)}</b>` +
      (res.refer ? ' <span class="refer">refer to a radiologist</span>' : "") +
      ` (threshold ${fmt(res.threshold)})</p><table>${rows.join("")}</table>`;
    if (res.clinical) {
      const used = document.createElement("p"); used.id = "used";
      used.textContent = "Clinical fields used: " + usedFields(res.clinical); out.appendChild(used);
    }
    const h = await fetch("/v1/explain", {method: "POST", body: upload(file, true), headers: auth()});
    if (h.ok) {
      const img = document.createElement("img"); img.className = "heat"; img.alt = "heat map";
      img.src = URL.createObjectURL(await h.blob()); out.appendChild(img);
    }
  } catch (e) { out.textContent = "Error: " + e.message; }
}
async function triage(files) {
  $("single").innerHTML = ""; const label = urgentLabel(); $("urgent").textContent = "p(" + label + ")";
  const rows = [];
  for (const f of files) {
    try { const r = await predict(f, false); rows.push([f.name, r.urgency, r.decision, r.refer]); }
    catch (e) { rows.push([f.name, -1, "error: " + e.message, false]); }
  }
  rows.sort((a, b) => b[1] - a[1]);
  $("triage").tBodies[0].innerHTML = rows.map((r) =>
    `<tr><td>${esc(r[0])}</td><td>${r[1] < 0 ? "-" : r[1].toFixed(3)}</td><td>${esc(r[2])}</td>` +
    `<td class="${r[3] ? "refer" : ""}">${r[3] ? "refer" : ""}</td></tr>`).join("");
  $("triage").hidden = false;
}
function handle(files) {
  files = [...files];
  if (files.length === 1) showOne(files[0]); else if (files.length) triage(files);
}
const drop = $("drop");
drop.addEventListener("click", () => $("files").click());
$("files").addEventListener("change", (e) => handle(e.target.files));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over"); handle(e.dataTransfer.files);
});
$("token").addEventListener("change", () => { loadCard(); loadWorklist(); });
loadCard();
loadWorklist();
</script></body></html>
"""
