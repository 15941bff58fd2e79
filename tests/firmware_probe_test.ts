import assert from "node:assert/strict";
import {
  classifyInfo,
  firmwareProblem,
  infoUrl,
  printable,
  probeFirmware,
} from "../lib/firmware_probe.ts";

const encoder = new TextEncoder();

/** A fake device: an HTTP server on 127.0.0.1 answering with `handler`, counting requests. */
function fakeDevice(handler: (request: Request) => Response | Promise<Response>) {
  const requests: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    requests.push(new URL(request.url).pathname);
    return handler(request);
  });
  const address = `127.0.0.1:${server.addr.port}`;
  return { server, address, requests, close: () => server.shutdown() };
}

/** A fake device that answers nothing until `release()` is called. */
function silentDevice() {
  let release!: () => void;
  const held = new Promise<void>((resolve) => release = resolve);
  const device = fakeDevice(async () => {
    await held;
    return new Response("late");
  });
  return { device, release };
}

const json = (value: unknown, status = 200) =>
  new Response(JSON.stringify(value), { status, headers: { "content-type": "application/json" } });

Deno.test("infoUrl: --host forms and the WebSocket URL all give http://host:port/api/v2/info", () => {
  assert.equal(infoUrl("PandaBreath.local"), "http://pandabreath.local:80/api/v2/info");
  assert.equal(infoUrl(" 10.0.0.9:8080 "), "http://10.0.0.9:8080/api/v2/info");
  assert.equal(infoUrl("ws://10.0.0.9:81/ws"), "http://10.0.0.9:81/api/v2/info");
  assert.equal(infoUrl("[fe80::1]:80"), "http://[fe80::1]:80/api/v2/info");
});

Deno.test("classifyInfo: only a 2xx JSON object naming project dragonbreath is DragonBreath", () => {
  const answer = (status: number, body: string | Uint8Array, truncated = false) => ({
    status,
    body: typeof body === "string" ? encoder.encode(body) : body,
    truncated,
  });
  const dragon = classifyInfo(answer(200, '{"project":"dragonbreath","version":"1.3.0"}'));
  assert.deepEqual(dragon, {
    kind: "dragonbreath",
    detail: "GET /api/v2/info answered project 'dragonbreath' version 1.3.0",
    version: "1.3.0",
  });
  assert.equal(classifyInfo(answer(200, '{"project":" DragonBreath "}')).kind, "dragonbreath");
  assert.equal(classifyInfo(answer(200, '{"project":"dragonbreath"}')).version, undefined);
  // Same JSON with a non-2xx status, cut off, or not an object: not trusted.
  assert.equal(classifyInfo(answer(500, '{"project":"dragonbreath"}')).kind, "stock");
  assert.equal(classifyInfo(answer(200, '{"project":"dragonbreath"}', true)).kind, "stock");
  assert.equal(classifyInfo(answer(200, '["dragonbreath"]')).kind, "stock");
  assert.equal(classifyInfo(answer(200, '{"project":"pandabreath"}')).kind, "stock");
  assert.equal(classifyInfo(answer(200, '{"name":"dragonbreath"}')).kind, "stock");
  assert.equal(classifyInfo(answer(200, "")).kind, "stock");
  assert.equal(classifyInfo(answer(200, new Uint8Array([0xff, 0xfe, 0x7b]))).kind, "stock");
  assert.equal(
    classifyInfo({ ...answer(200, '{"project":'), bodyError: "timed out" }).detail,
    "GET /api/v2/info answered HTTP 200 but the body stopped (timed out): not DragonBreath",
  );
  // Device text is made printable before it reaches a log line.
  const hostile = classifyInfo(
    answer(200, '{"project":"dragonbreath","version":"1\\u001b[2J\\n2"}'),
  );
  assert.equal(hostile.version, "1?[2J?2");
  assert.equal(printable("x".repeat(500), 20), `${"x".repeat(17)}...`);
});

Deno.test("probe: a DragonBreath device is recognised, and the problem message names it", async () => {
  const device = fakeDevice(() =>
    json({ project: "dragonbreath", version: "0.9.2", api: 2, hostname: "dragon" })
  );
  try {
    const probe = await probeFirmware(device.address);
    assert.equal(probe.kind, "dragonbreath");
    assert.equal(probe.version, "0.9.2");
    assert.deepEqual(device.requests, ["/api/v2/info"]);
    const message = firmwareProblem(device.address, probe)!;
    assert.match(message, /runs DragonBreath firmware 0\.9\.2, which has no \/ws WebSocket/);
    assert.equal(firmwareProblem(device.address, { kind: "stock", detail: "" }), null);
    // The WebSocket URL form reaches the same server.
    assert.equal((await probeFirmware(`ws://${device.address}/ws`)).kind, "dragonbreath");
  } finally {
    await device.close();
  }
});

