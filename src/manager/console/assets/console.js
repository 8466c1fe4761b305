// The Clusterflux console: one server-sent event stream (/console/events),
// read with fetch so the bearer token travels in a header, never in a URL.
"use strict";

const TOKEN_KEY = "cflux-console-token";
const $ = (selector) => document.querySelector(selector);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  cluster: decodeURIComponent(location.hash.slice(1)) || null,
  listing: null,
  skewMs: 0, // the manager's clock minus the browser's
  stream: null,
  retryMs: 500,
};

function element(tag, attributes = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attributes)) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

function setStatus(text, kind) {
  const s = $("#status");
  s.textContent = text;
  s.dataset.state = kind;
}

function askForToken(message) {
  $("#content").hidden = true;
  $("#clusters").replaceChildren();
  $("#token-form").hidden = false;
  $("#token-error").textContent = message;
  $("#token").focus();
  setStatus("token needed", "locked");
}

$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("#token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("#token-form").hidden = true;
  connect();
});

async function connect() {
  if (state.stream) state.stream.abort();
  const stream = new AbortController();
  state.stream = stream;
  const url = "/console/events" + (state.cluster ? "?cluster=" + encodeURIComponent(state.cluster) : "");
  const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
  try {
    const response = await fetch(url, { headers, signal: stream.signal, cache: "no-store" });
    if (response.status === 401) {
      askForToken(state.token ? "The manager refused this token." : "");
      return;
    }
    if (!response.ok) throw new Error((await response.json()).error || response.statusText);
    setStatus("live", "live");
    state.retryMs = 500;
    await readEvents(response.body, stream);
  } catch (e) {
    if (stream.signal.aborted) return;
    setStatus("disconnected: " + e.message, "down");
  }
  if (stream.signal.aborted) return;
  setStatus("reconnecting…", "down");
  setTimeout(connect, state.retryMs);
  state.retryMs = Math.min(state.retryMs * 2, 10000);
}

// Server-sent events: blocks separated by a blank line, `event:` and `data:` lines.
async function readEvents(body, stream) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done || stream.signal.aborted) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) handle(name, data.join("\n"));
    }
  }
}

function handle(name, data) {
  if (name === "listing") {
    const listing = JSON.parse(data);
    state.skewMs = listing.now_ms - Date.now();
    state.listing = listing;
    if (!state.cluster && listing.clusters.length) {
      selectCluster(listing.clusters[0].name);
      return;
    }
    renderListing();
  } else if (name === "catalog") {
    renderCatalog(JSON.parse(data));
  } else if (name === "history") {
    renderHistory(JSON.parse(data));
  } else if (name === "failure") {
    setStatus("error: " + data, "down");
  }
}

function selectCluster(name) {
  state.cluster = name;
  history.replaceState(null, "", "#" + encodeURIComponent(name));
  $("#databases").replaceChildren();
  $("#users tbody").replaceChildren();
  $("#catalog-version").textContent = "";
  $("#changes tbody").replaceChildren();
  $("#history-summary").textContent = "";
  renderListing();
  connect();
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() + state.skewMs - ms) / 1000));
  return s < 120 ? s + " s ago" : Math.round(s / 60) + " min ago";
}

// Where a node stands with its cluster's catalog, as of its last heartbeat.
function syncState(n) {
  if (n.applied_version === null) return "unknown";
  if (n.sync_error) return "failing";
  return n.lag === 0 ? "in-sync" : "behind";
}

function lagText(n) {
  if (n.applied_version === null) return "unknown";
  if (n.lag === null) return "other history";
  return n.lag === 0 ? "in sync" : `${n.lag} behind`;
}

