// Flotilla's dashboard: renders the snapshots `fleetctl dashboard` pushes as server-sent events.
// Read-only: nothing here sends anything but GET requests.
"use strict";

const FAULTS = new Set(["unit.failed", "machine.left", "machine.expired", "fence", "reschedule.withheld"]);

function escape(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  }[c]));
}

function metadataText(metadata) {
  return Object.entries(metadata || {}).map(([k, v]) => `${k}=${v}`).join(", ");
}

function machineRow(m) {
  const marks = [m.leader ? '<span class="leader">leader</span>' : "",
                 m.state && m.state !== "schedulable"
                   ? `<span class="drained">${escape(m.state)}</span>` : ""].join(" ");
  return `<tr data-machine="${escape(m.id)}"><td class="id" title="${escape(m.id)}">${escape(m.short)}</td>` +
    `<td class="ip">${escape(m.ip)}</td><td class="metadata">${escape(metadataText(m.metadata))}</td>` +
    `<td class="units">${m.units}</td><td class="marks">${marks}</td></tr>`;
}

function unitRow(u) {
  return `<tr data-unit="${escape(u.name)}" data-machine="${escape(u.machine)}"` +
    `${u.machine || u.current === "global" ? "" : ' class="unplaced"'}>` +
    `<td class="name">${escape(u.name)}</td><td class="desired">${escape(u.desired)}</td>` +
    `<td class="current">${escape(u.current)}</td><td class="active">${escape(u.active)}</td>` +
    `<td class="machine">${escape(u.placed)}</td><td class="reason">${escape(u.reason)}</td></tr>`;
}

function eventText(e) {
  const parts = [e.time, e.kind, e.unit, e.machine && `on ${String(e.machine).slice(0, 8)}`,
    e.from && `from ${String(e.from).slice(0, 8)}`, e.to && `to ${String(e.to).slice(0, 8)}`,
    e.reason && `(${e.reason})`];
  return parts.filter(Boolean).join(" ");
}

function eventItem(e) {
  return `<li data-id="${escape(e.id)}" data-kind="${escape(e.kind)}"` +
    `${FAULTS.has(e.kind) ? ' class="fault"' : ""}>${escape(eventText(e))}</li>`;
}

function setStatus(state) {
  const status = document.getElementById("status");
  if (state.error) {
    status.textContent = state.error + " (retrying; the page keeps what it last read)";
    status.className = "status error";
  } else {
    const when = state.updated ? new Date(state.updated * 1000).toLocaleTimeString() : "";
    status.textContent = `live; last change at ${when}` +
      (state.leader ? `; engine leader ${state.leader.slice(0, 8)}` : "");
    status.className = "status";
  }
}

let rendered = false;

function render(state) {
  setStatus(state);
  if (!state.machines) return;  // nothing read yet
  document.querySelector("#machines tbody").innerHTML = state.machines.map(machineRow).join("");
  document.querySelector("#units tbody").innerHTML = state.units.map(unitRow).join("");
  document.getElementById("machine-count").textContent = `(${state.machines.length})`;
  document.getElementById("unit-count").textContent = `(${state.units.length})`;
  document.getElementById("events").innerHTML = state.history
    ? state.events.map(eventItem).join("")
    : '<li class="empty">This cluster keeps no event history.</li>';
  // The pictures are SVG the dashboard drew itself, every name in them escaped.
  document.getElementById("failovers").innerHTML = state.failovers.length
    ? state.failovers.map((f) => `<figure data-unit="${escape(f.unit)}">${f.svg}</figure>`).join("")
    : '<p class="empty">No failover in the event history.</p>';
  document.body.dataset.version = state.version;
  if (!rendered) {
    rendered = true;
    performance.mark("dashboard-rendered");  // the browser test reads this: first paint with data
  }
}

function connect() {
  const source = new EventSource("/api/stream");
  source.onmessage = (message) => render(JSON.parse(message.data));
  source.onerror = () => {
    setStatus({ error: "lost the dashboard server" });
    // EventSource reconnects by itself unless the server refused; then start again.
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, 1000);
  };
}

connect();
