import assert from "node:assert/strict";
import { Backoff, backoffDelay, DEFAULT_BACKOFF } from "../lib/backoff.ts";

Deno.test("first retry is well under a second and delays are capped", () => {
  for (const random of [0, 0.5, 0.999]) {
    const options = { ...DEFAULT_BACKOFF, random: () => random };
    assert.ok(backoffDelay(0, options) <= 250 && backoffDelay(0, options) >= 125);
    for (let attempt = 0; attempt < 100; attempt++) {
      assert.ok(backoffDelay(attempt, options) <= DEFAULT_BACKOFF.maxMs);
    }
    assert.ok(backoffDelay(1000, options) >= DEFAULT_BACKOFF.maxMs / 2);
  }
});

Deno.test("delays grow exponentially until the cap", () => {
  const options = { ...DEFAULT_BACKOFF, random: () => 1 - Number.EPSILON };
  const delays = [0, 1, 2, 3, 4, 5, 6].map((n) => Math.round(backoffDelay(n, options)));
  assert.deepEqual(delays, [250, 500, 1000, 2000, 4000, 5000, 5000]);
});

Deno.test("jitter spreads retries between half and all of the step", () => {
  const seen = new Set<number>();
  for (let i = 0; i < 200; i++) {
    const delay = backoffDelay(3);
    assert.ok(delay >= 1000 && delay <= 2000);
    seen.add(Math.round(delay));
  }
  assert.ok(seen.size > 50);
});

Deno.test("Backoff counts failures and resets after success", () => {
  const backoff = new Backoff({ ...DEFAULT_BACKOFF, random: () => 0 });
  assert.equal(backoff.next(), 125);
  assert.equal(backoff.next(), 250);
  assert.equal(backoff.next(), 500);
  assert.equal(backoff.attempt, 3);
  backoff.reset();
  assert.equal(backoff.attempt, 0);
  assert.equal(backoff.next(), 125);
});
