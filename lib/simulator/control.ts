/**
 * The simulator's HTTP side: a small page at `/` for the demo, and the control endpoints
 * `/sim/...` tests and the page drive it with (state, buttons, faults, reboot, temperature,
 * sensor bias, silence, refused upgrades). Requests in, responses out, through the
 * {@link Simulator}'s public methods.
 *
 * @module
 */

import {
  BUTTON_ACTIONS,
  type ButtonAction,
  FAULT_FIELD_NAMES,
  FAULT_KINDS,
  type FaultField,
  type FaultKind,
} from "./device.ts";
import type { Simulator } from "./simulator.ts";

const STATE_RECEIVED_COUNT = 50;

const SIMULATOR_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>Panda Breath simulator</title></head>
<body style="font-family:sans-serif">
<h1>Panda Breath simulator</h1>
<pre id="state">loading…</pre>
<p>
<button onclick="act('button?action=power')">power</button>
<button onclick="act('button?action=auto')">auto</button>
<button onclick="act('button?action=always_on')">always on</button>
<button onclick="act('button?action=drying')">drying</button>
<button onclick="act('reboot?down_ms=3000')">reboot</button>
</p>
<script>
async function act(path) { await fetch('/sim/' + path, { method: 'POST' }); }
async function poll() {
  try {
    const state = await (await fetch('/sim/state')).json();
    delete state.received;
    document.getElementById('state').textContent = JSON.stringify(state, null, 2);
  } catch { /* device rebooting */ }
  setTimeout(poll, 1000);
}
poll();
</script>
</body></html>
`;

function jsonResponse(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", "Cache-Control": "no-store" },
  });
}

function badRequest(message: string): Response {
  return jsonResponse(400, { error: message });
}

/** Reads a numeric query parameter within bounds; returns an error message when invalid. */
function numberParam(
  query: URLSearchParams,
  name: string,
  min: number,
  max: number,
): number | string {
  const raw = query.get(name);
  if (raw === null || raw.trim() === "") return `missing ${name}`;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || value > max) {
    return `${name} must be a number from ${min} to ${max}`;
  }
  return value;
}

function isRead(method: string): boolean {
  return method === "GET" || method === "HEAD";
}

/** Answers a request that is not a WebSocket upgrade of `/ws`. */
export function handleHttp(sim: Simulator, request: Request): Response {
  const url = new URL(request.url);
  if (url.pathname === "/") {
    if (!isRead(request.method)) return jsonResponse(405, { error: "use GET" });
    return new Response(SIMULATOR_PAGE, {
      headers: { "Content-Type": "text/html; charset=utf-8" },
    });
  }
  if (url.pathname.startsWith("/sim/")) return handleControl(sim, request.method, url);
  return new Response("Not Found", { status: 404, headers: { "Content-Type": "text/plain" } });
}

function handleControl(sim: Simulator, method: string, url: URL): Response {
  const action = url.pathname.slice("/sim/".length);
  if (action === "state") {
    if (!isRead(method)) return jsonResponse(405, { error: "use GET" });
    return jsonResponse(200, controlState(sim));
  }
  const handlers: Record<string, (sim: Simulator, query: URLSearchParams) => Response> = {
    button: controlButton,
    fault: controlFault,
    reboot: controlReboot,
    temperature: controlTemperature,
    sensor_bias: controlSensorBias,
    silence: controlSilence,
    refuse_upgrades: controlRefuseUpgrades,
  };
  const handler = Object.hasOwn(handlers, action) ? handlers[action] : undefined;
  if (!handler) return jsonResponse(404, { error: `unknown control endpoint ${url.pathname}` });
  if (method !== "POST") return jsonResponse(405, { error: "use POST" });
  return handler(sim, url.searchParams);
}

function controlState(sim: Simulator): Record<string, unknown> {
  const state = sim.state;
  return {
    ...state,
    temperature: Math.round(state.temperature * 10) / 10,
    clients: sim.clientCount,
    sockets: sim.socketCount,
    received: sim.received.slice(-STATE_RECEIVED_COUNT).map(({ at, frame }) => ({
      at,
      frame: frame === undefined ? null : frame,
    })),
  };
}

function ok(sim: Simulator, extra: Record<string, unknown> = {}): Response {
  return jsonResponse(200, { ok: true, ...extra, ...controlState(sim) });
}

function controlButton(sim: Simulator, query: URLSearchParams): Response {
  const action = query.get("action") ?? "";
  if (!(BUTTON_ACTIONS as readonly string[]).includes(action)) {
    return badRequest(`action must be one of ${BUTTON_ACTIONS.join(", ")}`);
  }
  sim.pressButton(action as ButtonAction);
  return ok(sim);
}

function controlFault(sim: Simulator, query: URLSearchParams): Response {
  if (query.has("field")) {
    const field = query.get("field") ?? "";
    if (!(FAULT_FIELD_NAMES as readonly string[]).includes(field)) {
      return badRequest(`field must be one of ${FAULT_FIELD_NAMES.join(", ")}`);
    }
    const code = numberParam(query, "code", 1, 255);
    if (typeof code === "string") return badRequest(code);
    if (!Number.isInteger(code)) return badRequest("code must be a whole number from 1 to 255");
    sim.injectFaultCode(field as FaultField, code);
    return ok(sim);
  }
  const kind = query.get("kind") ?? "";
  if (kind === "clear") {
    sim.clearFaults();
    return ok(sim);
  }
  if (!(FAULT_KINDS as readonly string[]).includes(kind)) {
    return badRequest(`kind must be one of ${FAULT_KINDS.join(", ")}, clear`);
  }
  sim.injectFault(kind as FaultKind);
  return ok(sim);
}

/** Answers first; the reboot starts once the answer is on its way. */
function controlReboot(sim: Simulator, query: URLSearchParams): Response {
  const downMs = query.has("down_ms")
    ? numberParam(query, "down_ms", 0, 600_000)
    : sim.rebootDownMs;
  if (typeof downMs === "string") return badRequest(downMs);
  setTimeout(() => sim.reboot(downMs), 0);
  return ok(sim, { down_ms: downMs });
}

function controlTemperature(sim: Simulator, query: URLSearchParams): Response {
  const value = numberParam(query, "value", -50, 300);
  if (typeof value === "string") return badRequest(value);
  sim.setTemperature(value);
  return ok(sim);
}

function controlSensorBias(sim: Simulator, query: URLSearchParams): Response {
  const value = numberParam(query, "value", -20, 20);
  if (typeof value === "string") return badRequest(value);
  sim.setSensorBias(value);
  return ok(sim);
}

function controlSilence(sim: Simulator, query: URLSearchParams): Response {
  const on = query.get("on");
  if (on !== "1" && on !== "0") return badRequest("on must be 1 or 0");
  sim.silence(on === "1");
  return ok(sim);
}

function controlRefuseUpgrades(sim: Simulator, query: URLSearchParams): Response {
  const status = numberParam(query, "status", 0, 599);
  if (typeof status === "string") return badRequest(status);
  if (status !== 0 && (status < 200 || !Number.isInteger(status))) {
    return badRequest("status must be 0 (accept upgrades) or an HTTP status from 200 to 599");
  }
  sim.refuseUpgrades(status === 0 ? null : status);
  return ok(sim);
}
