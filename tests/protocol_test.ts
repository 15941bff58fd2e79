import assert from "node:assert/strict";
import {
  buildDesiredStateFrame,
  buildOnFrame,
  MAX_FRAME_BYTES,
  OFF_FRAME,
  parseDeviceFrame,
  parsePrinterBinding,
  validateTarget,
} from "../lib/protocol.ts";

const CONNECT_FRAME = JSON.stringify({
  wifi: { ssid: "home", password: "wifi-secret", scan: 0 },
  sta: { hostname: "PandaBreath" },
  ap: { ssid: "PandaBreath", password: "ap-secret", ip: "192.168.254.1" },
  settings: {
    fw_version: "V1.0.3",
    language: 0,
    printer_type: 1,
    work_on: 1,
    work_mode: 2,
    set_temp: 45,
    filtertemp: 30,
    hotbedtemp: 60,
    custom_temp: 40,
    custom_timer: 2,
    isrunning: 0,
    remaining_seconds: 0,
  },
  printer: { name: "P1S", sn: "01S00A", access_code: "bambu-secret", ip: "10.0.0.9", state: 3 },
});

Deno.test("connect frame becomes a typed report without any secret", () => {
  const { report, dropped } = parseDeviceFrame(CONNECT_FRAME);
  assert.deepEqual(dropped, []);
  assert.deepEqual(report, {
    isConnectFrame: true,
    isSettingsBlock: true,
    workOn: true,
    workMode: 2,
    setTemp: 45,
    firmware: "V1.0.3",
    dryingRunning: false,
    remainingSeconds: 0,
    customTemp: 40,
    customTimer: 2,
    printerState: 3,
  });
  for (const secret of ["wifi-secret", "ap-secret", "bambu-secret", "01S00A"]) {
    assert.ok(!JSON.stringify(report).includes(secret));
  }
});

Deno.test("telemetry frame carries the chamber temperature only", () => {
  const { report } = parseDeviceFrame('{"settings":{"warehouse_temper":31}}');
  assert.deepEqual(report, { isConnectFrame: false, isSettingsBlock: false, temperature: 31 });
});

Deno.test("a calibrated temperature is preferred over warehouse_temper", () => {
  const frame = '{"settings":{"warehouse_temper":31,"cal_warehouse_temp":33.5}}';
  assert.equal(parseDeviceFrame(frame).report?.temperature, 33.5);
  const chamber = '{"settings":{"warehouse_temper":31,"chamber_temp":32}}';
  assert.equal(parseDeviceFrame(chamber).report?.temperature, 32);
});

Deno.test("an implausible calibrated value falls back to warehouse_temper", () => {
  const { report, dropped } = parseDeviceFrame(
    '{"settings":{"cal_warehouse_temp":1e308,"warehouse_temper":30}}',
  );
  assert.equal(report?.temperature, 30);
  assert.equal(dropped.length, 1);
});

Deno.test("work_on accepts 0/1 and booleans, nothing else", () => {
  assert.equal(parseDeviceFrame('{"settings":{"work_on":0}}').report?.workOn, false);
  assert.equal(parseDeviceFrame('{"settings":{"work_on":true}}').report?.workOn, true);
  for (const bad of ['"1"', "2", "null", "[1]", "0.5"]) {
    const { report, dropped } = parseDeviceFrame(`{"settings":{"work_on":${bad}}}`);
    assert.equal(report?.workOn, undefined, bad);
    assert.equal(report?.isSettingsBlock, false, bad);
    assert.equal(dropped.length, 1, bad);
  }
});

Deno.test("faults are named; zero clears; unknown codes count as faults", () => {
  const push = parseDeviceFrame(
    '{"settings":{"work_on":0,"warehouse_sensor_status":2,"ptc_heater_status":1}}',
  ).report;
  assert.deepEqual(push?.faults, {
    chamber_sensor_short: false,
    chamber_sensor_open: true,
    chamber_sensor_unknown: false,
    heater_no_heat: true,
    heater_unknown: false,
  });
  const cleared = parseDeviceFrame('{"settings":{"ptc_sensor_status":0}}').report;
  assert.deepEqual(cleared?.faults, {
    ptc_sensor_short: false,
    ptc_sensor_open: false,
    ptc_sensor_unknown: false,
  });
  // A fault field that does not say 0 is a fault, whatever it says.
  for (const value of ["9", '"1"', "null", "-1", "2.5", "{}"]) {
    const unknown = parseDeviceFrame(`{"settings":{"ptc_sensor_status":${value}}}`);
    assert.equal(unknown.report?.faults?.ptc_sensor_unknown, true, value);
    assert.equal(unknown.report?.faults?.ptc_sensor_open, false, value);
    assert.deepEqual(unknown.dropped, [], value);
  }
  const heater = parseDeviceFrame('{"settings":{"ptc_heater_status":2}}').report;
  assert.deepEqual(heater?.faults, { heater_no_heat: false, heater_unknown: true });
});