function renderListing() {
  const listing = state.listing;
  if (!listing) return;
  $("#content").hidden = false;
  $("#clusters").replaceChildren(
    ...listing.clusters.map((c) => {
      const b = element("button", { type: "button", "data-cluster": c.name, "aria-current": String(c.name === state.cluster) },
        `${c.name} (${c.alive_nodes}/${c.nodes})`);
      b.addEventListener("click", () => selectCluster(c.name));
      return b;
    }));
  if (listing.error) setStatus("store: " + listing.error, "down");
  const nodes = listing.nodes.filter((n) => n.cluster === state.cluster);
  const alive = nodes.filter((n) => n.alive).length;
  $("#node-summary").textContent = `${state.cluster || ""}: ${alive} of ${nodes.length} alive`;
  $("#nodes tbody").replaceChildren(
    ...nodes.map((n) => element("tr", { "data-node-id": n.node_id, "data-hostname": n.hostname, "data-state": n.alive ? "alive" : "dead", "data-sync": syncState(n) },
      element("td", { class: "state" }, n.alive ? "alive" : "dead"),
      element("td", {}, n.hostname),
      element("td", {}, element("code", {}, n.node_id)),
      element("td", { "data-heartbeat-ms": n.last_heartbeat_ms }, ago(n.last_heartbeat_ms)),
      element("td", {}, n.http_addr),
      element("td", {}, [...n.ips, n.bind_address].filter(Boolean).join(", ")),
      element("td", {}, n.version),
      element("td", { class: "applied" }, n.applied_version === null ? "" : "version " + n.applied_version),
      element("td", { class: "lag" }, lagText(n)),
      element("td", { class: "sync-error", "data-catch-up": n.catch_up || "" },
        [n.sync_error, n.catch_up && "needs catch-up: " + n.catch_up].filter(Boolean).join("; ")))));
}

function renderHistory(history) {
  if (history.cluster !== state.cluster) return;
  const error = $("#history-error");
  error.hidden = !history.error;
  error.textContent = history.error || "";
  $("#history-summary").textContent = history.changes.length ? `newest ${history.changes.length} kept versions` : "no versions yet";
  $("#changes tbody").replaceChildren(
    ...history.changes.map((c) => element("tr", { "data-version": c.version },
      element("td", {}, c.version),
      element("td", { title: new Date(c.changed_at_ms).toISOString() }, new Date(c.changed_at_ms).toLocaleString()),
      element("td", {}, c.hostname || c.node_id || "operator"),
      element("td", {}, c.layer),
      element("td", { class: "summary" }, c.summary))));
}

function renderCatalog(catalog) {
  if (catalog.cluster !== state.cluster) return;
  $("#catalog-version").textContent = "version " + catalog.version;
  const error = $("#catalog-error");
  error.hidden = !catalog.error;
  error.textContent = catalog.error || "";
  $("#databases").replaceChildren(
    ...(catalog.databases.length ? catalog.databases.map(renderDatabase) : [element("p", { class: "muted" }, "no databases")]));
  $("#users tbody").replaceChildren(
    ...catalog.users.map((u) => element("tr", { "data-user": u.name },
      element("td", {}, u.name),
      element("td", {}, u.admin ? "admin" : ""),
      element("td", {}, u.grants.map((g) => `${g.privilege} on ${g.database}`).join(", ")))));
}

function renderDatabase(db) {
  const policies = element("ul", {}, ...db.retention_policies.map((rp) => element("li", { "data-policy": rp.name },
    element("code", {}, rp.name), rp.name === db.default_retention_policy ? " (default)" : "",
    ` duration ${rp.duration === "0s" ? "infinite" : rp.duration}, shard groups ${rp.shard_group_duration}, replication ${rp.replica_n}`,
    ...rp.subscriptions.map((s) => element("div", { "data-subscription": s.name },
      "subscription ", element("code", {}, s.name), ` ${s.mode} → ${s.destinations.join(", ")}`)))));
  const queries = db.continuous_queries.map((cq) => element("li", { "data-continuous-query": cq.name },
    "continuous query ", element("code", {}, cq.name), ": ", element("code", {}, cq.query)));
  return element("div", { class: "db", "data-database": db.name },
    element("h3", {}, db.name), policies, ...(queries.length ? [element("ul", {}, ...queries)] : []));
}

// Heartbeat ages move on between listings; no request involved.
setInterval(() => {
  for (const td of document.querySelectorAll("[data-heartbeat-ms]")) td.textContent = ago(Number(td.dataset.heartbeatMs));
}, 1000);

connect();
