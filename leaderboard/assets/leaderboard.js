// The leaderboard's interactions: sortable columns, provenance rows, tap-to-read definitions, column toggles,
// filters by defence and attack, the scroll hint, and opening a collapsed section a link points into.
// Plain DOM, no library, nothing fetched.
"use strict";

function sortValue(body, col) {
  const cell = body.querySelector('td[data-col="' + col + '"]');
  const raw = cell ? cell.dataset.sort : "";
  if (raw === undefined || raw === "") return null;
  const num = Number(raw);
  return Number.isNaN(num) ? raw.toLowerCase() : num;
}

function compare(a, b, ascending) {
  if (a === null && b === null) return 0;
  if (a === null) return 1;   // missing values last, in both directions
  if (b === null) return -1;
  const order = typeof a === "number" && typeof b === "number" ? a - b : String(a).localeCompare(String(b));
  return ascending ? order : -order;
}

function sortBy(table, header) {
  const col = header.dataset.col;
  const ascending = header.getAttribute("aria-sort") !== "ascending";
  const bodies = Array.from(table.tBodies);
  bodies.sort((x, y) => compare(sortValue(x, col), sortValue(y, col), ascending));
  bodies.forEach((body) => table.appendChild(body));
  table.querySelectorAll("thead th[data-col]").forEach((th) => th.removeAttribute("aria-sort"));
  header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
}

function toggleProvenance(button) {
  const details = button.closest("tbody").querySelector("tr.provenance");
  const open = button.getAttribute("aria-expanded") !== "true";
  details.hidden = !open;
  button.setAttribute("aria-expanded", String(open));
  button.textContent = open ? "▾" : "▸";
}

function toggleDefinition(button, section) {
  const box = document.getElementById(button.getAttribute("aria-controls"));
  const open = box.hidden;
  section.querySelectorAll(".def").forEach((d) => { d.hidden = true; });
  section.querySelectorAll(".def-btn").forEach((b) => b.setAttribute("aria-expanded", "false"));
  box.hidden = !open;
  button.setAttribute("aria-expanded", String(open));
}

// A column is shown when its toggle is checked and, for a budget, when its attack passes the attack filter.
function applyColumns(section) {
  const table = section.querySelector("table.board");
  const attack = section.querySelector(".filter-attack").value;
  const shown = {};
  section.querySelectorAll("input[data-toggle]").forEach((box) => { shown[box.dataset.toggle] = box.checked; });
  table.querySelectorAll("th[data-col], td[data-col]").forEach((cell) => {
    const col = cell.dataset.col;
    if (!(col in shown)) return;
    const byAttack = !attack || !cell.dataset.attack || cell.dataset.attack === attack;
    cell.classList.toggle("off", !(shown[col] && byAttack));
  });
  table.querySelectorAll("tr.groups th[data-group]").forEach((group) => {
    const cols = table.querySelectorAll('thead tr:not(.groups) th[data-group="' + CSS.escape(group.dataset.group) + '"]');
    const visible = Array.from(cols).filter((th) => !th.classList.contains("off")).length;
    group.colSpan = Math.max(visible, 1);
    group.classList.toggle("off", visible === 0);
  });
  updateHint(section);
}

function filterRows(section) {
  const text = section.querySelector(".filter-defence").value.trim().toLowerCase();
  let shown = 0;
  section.querySelectorAll("table.board > tbody").forEach((body) => {
    const match = !text || body.dataset.defence.toLowerCase().includes(text);
    body.hidden = !match;
    shown += match ? 1 : 0;
  });
  section.querySelector(".no-match").hidden = shown > 0;
}

function updateHint(section) {
  const scroller = section.querySelector(".board-scroll");
  const hint = section.querySelector(".scroll-hint");
  if (scroller && hint) hint.hidden = scroller.scrollWidth <= scroller.clientWidth + 1;
}

function openTarget() {
  if (!location.hash) return;
  const target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (!target) return;
  for (let node = target.parentElement; node; node = node.parentElement) {
    if (node.tagName === "DETAILS") node.open = true;
  }
  target.scrollIntoView();
}

document.querySelectorAll("section.board").forEach((section) => {
  const table = section.querySelector("table.board");
  table.querySelectorAll("thead th[data-col]").forEach((header) => {
    header.addEventListener("click", (event) => {
      if (!event.target.closest("button")) sortBy(table, header);
    });
  });
  table.querySelectorAll("button.expand").forEach((button) => {
    button.addEventListener("click", () => toggleProvenance(button));
  });
  section.querySelectorAll(".def-btn").forEach((button) => {
    button.addEventListener("click", (event) => { event.stopPropagation(); toggleDefinition(button, section); });
  });
  section.querySelectorAll(".def-close").forEach((button) => {
    button.addEventListener("click", () => {
      button.parentElement.hidden = true;
      section.querySelectorAll(".def-btn").forEach((b) => b.setAttribute("aria-expanded", "false"));
    });
  });
  section.querySelectorAll("input[data-toggle]").forEach((box) => box.addEventListener("change", () => applyColumns(section)));
  section.querySelector(".filter-attack").addEventListener("change", () => applyColumns(section));
  section.querySelector(".filter-defence").addEventListener("input", () => filterRows(section));
  updateHint(section);
});
document.querySelectorAll("details").forEach((details) => {
  details.addEventListener("toggle", () => details.querySelectorAll("section.board").forEach(updateHint));
});
window.addEventListener("resize", () => document.querySelectorAll("section.board").forEach(updateHint));
window.addEventListener("hashchange", openTarget);
openTarget();
