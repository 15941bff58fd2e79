/**
 * Drives the pure decision core (lib/core.ts) in tests: a {@link CoreDriver}
 * threads the state through events at explicit `now` values, and small
 * readers pick effects out of a decision.
 */
import assert from "node:assert/strict";
import {
  type CoreConfig,
  type CoreEvent,
  type CoreState,
  decide,
  type Decision,
  type Effect,
  initialState,
  type ReplyEffect,
} from "../lib/core.ts";

/** `value` with every object in it frozen (returned for chaining). */
export function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

/** The core's state, threaded through events; every decision is kept. */
export class CoreDriver {
  /** The state after the last event. */
  state: CoreState;
  /** Every decision so far, oldest first. */
  readonly decisions: Decision[] = [];

  /** A fresh core with `config` (the core's defaults for the rest). */
  constructor(config: Partial<CoreConfig> = {}) {
    this.state = initialState(config);
  }

  /**
   * Feeds `event` at `now`; returns the decision. The state given to the
   * core is frozen all the way down: a core that changed it in place (one
   * sharing an object with its input) throws here, in every core test.
   */
  at(now: number, event: CoreEvent): Decision {
    const decision = decide(deepFreeze(this.state), event, now);
    this.state = decision.state;
    this.decisions.push(decision);
    return decision;
  }
}

/**
 * A device frame with a settings block as V1.0.3 sends it (off, always-on,
 * 40 °C unless `settings` says otherwise); `roots` are more top-level blocks
 * (e.g. wifi, which makes it a connect frame).
 */
export function settingsFrame(
  settings: Record<string, unknown>,
  roots: Record<string, unknown> = {},
): string {
  return JSON.stringify({
    ...roots,
    settings: {
      fw_version: "V1.0.3",
      work_on: 0,
      work_mode: 2,
      set_temp: 40,
      isrunning: 0,
      ...settings,
    },
  });
}

/** The frames a decision sends, in order. */
export function sends(decision: Decision): string[] {
  return decision.effects.flatMap((e) => e.type === "send" ? [e.frame] : []);
}

/** Whether a decision has an effect of `type`. */
export function has(decision: Decision, type: Effect["type"]): boolean {
  return decision.effects.some((e) => e.type === type);
}

/** The decision's reply (asserts there is one). */
export function replyOf(decision: Decision): ReplyEffect {
  const reply = decision.effects.find((e): e is ReplyEffect => e.type === "reply");
  assert.ok(reply, "a reply");
  return reply;
}

/** The messages a decision logs (only those of `level`, when given). */
export function logs(decision: Decision, level?: string): string[] {
  return decision.effects.flatMap((e) =>
    e.type === "log" && (level === undefined || e.level === level) ? [e.message] : []
  );
}

/** Asserts the effects come in order: sends, reply, notify, I/O requests, logs. */
export function assertOrdered(decision: Decision, what: string): void {
  const rank: Record<Effect["type"], number> = {
    send: 0,
    reply: 1,
    notify: 2,
    readback: 3,
    probe: 3,
    link_retry: 3,
    log: 4,
  };
  const ranks = decision.effects.map((e) => rank[e.type]);
  assert.deepEqual(ranks, [...ranks].sort((a, b) => a - b), what);
}
