// The operator dashboard: polls the hotline's JSON API and shows trunk health, the quality
// of each trunk's recent calls, active calls (with how they sound), recent tickets and
// drills. The page itself holds no data: the API token is asked
// for once and kept in this tab's sessionStorage. Data reaches the page only through
// textContent and attributes, never as HTML.
"use strict";

const REFRESH_MS = 2000;
const REQUEST_TIMEOUT_MS = 5000;
const TOKEN_KEY = "hotline.apiToken";
const SOURCES = {
  trunks: "/api/trunks",
  quality: "/api/trunks/quality?calls=20",
  calls: "/api/calls?active=true&limit=50",
  tickets: "/api/tickets?limit=15",
  drills: "/api/drills?limit=10",
};
const STATE_LOOK = {up: "ok", suspect: "warn", recovering: "warn", down: "bad"};
const RESULT_LOOK = {passed: "ok", interrupted: "warn", failed: "bad"};
const PRIORITY_LOOK = {P1: "bad", P2: "warn", P3: "info", P4: "muted"};
const RATING_LOOK = {good: "ok", poor: "warn", bad: "bad", unknown: "muted"};
// As ivr/quality.py: below these estimated MOS a call is poor, or bad (ITU-T G.107).
const MOS_POOR = 3.6;
const MOS_BAD = 3.1;
const NO_VALUE = "\u2013";

class Unauthorized extends Error {}

class Unavailable extends Error {}

let session = 0; // bumped on connect and sign-out, so late answers of an old one are dropped
let timer = null;
let lastUpdated = null;

// Small helpers.

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function badge(text, look) {
  return el("span", "badge " + (look || "muted"), text);
}

function pad(n) {
  return String(n).padStart(2, "0");
}

