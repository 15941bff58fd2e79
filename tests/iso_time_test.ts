import assert from "node:assert/strict";
import { isoTime } from "../lib/iso_time.ts";

Deno.test("isoTime writes what toISOString writes, across the years 0000–9999", () => {
  const last = Date.UTC(9999, 11, 31, 23, 59, 59, 999);
  const first = Date.parse("0000-01-01T00:00:00.000Z");
  const edges = [
    0,
    1,
    999,
    first,
    last,
    Date.UTC(2000, 1, 29, 12),
    Date.UTC(1969, 11, 31, 23, 59, 59, 999),
  ];
  let seed = 12345;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const times = [
    ...edges,
    ...Array.from({ length: 20_000 }, () => first + random() * (last - first)),
  ]
    .map(Math.floor);
  for (const ms of times) assert.equal(isoTime(ms), new Date(ms).toISOString(), String(ms));
});

Deno.test("isoTime refuses what toISOString refuses, and years it would write with a sign", () => {
  for (
    const bad of [
      NaN,
      Infinity,
      -Infinity,
      8.64e15 + 1,
      Date.UTC(10000, 0, 1),
      Date.UTC(-1, 0),
      Date.parse("0000-01-01T00:00:00.000Z") - 1,
    ]
  ) {
    assert.throws(() => isoTime(bad), RangeError, String(bad));
  }
});
