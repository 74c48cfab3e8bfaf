"use strict";
// The rows live in the page as JSON; only the current page of the filtered, sorted rows is in the DOM,
// so the page opens fast however many inputs the scan had, and only visible thumbnails are fetched.
(function () {
  const rows = JSON.parse(document.getElementById("report-data").textContent);
  const threshold = Number(document.body.dataset.threshold);
  const state = { sort: "score", dir: -1, decision: "all", status: "all", name: "", page: 0, size: 50 };
  const $ = (id) => document.getElementById(id);
  const escapeMap = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (text) => String(text).replace(/[&<>"']/g, (c) => escapeMap[c]);
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  function decisionOf(row) {
    if (row.status !== "ok") return "none";
    return row.forged ? "forged" : "not-forged";
  }

  function visible() {
    const name = state.name.toLowerCase();
    const kept = rows.filter((row) =>
      (state.decision === "all" || decisionOf(row) === state.decision) &&
      (state.status === "all" || (state.status === "failed" ? row.status !== "ok" : row.status === state.status)) &&
      (!name || row.name.toLowerCase().includes(name)));
    const key = state.sort, dir = state.dir;
    kept.sort((a, b) => {
      if (key === "name") return dir * collator.compare(a.name, b.name);
      const x = a[key], y = b[key];
      if (x === null || x === undefined) return (y === null || y === undefined) ? collator.compare(a.name, b.name) : 1;
      if (y === null || y === undefined) return -1;  // rows without a value stay last either way
      return dir * (x - y) || collator.compare(a.name, b.name);
    });
    return kept;
  }

  const percent = (value) => value === null || value === undefined ? "" : (100 * value).toFixed(value < 0.001 && value > 0 ? 3 : 1) + "%";

  function preview(row) {
    if (!row.thumbnail) {
      return `<span class="nopreview">${row.status === "ok" ? "no preview" : "no result"}</span>`;
    }
    const image = `<img src="${esc(row.thumbnail)}" alt="" loading="lazy" decoding="async">`;
    return `<a href="${esc(row.overlay || row.thumbnail)}" target="_blank" rel="noopener">${image}</a>`;
  }

  function rowHtml(row) {
    const slash = row.name.lastIndexOf("/") + 1;
    const label = `<span class="folder">${esc(row.name.slice(0, slash))}</span>${esc(row.name.slice(slash))}`;
    const name = row.file ? `<a href="${esc(row.file)}" target="_blank" rel="noopener">${label}</a>` : label;
    let decision;
    if (row.status !== "ok") decision = `<span class="badge error">${esc(row.status)}</span>`;
    else if (row.forged) decision = '<span class="badge forged">forged</span>';
    else decision = '<span class="badge clean">not forged</span>';
    const score = row.score === null || row.score === undefined ? "" :
      `<span class="meter${row.score > threshold ? " over" : ""}"><span style="width:${(100 * row.score).toFixed(1)}%"></span></span>${row.score.toFixed(3)}`;
    const size = row.width ? `${row.width}×${row.height}` : "";
    const message = row.error ? `<div class="message">${esc(row.error)}</div>` : "";
    return `<tr data-status="${esc(row.status)}"><td class="preview">${preview(row)}</td>` +
      `<td class="name"><div class="path">${name}</div>${message}</td><td>${decision}</td><td class="num score">${score}</td>` +
      `<td class="num">${percent(row.forged_fraction)}</td><td class="num">${percent(row.forged_fraction_confident)}</td>` +
      `<td class="num small">${size}${row.mode === "tiled" ? " tiled" : ""}</td>` +
      `<td class="num small">${row.seconds === null || row.seconds === undefined ? "" : row.seconds.toFixed(2)}</td></tr>`;
  }

  function render() {
    const kept = visible();
    const pages = Math.max(1, Math.ceil(kept.length / state.size));
    state.page = Math.min(state.page, pages - 1);
    const first = state.page * state.size;
    const shown = kept.slice(first, first + state.size);
    $("rows").innerHTML = shown.length ? shown.map(rowHtml).join("") :
      '<tr><td colspan="8" class="empty">No input matches these filters.</td></tr>';
    const of = kept.length === rows.length ? `${rows.length.toLocaleString()}` :
      `${kept.length.toLocaleString()} (filtered from ${rows.length.toLocaleString()})`;
    $("shown").textContent = kept.length ? `${(first + 1).toLocaleString()}–${(first + shown.length).toLocaleString()} of ${of}` : `0 of ${of}`;
    $("page").textContent = `page ${state.page + 1} of ${pages}`;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
    document.querySelectorAll("th button[data-sort]").forEach((button) => {
      const th = button.parentElement;
      if (button.dataset.sort === state.sort) th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
  }

  document.querySelectorAll("th button[data-sort]").forEach((button) => button.addEventListener("click", () => {
    const key = button.dataset.sort;
    // A new column starts with what an analyst looks for first: highest values, or names A to Z.
    state.dir = key === state.sort ? -state.dir : (key === "name" ? 1 : -1);
    state.sort = key;
    state.page = 0;
    render();
  }));
  const bind = (id, field, event, parse) => $(id).addEventListener(event, (e) => {
    state[field] = parse ? parse(e.target.value) : e.target.value;
    state.page = 0;
    render();
  });
  bind("filter-decision", "decision", "change");
  bind("filter-status", "status", "change");
  bind("filter-name", "name", "input");
  bind("page-size", "size", "change", Number);
  $("prev").addEventListener("click", () => { state.page -= 1; render(); });
  $("next").addEventListener("click", () => { state.page += 1; render(); });
  const showFailed = $("show-failed");
  if (showFailed) showFailed.addEventListener("click", () => {
    $("filter-status").value = state.status = "failed";
    state.decision = $("filter-decision").value = "all";
    state.page = 0;
    render();
    $("filter-status").scrollIntoView({ block: "start" });
  });

  render();
  document.body.dataset.renderedMs = performance.now().toFixed(0);  // time from navigation to the first table
})();
