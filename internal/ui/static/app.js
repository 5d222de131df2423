// drover fleet page: live parts without a framework. Everything that came
// from a device or a package is put in the page with textContent, never as
// markup; the server's Content-Security-Policy allows this file only.
"use strict";

// A main part marked data-refresh reloads itself every so many ms, unless
// the user is typing in it. The server renders the fragment with
// html/template, which escapes every value.
function startRefresh() {
  const main = document.getElementById("main");
  const every = Number(main && main.dataset.refresh);
  if (!every) return;
  let busy = false;
  setInterval(async () => {
    if (busy || document.hidden) return;
    if (main.contains(document.activeElement) && document.activeElement.tagName === "INPUT") return;
    busy = true;
    try {
      const r = await fetch(location.href, { headers: { "X-Drover-Fragment": "1" }, credentials: "same-origin" });
      if (r.ok) main.innerHTML = await r.text();
      else if (r.status === 401) location.reload();
    } catch (e) {
      // The server is away for a moment: try again at the next tick.
    } finally {
      busy = false;
    }
  }, every);
}

function cell(text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text;
  return td;
}

function pad(n) { return String(n).padStart(2, "0"); }

function when(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
    pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds());
}

// eventRow builds one table row for an event, as text.
function eventRow(ev) {
  const tr = document.createElement("tr");
  tr.className = "fresh p-" + (ev.priority || "") + " l-" + (ev.level || "");
  tr.appendChild(cell(when(ev.time), "mono"));
  const dev = document.createElement("td");
  if (ev.device) {
    const a = document.createElement("a");
    a.href = "/ui/devices/" + encodeURIComponent(ev.device);
    a.textContent = ev.device;
    dev.appendChild(a);
  }
  tr.appendChild(dev);
  tr.appendChild(cell(ev.kind || ""));
  tr.appendChild(cell((ev.level || "") + "/" + (ev.priority || "")));
  const msg = cell("", "msg");
  if (ev.package) {
    const p = document.createElement("span");
    p.className = "pkg";
    p.textContent = ev.package + " ";
    msg.appendChild(p);
  }
  msg.appendChild(document.createTextNode(ev.message || ""));
  tr.appendChild(msg);
  return tr;
}

// The events feed follows the server's stream and puts new events on top,
// keeping at most maxRows.
function startFeed() {
  const feed = document.getElementById("feed");
  if (!feed || !feed.dataset.stream) return;
  const rows = document.getElementById("feed-rows");
  const state = document.getElementById("live-state");
  const maxRows = 500;
  const es = new EventSource(feed.dataset.stream);
  es.onopen = () => { if (state) { state.textContent = "live"; state.classList.add("on"); } };
  es.onerror = () => { if (state) { state.textContent = "reconnecting…"; state.classList.remove("on"); } };
  es.onmessage = (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch (e) { return; }
    const empty = rows.querySelector("tr.empty");
    if (empty) empty.remove();
    rows.insertBefore(eventRow(ev), rows.firstChild);
    while (rows.rows.length > maxRows) rows.deleteRow(rows.rows.length - 1);
  };
}

document.addEventListener("DOMContentLoaded", () => {
  startRefresh();
  startFeed();
});