Deno.test("probe: the stock firmware's 404, a web page, a redirect and other JSON are stock", async () => {
  const answers: Record<string, () => Response> = {
    notFound: () => new Response("Nothing matches the given URI", { status: 404 }),
    page: () => new Response("<!doctype html><title>Panda Breath</title>", { status: 200 }),
    redirect: () => new Response(null, { status: 302, headers: { location: "/index.html" } }),
    otherJson: () => json({ project: "something-else", version: "2" }),
  };
  let current = "notFound";
  const device = fakeDevice(() => answers[current]());
  try {
    for (const name of Object.keys(answers)) {
      current = name;
      const probe = await probeFirmware(device.address);
      assert.equal(probe.kind, "stock", `${name}: ${probe.detail}`);
      assert.match(probe.detail, /not DragonBreath$/, name);
    }
    // The redirect was not followed: one request per probe, all to the info path.
    assert.deepEqual(device.requests, Array(4).fill("/api/v2/info"));
  } finally {
    await device.close();
  }
});

Deno.test("probe: garbage bytes with status 200 are stock, not a crash", async () => {
  const garbage = new Uint8Array(4096);
  for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 131 + 7) % 256;
  const device = fakeDevice(() => new Response(garbage, { status: 200 }));
  try {
    const probe = await probeFirmware(device.address);
    assert.equal(probe.kind, "stock");
    assert.match(probe.detail, /not JSON/);
  } finally {
    await device.close();
  }
});

Deno.test("probe: an endless body is cut at the limit and the probe returns at once", async () => {
  let sent = 0;
  let cancelled = false;
  const chunk = encoder.encode(`{"project":"dragonbreath","pad":"${"x".repeat(1000)}`);
  const device = fakeDevice(() =>
    new Response(
      new ReadableStream<Uint8Array>({
        pull(controller) {
          sent += chunk.length;
          controller.enqueue(chunk);
        },
        cancel() {
          cancelled = true;
        },
      }),
      { status: 200, headers: { "content-type": "application/json" } },
    )
  );
  try {
    const started = performance.now();
    const probe = await probeFirmware(device.address, { maxBytes: 8192, timeoutMs: 10_000 });
    const elapsed = performance.now() - started;
    assert.equal(probe.kind, "stock");
    assert.equal(probe.detail, "GET /api/v2/info answered more than 8192 bytes: not DragonBreath");
    assert.ok(elapsed < 5000, `took ${elapsed} ms: the limit, not the timeout, must end it`);
    // The server stops streaming once the probe hangs up.
    const deadline = performance.now() + 5000;
    while (!cancelled && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(cancelled, `the server was never told to stop (sent ${sent} bytes)`);
  } finally {
    await device.close();
  }
});

Deno.test("probe: a device that never answers is unreachable after the timeout", async () => {
  const { device, release } = silentDevice();
  try {
    const started = performance.now();
    const probe = await probeFirmware(device.address, { timeoutMs: 300 });
    const elapsed = performance.now() - started;
    assert.deepEqual(probe, {
      kind: "unreachable",
      detail: `cannot reach http://${device.address}/api/v2/info: no answer within 300 ms`,
    });
    assert.ok(elapsed >= 250 && elapsed < 5000, `took ${elapsed} ms`);
  } finally {
    release();
    await device.close();
  }
});

Deno.test("probe: headers then a stalled body is stock (something answered) within the timeout", async () => {
  let stop!: () => void;
  const stopped = new Promise<void>((resolve) => stop = resolve);
  const device = fakeDevice(() =>
    new Response(
      new ReadableStream<Uint8Array>({
        async start(controller) {
          controller.enqueue(encoder.encode('{"project":'));
          await stopped;
          controller.close();
        },
      }),
      { status: 200 },
    )
  );
  try {
    const started = performance.now();
    const probe = await probeFirmware(device.address, { timeoutMs: 300 });
    assert.equal(probe.kind, "stock", probe.detail);
    assert.match(probe.detail, /body stopped/);
    assert.ok(performance.now() - started < 5000);
  } finally {
    stop();
    await device.close();
  }
});

Deno.test("probe: a closed port and a server that does not speak HTTP are unreachable", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closedPort = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const refused = await probeFirmware(`127.0.0.1:${closedPort}`);
  assert.equal(refused.kind, "unreachable");
  assert.match(
    refused.detail,
    /^cannot reach http:\/\/127\.0\.0\.1:\d+\/api\/v2\/info: .*refused/i,
  );

  const raw = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    for await (const conn of raw) {
      await conn.write(new Uint8Array([0x00, 0xff, 0x13, 0x37, 0x0a, 0x0a])).catch(() => {});
      conn.close();
    }
  })();
  try {
    const garbage = await probeFirmware(`127.0.0.1:${(raw.addr as Deno.NetAddr).port}`);
    assert.equal(garbage.kind, "unreachable", garbage.detail);
    assert.match(garbage.detail, /^cannot reach /);
    assert.doesNotMatch(garbage.detail, /[^ -~]/);
  } finally {
    raw.close();
    await serving.catch(() => {});
  }
});

Deno.test("probe: an abort signal (bridge stopping) ends it at once", async () => {
  const { device, release } = silentDevice();
  try {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const probe = await probeFirmware(device.address, {
      timeoutMs: 10_000,
      signal: controller.signal,
    });
    assert.equal(probe.kind, "unreachable");
    assert.match(probe.detail, /probe aborted/);
  } finally {
    release();
    await device.close();
  }
});