function clock(date) {
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

function when(epochSeconds) {
  if (typeof epochSeconds !== "number") return NO_VALUE;
  const date = new Date(epochSeconds * 1000);
  if (date.toDateString() === new Date().toDateString()) return clock(date);
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function age(epochSeconds) {
  if (typeof epochSeconds !== "number") return NO_VALUE;
  const s = Math.max(0, Math.round(Date.now() / 1000 - epochSeconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)}:${pad(s % 60)}`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d`;
}

// As failover.notify.mask_number: all but the last four digits starred.
function mask(number) {
  return String(number ?? "").replace(/[0-9](?=(?:[^0-9]*[0-9]){4})/g, "*");
}

function stacked(main, detail) {
  const cell = el("div");
  cell.append(main instanceof Node ? main : String(main ?? NO_VALUE));
  if (detail) cell.append(el("div", "detail", detail));
  return cell;
}

// Tables.

function fillTable(id, rows, cellsOf, emptyText) {
  const section = document.getElementById(id);
  const columns = section.querySelectorAll("thead th").length;
  const lines = rows.map((row) => {
    const line = el("tr");
    for (const value of cellsOf(row, line)) {
      const cell = el("td");
      cell.append(value instanceof Node ? value : String(value ?? NO_VALUE));
      line.append(cell);
    }
    return line;
  });
  if (lines.length === 0) {
    const cell = el("td", "empty", emptyText);
    cell.colSpan = columns;
    const line = el("tr");
    line.append(cell);
    lines.push(line);
  }
  section.querySelector("tbody").replaceChildren(...lines);
}

function trunkCells(row, line) {
  line.dataset.trunk = row.name;
  line.dataset.state = row.state;
  const state = badge(String(row.state).toUpperCase(), STATE_LOOK[row.state]);
  state.classList.add("state");
  const ms = (value) => (typeof value === "number" ? `${Math.round(value)} ms` : null);
  // A DOWN trunk's round-trip time is from before it went down.
  const down = row.state === "down";
  const rtt = down ? NO_VALUE : ms(row.rtt_ms) || NO_VALUE;
  const rttDetail = down ? ms(row.rtt_ms) && `was ${ms(row.rtt_ms)}`
    : ms(row.rtt_p95_ms) && `p95 ${ms(row.rtt_p95_ms)}`;
  return [
    el("strong", null, row.name), row.node, row.priority,
    stacked(state, row.state === "up" ? null : row.last_error),
    stacked(rtt, rttDetail), override(row.override),
    stacked(when(row.since_ts), row.since_ts ? `${age(row.since_ts)} ago` : null),
  ];
}

function rating(mos) {
  if (typeof mos !== "number") return "unknown";
  return mos < MOS_BAD ? "bad" : mos < MOS_POOR ? "poor" : "good";
}

function mosBadge(mos, look) {
  const text = typeof mos === "number" ? mos.toFixed(2) : NO_VALUE;
  return badge(text, RATING_LOOK[look || rating(mos)]);
}

function qualityCells(row, line) {
  line.dataset.trunk = row.trunk;
  line.dataset.rating = row.rating;
  const look = RATING_LOOK[row.rating] ? row.rating : "unknown";
  const verdict = badge(look === "unknown" ? "NO DATA" : look.toUpperCase(), RATING_LOOK[look]);
  verdict.classList.add("rating");
  const loss = typeof row.worst_loss_percent === "number"
    ? `${row.worst_loss_percent.toFixed(2)} %` : NO_VALUE;
  return [
    el("strong", null, row.trunk), row.legs,
    mosBadge(row.median_mos, look), mosBadge(row.worst_mos), loss, verdict,
    stacked(when(row.last_at), row.last_at ? `${age(row.last_at)} ago` : null),
  ];
}

// A live call's MOS so far: the caller's leg, and the staff leg while it is bridged.
function callQuality(call) {
  const caller = call.quality && typeof call.quality.mos === "number" ? call.quality.mos : null;
  const attempts = Array.isArray(call.forward_attempts) ? call.forward_attempts : [];
  const last = attempts[attempts.length - 1];
  const staff = last && last.quality && typeof last.quality.mos === "number" ? last : null;
  const main = mosBadge(caller);
  main.classList.add("mos");
  return stacked(main, staff &&
    `staff ${staff.quality.mos.toFixed(2)} via ${staff.trunk} (${rating(staff.quality.mos)})`);
}

function override(value) {
  if (!value) return NO_VALUE;
  const until = value.expires_at ? `, until ${when(Date.parse(value.expires_at) / 1000)}` : "";
  const main = el("div");
  main.append(badge(value.action, value.action === "drain" ? "warn" : "info"),
    ` by ${value.by}`);
  return stacked(main, `${value.reason}${until}`);
}

function callCells(call, line) {
  line.dataset.call = call.id;
  const path = Array.isArray(call.path) ? call.path : [];
  return [
    el("span", "number", mask(call.caller)), call.trunk, when(call.started_at),
    age(call.started_at), path.length ? path[path.length - 1] : NO_VALUE, callQuality(call),
  ];
}

function ticketCells(ticket, line) {
  line.dataset.ticket = ticket.id;
  return [
    el("span", "number", ticket.id), badge(ticket.priority, PRIORITY_LOOK[ticket.priority]),
    ticket.status, ticket.category, when(ticket.created_at),
  ];
}

function drillCells(drill, line) {
  line.dataset.drill = drill.id;
  const calls = Array.isArray(drill.calls) ? drill.calls : [];
  const passed = calls.filter((c) => c && c.ok).length;
  const summary = el("div");
  summary.append(el("div", null,
    `${passed} of ${calls.length} test calls passed; by ${drill.by} (${drill.trigger})` +
    (drill.restored ? "" : "; overrides NOT restored")));
  for (const problem of Array.isArray(drill.problems) ? drill.problems : []) {
    summary.append(el("div", "detail problem", problem));
  }
  return [when(drill.started_at), drill.trunk,
    badge(String(drill.result).toUpperCase(), RESULT_LOOK[drill.result]), summary];
}

const RENDER = {
  trunks: (rows) => fillTable("trunks", rows, trunkCells,
    "No trunks reported yet."),
  quality: (rows) => fillTable("quality", rows, qualityCells, "No trunks configured."),
  calls: (rows) => {
    document.querySelector("#calls .count").textContent = `(${rows.length})`;
    fillTable("calls", rows, callCells, "No calls in progress.");
  },
  tickets: (rows) => fillTable("tickets", rows, ticketCells, "No tickets yet."),
  drills: (rows) => fillTable("drills", rows, drillCells, "No drills yet."),
};

// Talking to the API.

async function load(path, token) {
  const abort = new AbortController();
  const timeout = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
  try {
    let response;
    try {
      response = await fetch(path, {
        headers: {Authorization: `Bearer ${token}`, Accept: "application/json"},
        cache: "no-store", credentials: "omit", signal: abort.signal,
      });
    } catch (error) {
      throw new Unavailable("Cannot reach the hotline server.");
    }
    if (response.status === 401) throw new Unauthorized();
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const said = body && typeof body.error === "string" ? body.error : "";
      if (response.status === 503 && /redis/i.test(said)) {
        throw new Unavailable("Redis unreachable: the server cannot read the hotline's state.");
      }
      throw new Unavailable(said || `The server answered ${response.status}.`);
    }
    return body;
  } finally {
    clearTimeout(timeout);
  }
}

async function refresh(mine) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return showLogin(null);
  const names = Object.keys(SOURCES);
  const results = await Promise.allSettled(names.map((name) => load(SOURCES[name], token)));
  if (mine !== session) return; // signed out or reconnected meanwhile
  if (results.some((r) => r.status === "rejected" && r.reason instanceof Unauthorized)) {
    sessionStorage.removeItem(TOKEN_KEY);
    return showLogin("The server refused this token (401 Unauthorized). " +
      "Enter the current API token.");
  }
  const problems = new Set();
  names.forEach((name, i) => {
    const result = results[i];
    const stale = result.status === "rejected";
    document.querySelector(`#${name} .stale-tag`).hidden = !stale;
    document.getElementById(name).classList.toggle("stale", stale);
    if (stale) {
      problems.add(result.reason instanceof Unavailable ? result.reason.message
        : `Could not show ${name}: ${result.reason}`);
    } else {
      RENDER[name](Array.isArray(result.value) ? result.value : []);
    }
  });
  if (problems.size === 0) lastUpdated = new Date();
  showDashboard([...problems]);
  timer = setTimeout(() => refresh(mine), REFRESH_MS);
}

