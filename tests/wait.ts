/** Waiting helpers shared by the tests: polling on the real clock. */

/** Sleeps `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `condition` every `stepMs` until it holds; throws naming `what` after
 * `timeoutMs`. Resolves with the milliseconds it took.
 */
export async function until(
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 3000,
  what = "the condition",
  stepMs = 10,
): Promise<number> {
  const started = performance.now();
  while (!(await condition())) {
    if (performance.now() - started > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await delay(stepMs);
  }
  return performance.now() - started;
}
