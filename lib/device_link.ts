import { Backoff, type BackoffOptions, DEFAULT_BACKOFF } from "./backoff.ts";
import type { Logger } from "./log.ts";
import { KEEPALIVE_FRAME } from "./protocol.ts";

/** Timing of the device link. All in milliseconds. */
export interface LinkTimings {
  /** A link with no frame for this long is dead (telemetry comes every ~500 ms). */
  watchdogMs: number;
  /** Interval of the `{}` keepalive that keeps the device from evicting the socket. */
  keepaliveMs: number;
  /** A handshake taking longer than this is abandoned. */
  connectTimeoutMs: number;
  /** Shortest wait between two checks of the watchdog and keepalive. */
  tickMs: number;
}

/** Defaults: dead after 5 s of silence, keepalive every 15 s. */
export const DEFAULT_LINK_TIMINGS: LinkTimings = {
  watchdogMs: 5000,
  keepaliveMs: 15000,
  connectTimeoutMs: 5000,
  tickMs: 500,
};

/** What the link tells its owner. */
export interface LinkHandlers {
  /** The WebSocket is open: assert the desired state now. */
  onOpen(): void;
  /** A frame arrived (text, or binary as bytes). */
  onFrame(data: string | Uint8Array): void;
  /** The link went down (closed, failed, or declared dead by the watchdog). */
  onDown(reason: string): void;
  /** A connection attempt failed before the WebSocket opened. */
  onConnectFailed?(reason: string): void;
}

/** Settings of a {@link DeviceLink}. */
export interface DeviceLinkOptions {
  /** Device WebSocket URL, e.g. `ws://PandaBreath.local:80/ws`. */
  url: string;
  /** Where link events are logged. */
  logger: Logger;
  /** Called on open, frame, down and failed connect. */
  handlers: LinkHandlers;
  /** Overrides of {@link DEFAULT_LINK_TIMINGS}. */
  timings?: Partial<LinkTimings>;
  /** Reconnect backoff; {@link DEFAULT_BACKOFF} if absent. */
  backoff?: BackoffOptions;
}

/**
 * One persistent WebSocket to the device: reconnects forever with backoff
 * and jitter, declares the link dead when frames stop (the device sends no
 * pings and answers none), and sends a keepalive. Never more than one
 * connection at a time.
 */
export class DeviceLink {
  /** The device's WebSocket URL. */
  readonly url: string;
  #logger: Logger;
  #handlers: LinkHandlers;
  #timings: LinkTimings;
  #backoff: Backoff;
  #ws: WebSocket | null = null;
  #open = false;
  #healthy = false;
  #openedAt = 0;
  #lastFrameAt = 0;
  #lastSendAt = 0;
  #tick: ReturnType<typeof setTimeout> | undefined;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #stopped = true;
  #closing = new Set<Promise<void>>();
  #retryFloorMs = 0;

  /** A link to `options.url`; call {@link start} to connect. */
  constructor(options: DeviceLinkOptions) {
    this.url = options.url;
    this.#logger = options.logger;
    this.#handlers = options.handlers;
    this.#timings = { ...DEFAULT_LINK_TIMINGS, ...options.timings };
    this.#backoff = new Backoff(options.backoff ?? DEFAULT_BACKOFF);
  }

  /** Whether the WebSocket is open. */
  get connected(): boolean {
    return this.#open;
  }

  /** Milliseconds since the last frame from the device, or null if none on this link. */
  get lastFrameAgeMs(): number | null {
    return this.#open && this.#lastFrameAt ? performance.now() - this.#lastFrameAt : null;
  }

