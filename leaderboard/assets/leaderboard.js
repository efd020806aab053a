// Sortable columns and expandable provenance rows. Plain DOM, no library, nothing fetched.
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

document.querySelectorAll("table.board").forEach((table) => {
  table.querySelectorAll("thead th[data-col]").forEach((header) => {
    header.addEventListener("click", () => sortBy(table, header));
  });
  table.querySelectorAll("button.expand").forEach((button) => {
    button.addEventListener("click", () => toggleProvenance(button));
  });
});
