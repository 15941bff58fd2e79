/** Settings of an exponential backoff with jitter. */
export interface BackoffOptions {
  /** First delay before jitter, in ms. */
  initialMs: number;
  /** Upper bound of any delay, in ms. */
  maxMs: number;
  /** Growth factor per failed attempt. */
  factor: number;
  /** Source of randomness in [0, 1); injectable for tests. */
  random?: () => number;
}

/** The bridge's reconnect schedule: 125–250 ms first, doubling, capped at 5 s. */
export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 250, maxMs: 5000, factor: 2 };

/**
 * Delay before retry number `attempt` (0-based): the exponential step capped
 * at `maxMs`, with "equal jitter" (between half and all of the step) so that
 * retries never bunch at zero yet several clients do not retry in lockstep.
 */
export function backoffDelay(attempt: number, options: BackoffOptions = DEFAULT_BACKOFF): number {
  const random = options.random ?? Math.random;
  const exponent = Math.min(Math.max(attempt, 0), 30);
  const step = Math.min(options.maxMs, options.initialMs * options.factor ** exponent);
  return step / 2 + random() * (step / 2);
}

/** Tracks consecutive failures and yields the next delay; reset on success. */
export class Backoff {
  #attempt = 0;
  #options: BackoffOptions;

  /** A backoff following `options`. */
  constructor(options: BackoffOptions = DEFAULT_BACKOFF) {
    this.#options = options;
  }

  /** Number of failures since the last reset. */
  get attempt(): number {
    return this.#attempt;
  }

  /** The delay before the next retry; counts one more failure. */
  next(): number {
    return backoffDelay(this.#attempt++, this.#options);
  }

  /** Forgets the failures, after a connection proved healthy. */
  reset(): void {
    this.#attempt = 0;
  }
}
