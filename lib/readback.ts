/**
 * Read-back: the device acknowledges no write and pushes nothing when another
 * client (its web page, the phone app, Home Assistant) changes it, so the
 * only way to learn its real state is the connect frame of a new connection.
 * {@link readBack} opens one short extra WebSocket, takes the first frame,
 * closes, and returns the parsed report. Thin I/O: what to do with the
 * report is decided in lib/core.ts.
 *
 * Why this is safe with the device's 7 sockets: the bridge holds one
 * connection; a read-back adds a second one for at most `timeoutMs` plus a
 * bounded close, never two at once (the core starts the next only after the
 * previous one reported), and never while the main link is down (a device
 * that cannot take the main link gets no extra socket). The shell sends a
 * keepalive on the main link just before, so the main link is the device's
 * most recently used socket and is not the one its LRU eviction picks; the
 * read-back itself sends nothing, so if the device is full it is the first
 * socket evicted, not another client's.
 *
 * The connect frame carries Wi-Fi and printer secrets: it is parsed by
 * {@link parseDeviceFrame}, which never reads them, and never logged.
 *
 * @module
 */

import { type DeviceReport, parseDeviceFrame } from "./protocol.ts";

/** Default bound on waiting for the connect frame, in milliseconds. */
export const READBACK_TIMEOUT_MS = 3000;

/** Longest wait for the socket to close after the frame (or the timeout). */
const CLOSE_BOUND_MS = 1000;

/** What a read-back found: the connect frame's report, or why there is none. */
export interface ReadbackResult {
  /** The settings in the connect frame; null on failure. */
  report: DeviceReport | null;
  /** A short reason without any frame content; null on success. */
  error: string | null;
}

/**
 * Opens a WebSocket to `url`, takes the first frame, closes. Resolves within
 * `timeoutMs` plus about a second for the close, never rejects.
 */
export function readBack(url: string, timeoutMs = READBACK_TIMEOUT_MS): Promise<ReadbackResult> {
  return new Promise((resolve) => {
    let ws: WebSocket;
    try {
      ws = new WebSocket(url);
    } catch (error) {
      resolve({ report: null, error: `cannot open: ${(error as Error).message}` });
      return;
    }
    ws.binaryType = "arraybuffer";
    let settled = false;
    const finish = (result: ReadbackResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ws.onopen = ws.onmessage = ws.onerror = null;
      if (ws.readyState === WebSocket.CLOSED) return resolve(result);
      const done = () => {
        clearTimeout(closeTimer);
        resolve(result);
      };
      const closeTimer = setTimeout(done, CLOSE_BOUND_MS);
      ws.onclose = done;
      try {
        ws.close();
      } catch {
        // Already closing: the close event (or the bound) still ends it.
      }
    };
    const timer = setTimeout(
      () => finish({ report: null, error: `no frame within ${timeoutMs} ms` }),
      timeoutMs,
    );
    ws.onmessage = (event: MessageEvent) => {
      const data = event.data;
      const { report } = parseDeviceFrame(typeof data === "string" ? data : new Uint8Array(data));
      finish(
        report?.isSettingsBlock
          ? { report, error: null }
          : { report: null, error: "the first frame carried no settings" },
      );
    };
    ws.onerror = (event: Event) => {
      finish({ report: null, error: (event as ErrorEvent).message || "WebSocket error" });
    };
    ws.onclose = (event: CloseEvent) => {
      finish({ report: null, error: `closed before a frame (code ${event.code})` });
    };
  });
}
