// Keeps a page live without reloading it: every 2 s the page is fetched again and each element
// marked data-live is swapped for its new version (the jobs ticked for a bulk action stay
// ticked); a job's log is followed from where it was.
"use strict";
(function () {
  const EVERY = 2000;
  async function refreshLive() {
    const live = document.querySelectorAll("[data-live]");
    if (!live.length) return;
    const response = await fetch(location.href, { headers: { "X-Live": "1" }, credentials: "same-origin" });
    if (!response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const ticked = new Set(Array.from(document.querySelectorAll("input.pick:checked"), function (box) { return box.value; }));
    live.forEach(function (element) {
      const fresh = page.getElementById(element.id);
      if (!fresh) return;
      const node = document.importNode(fresh, true);
      node.querySelectorAll("input.pick").forEach(function (box) { box.checked = ticked.has(box.value); });
      element.replaceWith(node);
    });
    document.body.dataset.refreshed = String(Date.now());
  }
  let offset = 0;
  async function followLog() {
    const log = document.getElementById("log");
    if (!log) return;
    const response = await fetch(log.dataset.log + "?offset=" + offset, { credentials: "same-origin" });
    if (!response.ok) return;
    const next = parseInt(response.headers.get("X-Log-Offset") || "0", 10);
    if (next < offset) log.textContent = "";
    log.textContent += await response.text();  // text, never markup: a job's output is untrusted
    offset = next;
  }
  async function tick() {
    try { await followLog(); await refreshLive(); } catch (e) { /* the next tick tries again */ }
    setTimeout(tick, EVERY);
  }
  document.addEventListener("DOMContentLoaded", function () { followLog().finally(function () { setTimeout(tick, EVERY); }); });
})();
