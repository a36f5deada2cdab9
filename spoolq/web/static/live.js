// Keeps a page live without reloading it: every 2 s the page is fetched again and each element
// marked data-live is swapped for its new version (the jobs ticked for a bulk action stay
// ticked), and every form takes the fresh page's form token (a restarted dashboard's session
// gives a new one); a job's log is read whole, a chunk after another, then followed from where
// it was. While a refresh fails, a line at the top says since when the page is stale, and why. A
// hidden page (a tab in the background) is not refreshed until it is shown again.
"use strict";
(function () {
  const EVERY = 2000;
  let lastGood = Date.now();
  async function failed(response) {
    if (response.status === 401) return "the dashboard asks for its token again (restarted, or the session ended): reload the page";
    const said = new DOMParser().parseFromString(await response.text(), "text/html").getElementById("error");
    return said ? said.textContent : "the dashboard answered " + response.status;  // its error page's words: "no job …"
  }
  function stale(why) {
    let note = document.getElementById("stale");
    if (!why) {
      if (note) note.remove();
      return;
    }
    if (!note) {
      note = document.createElement("p");
      note.id = "stale";
      note.className = "error";
      note.setAttribute("role", "alert");
      document.querySelector("main").prepend(note);
    }
    note.textContent = "not refreshed since " + new Date(lastGood).toISOString().slice(11, 19) + " UTC: " + why;
  }
  async function refreshLive() {
    const live = document.querySelectorAll("[data-live]");
    if (!live.length) return;
    const response = await fetch(location.href, { headers: { "X-Live": "1" }, credentials: "same-origin" });
    if (!response.ok) throw new Error(await failed(response));
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const ticked = new Set(Array.from(document.querySelectorAll("input.pick:checked"), function (box) { return box.value; }));
    live.forEach(function (element) {
      const fresh = page.getElementById(element.id);
      if (!fresh) return;
      const node = document.importNode(fresh, true);
      node.querySelectorAll("input.pick").forEach(function (box) { box.checked = ticked.has(box.value); });
      element.replaceWith(node);
    });
    const token = page.querySelector("input[name=csrf]");
    if (token) document.querySelectorAll("input[name=csrf]").forEach(function (field) { field.value = token.value; });
    document.body.dataset.refreshed = String(Date.now());
  }
  let offset = 0;
  const CHUNKS = 64;  // a log's chunks (256 KiB each) read at once at most, before the page's refresh
  async function followLog() {
    const log = document.getElementById("log");
    if (!log) return;
    for (let chunk = 0; chunk < CHUNKS; chunk++) {
      const response = await fetch(log.dataset.log + "?offset=" + offset, { credentials: "same-origin" });
      if (!response.ok) throw new Error(await failed(response));
      const next = parseInt(response.headers.get("X-Log-Offset") || "0", 10);
      if (next < offset) log.textContent = "";
      log.textContent += await response.text();  // text, never markup: a job's output is untrusted
      offset = next;
      if (response.headers.get("X-Log-More") !== "1") return;
    }
  }
  let next = null;  // the timer of the next tick; none while the page is hidden
  let busy = false;  // a tick under way: it sets the next one itself
  async function tick() {
    next = null;
    busy = true;
    try {
      await followLog();
      await refreshLive();
      lastGood = Date.now();
      stale(null);
    } catch (e) {
      stale(e instanceof TypeError ? "the dashboard does not answer" : e.message);  // fetch's TypeError: no answer at all
    }
    busy = false;
    if (!document.hidden) next = setTimeout(tick, EVERY);
  }
  // A tab in the background asks nothing (a list of 100,000 done jobs costs the server about
  // 0.1 s a refresh); shown again, it refreshes at once and goes on.
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      clearTimeout(next);
      next = null;
    } else if (next === null && !busy) {
      next = setTimeout(tick, 0);
    }
  });
  document.addEventListener("DOMContentLoaded", function () {
    followLog().catch(function () {}).finally(function () { next = setTimeout(tick, EVERY); });
  });
})();