  /** Starts connecting; reconnects until {@link stop}. */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#connect();
  }

  /**
   * Closes the link and every timer; resolves once the socket is closed, or
   * after `closeTimeoutMs`: a half-open link never answers the close frame.
   */
  async stop(closeTimeoutMs = 1000): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearTimeout(this.#tick);
    clearTimeout(this.#retry);
    this.#drop("bridge stopping", false);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => timer = setTimeout(resolve, closeTimeoutMs));
    await Promise.race([Promise.all(this.#closing), timeout]);
    clearTimeout(timer);
  }

  /**
   * Waits at least `ms` between connection attempts from now on (0 restores
   * the backoff alone): for a device that answers but is not one to drive.
   */
  setRetryFloor(ms: number): void {
    this.#retryFloorMs = Math.max(0, ms);
  }

  /** Sends a text frame; returns false when the link is not open. */
  send(text: string): boolean {
    if (!this.#open || !this.#ws) return false;
    try {
      this.#ws.send(text);
      this.#lastSendAt = performance.now();
      return true;
    } catch (error) {
      this.#drop(`send failed: ${(error as Error).message}`);
      return false;
    }
  }

  #connect(): void {
    if (this.#stopped) return;
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.url);
    } catch (error) {
      this.#logger.error("cannot open device WebSocket", {
        url: this.url,
        error: (error as Error).message,
      });
      this.#scheduleRetry();
      return;
    }
    ws.binaryType = "arraybuffer";
    this.#ws = ws;
    this.#open = false;
    this.#healthy = false;
    this.#openedAt = performance.now();
    this.#lastFrameAt = 0;
    this.#armTick();
    ws.onopen = () => {
      if (ws !== this.#ws) return;
      this.#open = true;
      this.#lastFrameAt = this.#lastSendAt = performance.now();
      this.#armTick();
      this.#handlers.onOpen();
    };
    ws.onmessage = (event: MessageEvent) => {
      if (ws !== this.#ws) return;
      this.#lastFrameAt = performance.now();
      if (!this.#healthy) {
        this.#healthy = true;
        this.#backoff.reset();
      }
      const data = event.data;
      this.#handlers.onFrame(typeof data === "string" ? data : new Uint8Array(data));
    };
    ws.onerror = (event: Event) => {
      if (ws !== this.#ws) return;
      const message = (event as ErrorEvent).message || "WebSocket error";
      this.#drop(message);
    };
    ws.onclose = (event: CloseEvent) => {
      if (ws !== this.#ws) return;
      this.#drop(`closed by device (code ${event.code})`);
    };
  }

  /** Abandons the current socket (if any) and schedules a reconnect. */
  #drop(reason: string, reconnect = true): void {
    const ws = this.#ws;
    if (!ws) return;
    this.#ws = null;
    const wasOpen = this.#open;
    this.#open = false;
    this.#closeQuietly(ws);
    if (wasOpen && reconnect) {
      this.#handlers.onDown(reason);
    } else if (!wasOpen && reconnect) {
      this.#logger.limited("connect-failed", 30000, "warn", "cannot reach device", {
        url: this.url,
        reason,
      });
      this.#handlers.onConnectFailed?.(reason);
    }
    if (reconnect) this.#scheduleRetry();
  }

  #closeQuietly(ws: WebSocket): void {
    ws.onopen = ws.onmessage = ws.onerror = null;
    if (ws.readyState === WebSocket.CLOSED) return;
    const closed = new Promise<void>((resolve) => {
      ws.onclose = () => resolve();
    });
    const tracked = closed.finally(() => this.#closing.delete(tracked));
    this.#closing.add(tracked);
    try {
      ws.close();
    } catch {
      // Already closing: the close event still arrives.
    }
  }

  #scheduleRetry(): void {
    if (this.#stopped) return;
    clearTimeout(this.#retry);
    const delay = Math.max(this.#backoff.next(), this.#retryFloorMs);
    this.#logger.debug("reconnecting to device", {
      in_ms: Math.round(delay),
      attempt: this.#backoff.attempt,
    });
    this.#retry = setTimeout(() => this.#connect(), delay);
  }

  /**
   * Wakes up when the handshake timeout, the watchdog or the keepalive can
   * next be due (not on a fixed period: an idle bridge should sleep). Frames
   * and sends only move those deadlines later, so an early wake-up re-arms.
   */
  #armTick(): void {
    clearTimeout(this.#tick);
    if (this.#stopped || !this.#ws) return;
    const t = this.#timings;
    const due = this.#open
      ? Math.min(this.#lastFrameAt + t.watchdogMs, this.#lastSendAt + t.keepaliveMs)
      : this.#openedAt + t.connectTimeoutMs;
    const wait = Math.max(t.tickMs, due - performance.now() + 1);
    this.#tick = setTimeout(() => {
      this.#onTick();
      this.#armTick();
    }, wait);
  }

  #onTick(): void {
    const now = performance.now();
    if (!this.#ws) return;
    if (!this.#open) {
      if (now - this.#openedAt > this.#timings.connectTimeoutMs) {
        this.#drop(`no handshake within ${this.#timings.connectTimeoutMs} ms`);
      }
      return;
    }
    if (now - this.#lastFrameAt > this.#timings.watchdogMs) {
      this.#drop(`no frame for ${this.#timings.watchdogMs} ms (watchdog)`);
      return;
    }
    if (now - this.#lastSendAt >= this.#timings.keepaliveMs) this.send(KEEPALIVE_FRAME);
  }
}
