/**
 * Status notifications are coalesced: at most 10 per second while only
 * readings change, the newest state wins, and a change that matters (a fault,
 * the link, the target, the failsafe) goes out at once. The pure decision
 * (lib/coalesce.ts) and the socket API's use of it with a real subscriber.
 */
import assert from "node:assert/strict";
import { ApiClient } from "../lib/api_client.ts";
import { ApiServer } from "../lib/api_server.ts";
import { Bridge, type BridgeStatus } from "../lib/bridge.ts";
import { sendAt, STATUS_MIN_GAP_MS, urgentPart } from "../lib/coalesce.ts";
import { initialState } from "../lib/core.ts";
import { buildStatus } from "../lib/status.ts";
import { Logger } from "../lib/log.ts";
import { FakeDevice } from "./fake_device.ts";
import { delay, until } from "./wait.ts";

const FACTS = { url: "ws://dev/ws", startedIso: "x", connectedIso: "y", logWriteFailures: 0 };

function status(change: (s: BridgeStatus) => void = () => {}): BridgeStatus {
  const s = buildStatus(initialState(), 0, FACTS);
  change(s);
  return s;
}

Deno.test("coalesce: the first status and every urgent change go now; readings wait for the gap", () => {
  const base = urgentPart(status());
  assert.equal(sendAt({ at: null, urgent: null }, base, 5), 5, "the first one at once");
  const last = { at: 1000, urgent: base };
  const reading = urgentPart(status((s) => s.temperature = 31));
  assert.equal(reading, base, "a new reading is not urgent");
  assert.equal(sendAt(last, reading, 1010), 1000 + STATUS_MIN_GAP_MS, "a reading waits");
  assert.equal(sendAt(last, reading, 1150), 1150, "after the gap it goes at once");
  assert.ok(
    STATUS_MIN_GAP_MS * 10 > 1000 && STATUS_MIN_GAP_MS <= 110,
    "at most 10 per second, with a margin for delivery jitter",
  );
  const urgent: [string, (s: BridgeStatus) => void][] = [
    ["a fault", (s) => s.faults = ["ptc_sensor_open"]],
    ["the link", (s) => s.connected = !s.connected],
    ["the target", (s) => s.target = 45],
    ["the failsafe", (s) => s.failsafe.tripped = true],
    ["a controller", (s) => s.failsafe.controller = true],
    ["the device's work_on", (s) => s.device.work_on = true],
    ["a firmware problem", (s) => s.firmware_problem = "DragonBreath"],
  ];
  for (const [what, change] of urgent) {
    const part = urgentPart(status(change));
    assert.notEqual(part, base, `${what} is urgent`);
    assert.equal(sendAt(last, part, 1010), 1010, `${what} goes at once`);
  }
});

Deno.test("coalesce: a burst of 1000 frames to a subscriber: <= 10 per second, the last reading, a fault at once", async () => {
  const device = new FakeDevice({ telemetryMs: 0 });
  const logger = new Logger("error", () => {});
  const bridge = new Bridge({ url: device.url, logger, failsafeTimeoutMs: 60_000 });
  const dir = await Deno.makeTempDir({ prefix: "pb-coalesce-" });
  const server = await ApiServer.listen({ path: `${dir}/bridge.sock`, bridge, logger });
  bridge.start();
  const client = await ApiClient.connect(`${dir}/bridge.sock`);
  try {
    const seen: { at: number; status: BridgeStatus }[] = [];
    await client.subscribe((s) => seen.push({ at: performance.now(), status: s }));
    await until(() => seen.some((n) => n.status.connected), 5000, "the device link");
    await delay(300);
    const before = seen.length;
    const started = performance.now();
    const FAULT_AT = 500;
    for (let i = 0; i < 1000; i++) {
      if (i === FAULT_AT) device.sendAll('{"settings":{"ptc_sensor_status":2}}');
      device.sendAll(`{"settings":{"warehouse_temper":${20 + i % 30}}}`);
      if (i % 10 === 9) await delay(20); // the burst spans about two seconds
    }
    const last = 20 + 999 % 30;
    await until(() => seen.at(-1)?.status.temperature === last, 3000, "the last reading");
    const burstS = (performance.now() - started) / 1000;
    const burst = seen.slice(before);
    const faulted = burst.findIndex((n) => n.status.faults.length > 0);
    assert.ok(faulted >= 0, "the fault is delivered");
    assert.equal(
      burst[faulted].status.temperature,
      20 + (FAULT_AT - 1) % 30,
      "the fault went out at once, with the reading just before it (not coalesced away)",
    );
    const ordinary = burst.filter((_, i) => i !== faulted);
    assert.ok(burstS > 1.5, `the burst lasted ${burstS.toFixed(2)} s`);
    assert.ok(
      ordinary.length <= Math.ceil(burstS * 10) + 1,
      `${ordinary.length} notifications in ${burstS.toFixed(2)} s`,
    );
    assert.ok(ordinary.length >= Math.floor(burstS * 10) - 2, "readings still flow at about 10/s");
    for (let i = 1; i < ordinary.length; i++) {
      const gap = ordinary[i].at - ordinary[i - 1].at;
      assert.ok(gap > STATUS_MIN_GAP_MS / 2, `gap ${gap.toFixed(0)} ms`);
    }
    // No second holds 11: the pending status's timer never fires before the gap is over.
    for (let i = 0; i + 10 < ordinary.length; i++) {
      const span = ordinary[i + 10].at - ordinary[i].at;
      assert.ok(span >= 1000, `11 notifications within ${span.toFixed(1)} ms`);
    }
  } finally {
    await client.close();
    await server.close();
    await bridge.stop("test over", 200);
    await device.close();
    await Deno.remove(dir, { recursive: true });
  }
});