// What is on screen.

function showDashboard(problems) {
  document.getElementById("login").hidden = true;
  document.getElementById("dashboard").hidden = false;
  document.getElementById("sign-out").hidden = false;
  const banner = document.getElementById("banner");
  banner.hidden = problems.length === 0;
  banner.replaceChildren(...problems.map((p) => el("p", null, p)));
  if (problems.length) {
    banner.append(el("p", "detail", "Showing the last data received (marked stale); " +
      `retrying every ${REFRESH_MS / 1000} s.`));
  }
  const updated = document.getElementById("updated");
  updated.textContent = lastUpdated ? `Last updated ${clock(lastUpdated)}` : "No data yet";
  if (problems.length) updated.textContent += " (stale)";
  updated.classList.toggle("stale", problems.length > 0);
}

function showLogin(message) {
  stop();
  document.getElementById("dashboard").hidden = true;
  document.getElementById("banner").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("updated").textContent = "Not connected";
  document.getElementById("login").hidden = false;
  const error = document.getElementById("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  const button = document.getElementById("connect");
  button.disabled = false;
  button.textContent = "Connect";
  document.getElementById("token").focus();
}

function stop() {
  session += 1;
  clearTimeout(timer);
  timer = null;
}

function connect() {
  stop();
  lastUpdated = null;
  refresh(session);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    const token = input.value.trim();
    input.value = "";
    if (!token) return;
    if (!/^[\x21-\x7e]+$/.test(token)) { // fetch() would refuse it in a header
      showLogin("That is not a token: a token is letters, digits and punctuation only.");
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    const button = document.getElementById("connect");
    button.disabled = true;
    button.textContent = "Connecting\u2026";
    connect();
  });
  document.getElementById("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(null);
  });
  if (sessionStorage.getItem(TOKEN_KEY)) connect();
  else showLogin(null);
});