Deno.test("isrunning is read as the drying-run flag", () => {
  assert.equal(
    parseDeviceFrame('{"settings":{"work_on":1,"isrunning":1}}').report?.dryingRunning,
    true,
  );
  assert.equal(
    parseDeviceFrame('{"settings":{"work_on":1,"isrunning":0}}').report?.dryingRunning,
    false,
  );
  const bad = parseDeviceFrame('{"settings":{"work_on":1,"isrunning":"1"}}');
  assert.equal(bad.report?.dryingRunning, undefined);
  assert.deepEqual(bad.dropped, ["isrunning: not 0/1 or a boolean"]);
});

Deno.test("garbage frames are dropped whole, with a reason and no content", () => {
  const junk: (string | Uint8Array)[] = [
    "not json",
    "null",
    '"a string"',
    "[1,2]",
    "1e308",
    '{"settings":"x"}',
    new Uint8Array([0xff, 0xfe, 0x00]),
    "x".repeat(MAX_FRAME_BYTES + 1),
  ];
  for (const frame of junk) {
    const { report, dropped } = parseDeviceFrame(frame);
    assert.ok(report === null || report.temperature === undefined);
    assert.ok(dropped.length >= 1);
    assert.ok(dropped.every((reason) => reason.length < 80));
  }
});

Deno.test("non-finite, absurd and wrong-typed temperatures are dropped", () => {
  for (const value of ["1e308", "-300", "151", '"31"', "null", "true", "{}"]) {
    const { report, dropped } = parseDeviceFrame(`{"settings":{"warehouse_temper":${value}}}`);
    assert.equal(report?.temperature, undefined, value);
    assert.equal(dropped.length, 1, value);
  }
});

Deno.test("binary frames holding UTF-8 JSON are parsed", () => {
  const bytes = new TextEncoder().encode('{"settings":{"warehouse_temper":29}}');
  assert.equal(parseDeviceFrame(bytes).report?.temperature, 29);
});

Deno.test("ON and OFF frames are exactly the documented ones", () => {
  assert.equal(
    buildOnFrame(45),
    '{"settings":{"work_mode":2,"set_temp":45,"temp":45,"isrunning":0,"work_on":true}}',
  );
  assert.equal(OFF_FRAME, '{"settings":{"work_on":false}}');
  assert.equal(buildDesiredStateFrame(0), OFF_FRAME);
  assert.equal(buildDesiredStateFrame(30), buildOnFrame(30));
  assert.deepEqual(JSON.parse(buildOnFrame(60)).settings.work_on, true);
});

Deno.test("ON frame refuses anything the device would wrap", () => {
  for (const bad of [0, -1, 256, 300, 45.5, NaN]) {
    assert.throws(() => buildOnFrame(bad), RangeError);
  }
});

Deno.test("targets are range-checked, rounded, never wrapped", () => {
  assert.deepEqual(validateTarget(45, 60), { ok: true, target: 45 });
  assert.deepEqual(validateTarget(44.6, 60), { ok: true, target: 45 });
  assert.deepEqual(validateTarget(0, 60), { ok: true, target: 0 });
  assert.deepEqual(validateTarget(0.4, 60), { ok: true, target: 0 });
  assert.deepEqual(validateTarget(60.4, 60), { ok: true, target: 60 });
  for (const value of [61, 300, -1, -0.1, 60.5]) {
    const check = validateTarget(value, 60);
    assert.equal(check.ok, false, String(value));
    assert.equal(!check.ok && check.code, "out_of_range");
    assert.match(!check.ok ? check.message : "", /use 0 \(off\) to 60 °C/);
  }
  for (const value of ["45", null, undefined, NaN, Infinity, {}, true]) {
    const check = validateTarget(value, 60);
    assert.equal(!check.ok && check.code, "invalid_params", String(value));
  }
});

Deno.test("printer binding: Bambu without serial or access code, Klipper host:port, none", () => {
  const bambu = parsePrinterBinding(CONNECT_FRAME);
  assert.deepEqual(bambu, { kind: "bambu", state: 3 });
  const text = JSON.stringify(bambu);
  for (const secret of ["01S00A", "bambu-secret", "wifi-secret", "ap-secret"]) {
    assert.ok(!text.includes(secret), `binding carries ${secret}`);
  }
  assert.deepEqual(
    parsePrinterBinding(
      '{"printer":{"name":"K","host":"192.168.1.20","port":7125,"state":3,"scan":0}}',
    ),
    { kind: "klipper", host: "192.168.1.20", port: 7125, state: 3 },
  );
  assert.deepEqual(parsePrinterBinding('{"printer":{"name":"","state":0}}'), {
    kind: "none",
    state: 0,
  });
  assert.deepEqual(parsePrinterBinding('{"printer":{"host":"bad host\\n","port":99999}}'), {
    kind: "none",
    state: null,
  });
  assert.deepEqual(
    parsePrinterBinding('{"printer":{"host":"k.local","port":"x","state":"?"}}'),
    { kind: "klipper", host: "k.local", port: null, state: null },
  );
  assert.equal(parsePrinterBinding('{"settings":{"warehouse_temper":30}}'), null);
  assert.equal(parsePrinterBinding("not json"), null);
  assert.equal(parsePrinterBinding('{"printer":[1]}'), null);
});
