/**
 * A minimal server-side WebSocket (RFC 6455) over raw TCP, built on `Deno.listen`.
 *
 * It exists so that tests can inject faults a higher-level server hides: real TCP
 * closes, refused connections, frames split or merged on the wire and plain HTTP
 * answers where a WebSocket was expected.
 *
 * @module
 */

/** WebSocket frame opcodes (RFC 6455 §5.2). */
export const Opcode = {
  continuation: 0x0,
  text: 0x1,
  binary: 0x2,
  close: 0x8,
  ping: 0x9,
  pong: 0xa,
} as const;

/** A parsed HTTP/1.1 request head (plus body for non-WebSocket requests). */
export interface HttpRequest {
  /** Request method, e.g. `GET`. */
  method: string;
  /** The raw request target, e.g. `/sim/state?x=1`. */
  target: string;
  /** The path of the target without its query. */
  path: string;
  /** The query parameters of the target. */
  query: URLSearchParams;
  /** The protocol version, e.g. `HTTP/1.1`. */
  version: string;
  /** The request headers. */
  headers: Headers;
  /** The request body (empty for upgrades and bodiless requests). */
  body: Uint8Array;
  /** The peer's address. */
  remoteAddr: Deno.NetAddr;
}

/** An HTTP answer written by the server, after which the TCP connection is closed. */
export interface HttpResponse {
  /** Status code. */
  status: number;
  /** Extra headers; `Content-Length` and `Connection` are set by the server. */
  headers?: Record<string, string>;
  /** Body; strings are sent as UTF-8. */
  body?: string | Uint8Array;
  /** Called once the response has been written and the socket closed. */
  afterSend?: () => void;
}

/** How a WebSocket connection ended. */
export interface WsCloseInfo {
  /** The close code: the peer's or ours when a close frame was exchanged, 1006 otherwise. */
  code: number;
  /** The close reason from the close frame, if any. */
  reason: string;
  /** True when the close handshake completed. */
  clean: boolean;
}

/** Per-connection WebSocket behaviour. */
export interface WsConnectionOptions {
  /** Largest accepted frame (and reassembled message) payload; bigger ones close with 1009. */
  maxFrameBytes: number;
  /** Answer pings with pongs. The Panda Breath does not, so the default is false. */
  answerPings: boolean;
  /**
   * Deliver every text/binary frame on its own and drop continuation frames (the device's
   * behaviour) instead of reassembling fragmented messages.
   */
  ignoreContinuation: boolean;
  /** How long to wait for the peer's close frame after sending ours before dropping TCP. */
  closeLingerMs: number;
}

/** Options of {@link WsServer}. */
export interface WsServerOptions extends Partial<WsConnectionOptions> {
  /** Interface to listen on (default `127.0.0.1`). */
  hostname?: string;
  /** Port to listen on; 0 picks a free one that later `listen()` calls reuse. */
  port?: number;
  /** Path that upgrades to WebSocket (default `/ws`). */
  wsPath?: string;
  /** Subprotocols the server accepts, in order of preference (default none). */
  protocols?: string[];
  /** Largest request head in bytes (default 8 KiB); bigger heads get 431. */
  maxHeaderBytes?: number;
  /** Largest non-WebSocket request body in bytes (default 64 KiB); bigger ones get 413. */
  maxBodyBytes?: number;
  /**
   * Most TCP sockets open at once; when another arrives the socket that least recently
   * received data is dropped (default unlimited).
   */
  maxSockets?: number;
  /** Called for every accepted WebSocket; frames sent synchronously here share the 101's write. */
  onConnection?: (connection: WsConnection) => void;
  /** Answers requests that are not WebSocket upgrades of `wsPath` (default 404). */
  onHttpRequest?: (request: HttpRequest) => HttpResponse | Promise<HttpResponse>;
  /** Return a response to refuse a valid upgrade with a plain HTTP answer instead. */
  onUpgradeRequest?: (request: HttpRequest) => HttpResponse | undefined;
  /** Called when a socket is dropped to make room under `maxSockets`. */
  onEvict?: (remoteAddr: Deno.NetAddr, connection: WsConnection | null) => void;
}

/** Header of one frame as read from the wire. */
export interface FrameHeader {
  /** FIN bit. */
  fin: boolean;
  /** The three RSV bits. */
  rsv: number;
  /** Opcode. */
  opcode: number;
  /** Masking key, or null when the frame is unmasked. */
  mask: Uint8Array | null;
  /** Payload length in bytes. */
  payloadLength: number;
  /** Length of the header itself. */
  headerLength: number;
}

/** A complete frame parsed from a buffer. */
export interface ParsedFrame {
  /** FIN bit. */
  fin: boolean;
  /** Opcode. */
  opcode: number;
  /** Unmasked payload. */
  payload: Uint8Array;
  /** Bytes of the buffer the frame used. */
  length: number;
}

const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const HEAD_END = new Uint8Array([13, 10, 13, 10]);
const READ_CHUNK_BYTES = 16 * 1024;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const STATUS_TEXT: Record<number, string> = {
  101: "Switching Protocols",
  200: "OK",
  204: "No Content",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  413: "Content Too Large",
  426: "Upgrade Required",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  503: "Service Unavailable",
};

/** Computes `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (SHA-1 + base64). */
export async function computeAcceptKey(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", encoder.encode(key + WS_GUID));
  return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

/**
 * Encodes one frame. Server frames are unmasked; pass `mask` (true for a random key) to
 * build client frames, and `fin: false` to build fragments.
 */
export function encodeFrame(
  opcode: number,
  payload: Uint8Array | string = new Uint8Array(),
  options: { fin?: boolean; mask?: boolean | Uint8Array } = {},
): Uint8Array {
  const data = typeof payload === "string" ? encoder.encode(payload) : payload;
  const mask = options.mask === true
    ? crypto.getRandomValues(new Uint8Array(4))
    : options.mask || null;
  const lengthBytes = data.length < 126 ? 0 : data.length < 65536 ? 2 : 8;
  const headerLength = 2 + lengthBytes + (mask ? 4 : 0);
  const frame = new Uint8Array(headerLength + data.length);
  const view = new DataView(frame.buffer);
  frame[0] = (options.fin === false ? 0 : 0x80) | (opcode & 0x0f);
  const maskBit = mask ? 0x80 : 0;
  if (lengthBytes === 0) frame[1] = maskBit | data.length;
  else if (lengthBytes === 2) {
    frame[1] = maskBit | 126;
    view.setUint16(2, data.length);
  } else {
    frame[1] = maskBit | 127;
    view.setBigUint64(2, BigInt(data.length));
  }
  if (mask) frame.set(mask, 2 + lengthBytes);
  frame.set(data, headerLength);
  if (mask) applyMask(frame.subarray(headerLength), mask);
  return frame;
}

/** Encodes an unmasked text frame. */
export function encodeTextFrame(text: string): Uint8Array {
  return encodeFrame(Opcode.text, text);
}

/** Encodes a close frame payload-and-all; `code` undefined gives an empty close frame. */
export function encodeCloseFrame(
  code?: number,
  reason = "",
  options: { mask?: boolean | Uint8Array } = {},
): Uint8Array {
  if (code === undefined) return encodeFrame(Opcode.close, new Uint8Array(), options);
  const reasonBytes = encoder.encode(reason).subarray(0, 123);
  const payload = new Uint8Array(2 + reasonBytes.length);
  new DataView(payload.buffer).setUint16(0, code);
  payload.set(reasonBytes, 2);
  return encodeFrame(Opcode.close, payload, options);
}

/** Reads a frame header from the start of `buffer`; null when more bytes are needed. */
export function readFrameHeader(buffer: Uint8Array): FrameHeader | null {
  if (buffer.length < 2) return null;
  const masked = (buffer[1] & 0x80) !== 0;
  const shortLength = buffer[1] & 0x7f;
  const lengthBytes = shortLength === 126 ? 2 : shortLength === 127 ? 8 : 0;
  const headerLength = 2 + lengthBytes + (masked ? 4 : 0);
  if (buffer.length < headerLength) return null;
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  let payloadLength = shortLength;
  if (lengthBytes === 2) payloadLength = view.getUint16(2);
  if (lengthBytes === 8) {
    const big = view.getBigUint64(2);
    payloadLength = big > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(big);
  }
  return {
    fin: (buffer[0] & 0x80) !== 0,
    rsv: (buffer[0] & 0x70) >> 4,
    opcode: buffer[0] & 0x0f,
    mask: masked ? buffer.slice(2 + lengthBytes, headerLength) : null,
    payloadLength,
    headerLength,
  };
}

/** Parses one complete frame (masked or not) from the start of `buffer`; null if incomplete. */
export function parseFrame(buffer: Uint8Array): ParsedFrame | null {
  const header = readFrameHeader(buffer);
  if (!header) return null;
  const length = header.headerLength + header.payloadLength;
  if (buffer.length < length) return null;
  const payload = buffer.slice(header.headerLength, length);
  if (header.mask) applyMask(payload, header.mask);
  return { fin: header.fin, opcode: header.opcode, payload, length };
}

function applyMask(data: Uint8Array, mask: Uint8Array): void {
  for (let i = 0; i < data.length; i++) data[i] ^= mask[i & 3];
}

function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b.slice();
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a);
  joined.set(b, a.length);
  return joined;
}

function indexOfBytes(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return i;
  }
  return -1;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await conn.write(bytes.subarray(written));
}

/** Serializes an HTTP response (always `Connection: close`). */
export function encodeHttpResponse(response: HttpResponse, includeBody = true): Uint8Array {
  const body = typeof response.body === "string"
    ? encoder.encode(response.body)
    : response.body ?? new Uint8Array();
  const lines = [`HTTP/1.1 ${response.status} ${STATUS_TEXT[response.status] ?? "Status"}`];
  for (const [name, value] of Object.entries(response.headers ?? {})) {
    lines.push(`${name}: ${value}`);
  }
  lines.push(`Content-Length: ${body.length}`, "Connection: close", "", "");
  const head = encoder.encode(lines.join("\r\n"));
  return includeBody ? concatBytes(head, body) : head;
}

/** Why a request head could not be parsed: the status to answer with. */
class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** Parses a request head (without the final blank line); throws {@link HttpError}. */
export function parseRequestHead(head: string, remoteAddr: Deno.NetAddr): HttpRequest {
  const lines = head.split("\r\n");
  const match = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) (HTTP\/\d\.\d)$/.exec(lines[0] ?? "");
  if (!match) throw new HttpError(400, "malformed request line");
  const [, method, target, version] = match;
  let url: URL;
  try {
    url = new URL(target, "http://localhost");
  } catch {
    throw new HttpError(400, "malformed request target");
  }
  const headers = new Headers();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0 || /^\s/.test(line)) throw new HttpError(400, "malformed header line");
    try {
      headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    } catch {
      throw new HttpError(400, "invalid header");
    }
  }
  return {
    method,
    target,
    path: url.pathname,
    query: url.searchParams,
    version,
    headers,
    body: new Uint8Array(),
    remoteAddr,
  };
}

function headerHasToken(headers: Headers, name: string, token: string): boolean {
  return (headers.get(name) ?? "").toLowerCase().split(",").some((part) => part.trim() === token);
}

function isUpgradeRequest(request: HttpRequest): boolean {
  return headerHasToken(request.headers, "upgrade", "websocket");
}

function jsonError(status: number, message: string): HttpResponse {
  return {
    status,
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ error: message }),
  };
}

/** Reasons a handshake is invalid, as an HTTP answer; undefined when it is valid. */
function handshakeProblem(request: HttpRequest): HttpResponse | undefined {
  if (request.method !== "GET" || request.version !== "HTTP/1.1") {
    return jsonError(400, "WebSocket upgrade needs GET and HTTP/1.1");
  }
  if (!headerHasToken(request.headers, "connection", "upgrade")) {
    return jsonError(400, "missing Connection: Upgrade");
  }
  if (request.headers.get("sec-websocket-version") !== "13") {
    return { ...jsonError(426, "unsupported WebSocket version"), headers: wsVersionHeader() };
  }
  const key = request.headers.get("sec-websocket-key") ?? "";
  let keyBytes = 0;
  try {
    keyBytes = atob(key).length;
  } catch {
    keyBytes = 0;
  }
  if (keyBytes !== 16) return jsonError(400, "invalid Sec-WebSocket-Key");
  return undefined;
}

function wsVersionHeader(): Record<string, string> {
  return { "Content-Type": "application/json", "Sec-WebSocket-Version": "13" };
}

function chooseProtocol(request: HttpRequest, supported: string[]): string {
  const offered = (request.headers.get("sec-websocket-protocol") ?? "")
    .split(",").map((part) => part.trim()).filter((part) => part !== "");
  return supported.find((protocol) => offered.includes(protocol)) ?? "";
}

type ConnectionState = "open" | "closing" | "closed";

/** One server-side WebSocket connection. */
export class WsConnection {
  /** Called with each message: a string for text, bytes for binary. */
  onMessage: ((data: string | Uint8Array) => void) | null = null;
  /** Called once when the connection is gone. */
  onClose: ((info: WsCloseInfo) => void) | null = null;
  /** The peer's address. */
  readonly remoteAddr: Deno.NetAddr;
  /** The negotiated subprotocol, or "" for none. */
  readonly protocol: string;
  /** The upgrade request. */
  readonly request: HttpRequest;

  #conn: Deno.Conn;
  #options: WsConnectionOptions;
  #onReceive: () => void;
  #state: ConnectionState = "open";
  #tcpClosed = false;
  #buffer: Uint8Array = new Uint8Array();
  #skipBytes = 0;
  #fragments: { opcode: number; parts: Uint8Array[]; size: number } | null = null;
  #corked: Uint8Array[] | null = null;
  #writeChain: Promise<unknown> = Promise.resolve();
  #closeInfo: WsCloseInfo | null = null;
  #lingerTimer: ReturnType<typeof setTimeout> | undefined;
  #closeNotified = false;
  #resolveClosed: () => void = () => {};
  #closedPromise = new Promise<void>((resolve) => this.#resolveClosed = resolve);

  /** Wraps an upgraded TCP connection; used by {@link WsServer}. */
  constructor(
    conn: Deno.Conn,
    request: HttpRequest,
    protocol: string,
    options: WsConnectionOptions,
    onReceive: () => void = () => {},
  ) {
    this.#conn = conn;
    this.request = request;
    this.protocol = protocol;
    this.remoteAddr = request.remoteAddr;
    this.#options = options;
    this.#onReceive = onReceive;
  }

  /** True until a close starts or the socket goes away. */
  get isOpen(): boolean {
    return this.#state === "open";
  }

  /** Sends a text frame; resolves false when the connection is not open or the write fails. */
  send(text: string): Promise<boolean> {
    return this.#sendFrame(encodeFrame(Opcode.text, text));
  }

  /** Sends a binary frame; resolves false when not open or the write fails. */
  sendBinary(bytes: Uint8Array): Promise<boolean> {
    return this.#sendFrame(encodeFrame(Opcode.binary, bytes));
  }

  /** Writes arbitrary bytes on the socket (split/merged frames, garbage, ...). */
  sendRaw(bytes: Uint8Array): Promise<boolean> {
    return this.#sendFrame(bytes);
  }

  /**
   * Sends a close frame, waits briefly for the peer's close frame, then closes TCP.
   * Resolves when the socket is closed.
   */
  async close(code = 1000, reason = ""): Promise<void> {
    if (this.#state === "open") this.#startClose(code, reason);
    await this.#writeChain;
    await this.#closedPromise;
  }

  /** Closes TCP at once, without a close frame. */
  abort(): void {
    if (this.#tcpClosed) return;
    this.#tcpClosed = true;
    this.#state = "closed";
    try {
      this.#conn.close();
    } catch {
      // already closed by the peer or the runtime
    }
  }

  /** Buffers frames sent from now on until {@link uncork}; used to merge them with the 101. */
  cork(): void {
    this.#corked = [];
  }

  /** Writes `prefix` plus every frame sent while corked in a single write. */
  uncork(prefix: Uint8Array): Promise<boolean> {
    const parts = [prefix, ...(this.#corked ?? [])];
    this.#corked = null;
    return this.#enqueueWrite(parts.reduce(concatBytes, new Uint8Array()));
  }

  /** Reads and handles frames until the socket closes; `initial` holds bytes already read. */
  async run(initial: Uint8Array): Promise<void> {
    this.#buffer = initial;
    this.#processBuffer();
    const chunk = new Uint8Array(READ_CHUNK_BYTES);
    while (!this.#tcpClosed) {
      let count: number | null;
      try {
        count = await this.#conn.read(chunk);
      } catch {
        break;
      }
      if (count === null) break;
      this.#onReceive();
      this.#buffer = concatBytes(this.#buffer, chunk.subarray(0, count));
      this.#processBuffer();
    }
    this.#finish();
    await this.#writeChain;
  }

  #sendFrame(bytes: Uint8Array): Promise<boolean> {
    if (this.#state !== "open") return Promise.resolve(false);
    if (this.#corked) {
      this.#corked.push(bytes);
      return Promise.resolve(true);
    }
    return this.#enqueueWrite(bytes);
  }

  #enqueueWrite(bytes: Uint8Array): Promise<boolean> {
    const written = this.#writeChain.then(() => this.#writeNow(bytes));
    this.#writeChain = written;
    return written;
  }

  async #writeNow(bytes: Uint8Array): Promise<boolean> {
    if (this.#tcpClosed) return false;
    try {
      await writeAll(this.#conn, bytes);
      return true;
    } catch {
      this.abort();
      return false;
    }
  }

  #startClose(code: number, reason: string): void {
    this.#state = "closing";
    this.#closeInfo = { code, reason, clean: false };
    this.#enqueueWrite(encodeCloseFrame(code, reason));
    this.#lingerTimer = setTimeout(() => this.abort(), this.#options.closeLingerMs);
  }

  #processBuffer(): void {
    while (!this.#tcpClosed) {
      if (this.#skipBytes > 0) {
        const skipped = Math.min(this.#skipBytes, this.#buffer.length);
        this.#skipBytes -= skipped;
        this.#buffer = this.#buffer.subarray(skipped);
        if (this.#skipBytes > 0) return;
      }
      const header = readFrameHeader(this.#buffer);
      if (!header) return;
      const problem = this.#headerProblem(header);
      if (problem !== undefined) {
        this.#protocolFailure(problem, header);
        continue;
      }
      const length = header.headerLength + header.payloadLength;
      if (this.#buffer.length < length) return;
      const payload = this.#buffer.slice(header.headerLength, length);
      if (header.mask) applyMask(payload, header.mask);
      this.#buffer = this.#buffer.subarray(length);
      this.#handleFrame(header, payload);
    }
  }

  /** Close code for a header that must not be accepted, else undefined. */
  #headerProblem(header: FrameHeader): number | undefined {
    const isControl = header.opcode >= 0x8;
    const known = header.opcode <= 0x2 || (header.opcode >= 0x8 && header.opcode <= 0xa);
    if (header.rsv !== 0 || !known || !header.mask) return 1002;
    if (isControl && (!header.fin || header.payloadLength > 125)) return 1002;
    if (header.payloadLength > this.#options.maxFrameBytes) return 1009;
    return undefined;
  }

  #protocolFailure(code: number, header: FrameHeader): void {
    if (code === 1009) {
      if (this.#state === "open") this.#startClose(1009, "frame too big");
      this.#skipBytes = header.headerLength + header.payloadLength;
      return;
    }
    this.#buffer = new Uint8Array();
    if (this.#state !== "open") return;
    this.#startClose(1002, "protocol error");
    this.#writeChain.then(() => this.abort());
  }

  #handleFrame(header: FrameHeader, payload: Uint8Array): void {
    if (header.opcode === Opcode.close) return this.#handlePeerClose(payload);
    if (this.#state !== "open") return;
    if (header.opcode === Opcode.ping) {
      if (this.#options.answerPings) this.#enqueueWrite(encodeFrame(Opcode.pong, payload));
      return;
    }
    if (header.opcode === Opcode.pong) return;
    if (this.#options.ignoreContinuation) {
      if (header.opcode !== Opcode.continuation) this.#deliver(header.opcode, payload);
      return;
    }
    this.#reassemble(header, payload);
  }

  #reassemble(header: FrameHeader, payload: Uint8Array): void {
    const isContinuation = header.opcode === Opcode.continuation;
    if (isContinuation !== (this.#fragments !== null)) {
      this.#protocolFailure(1002, header);
      return;
    }
    if (!isContinuation && header.fin) return this.#deliver(header.opcode, payload);
    this.#fragments ??= { opcode: header.opcode, parts: [], size: 0 };
    this.#fragments.parts.push(payload);
    this.#fragments.size += payload.length;
    if (this.#fragments.size > this.#options.maxFrameBytes) {
      this.#fragments = null;
      this.#startClose(1009, "message too big");
      return;
    }
    if (!header.fin) return;
    const { opcode, parts } = this.#fragments;
    this.#fragments = null;
    this.#deliver(opcode, parts.reduce(concatBytes, new Uint8Array()));
  }

  #deliver(opcode: number, payload: Uint8Array): void {
    const data = opcode === Opcode.text ? decoder.decode(payload) : payload;
    try {
      this.onMessage?.(data);
    } catch (error) {
      console.error("ws_server: onMessage handler failed:", error);
    }
  }

  #handlePeerClose(payload: Uint8Array): void {
    if (this.#state === "closing") {
      if (this.#closeInfo) this.#closeInfo.clean = true;
      this.abort();
      return;
    }
    if (this.#state !== "open") return;
    const code = payload.length >= 2 ? new DataView(payload.buffer).getUint16(0) : undefined;
    const reason = payload.length > 2 ? decoder.decode(payload.subarray(2)) : "";
    this.#state = "closing";
    this.#closeInfo = { code: code ?? 1005, reason, clean: true };
    this.#enqueueWrite(encodeCloseFrame(code)).then(() => this.abort());
  }

  #finish(): void {
    this.abort();
    clearTimeout(this.#lingerTimer);
    if (this.#closeNotified) return;
    this.#closeNotified = true;
    const info = this.#closeInfo ?? { code: 1006, reason: "", clean: false };
    try {
      this.onClose?.(info);
    } catch (error) {
      console.error("ws_server: onClose handler failed:", error);
    }
    this.#resolveClosed();
  }
}

interface Session {
  conn: Deno.Conn;
  remoteAddr: Deno.NetAddr;
  lastReceived: number;
  ws: WsConnection | null;
  closed: boolean;
  done: Promise<void>;
}

/** A WebSocket + tiny HTTP server over raw TCP; restartable with `listen()` after `close()`. */
export class WsServer {
  #options: WsServerOptions;
  #connectionOptions: WsConnectionOptions;
  #port: number;
  #listener: Deno.TcpListener | null = null;
  #acceptLoop: Promise<void> = Promise.resolve();
  #sessions = new Set<Session>();
  #receiveCounter = 0;

  /** Creates a server; call `listen()` to start accepting. */
  constructor(options: WsServerOptions = {}) {
    this.#options = options;
    this.#port = options.port ?? 0;
    this.#connectionOptions = {
      maxFrameBytes: options.maxFrameBytes ?? 64 * 1024,
      answerPings: options.answerPings ?? false,
      ignoreContinuation: options.ignoreContinuation ?? false,
      closeLingerMs: options.closeLingerMs ?? 1000,
    };
  }

  /** The bound port (the chosen one once listening with port 0). */
  get port(): number {
    return this.#port;
  }

  /** The hostname the server listens on. */
  get hostname(): string {
    return this.#options.hostname ?? "127.0.0.1";
  }

  /** True while the listener is open. */
  get listening(): boolean {
    return this.#listener !== null;
  }

  /** Open WebSocket connections. */
  get connections(): WsConnection[] {
    return [...this.#sessions].flatMap((session) =>
      session.ws?.isOpen && !session.closed ? [session.ws] : []
    );
  }

  /** Open TCP sockets of any kind (HTTP, WebSocket, not yet identified). */
  get socketCount(): number {
    return [...this.#sessions].filter((session) => !session.closed).length;
  }

  /** Starts listening (on the same port as before when restarted). */
  listen(): Deno.NetAddr {
    if (this.#listener) return this.#listener.addr;
    const listener = Deno.listen({ hostname: this.hostname, port: this.#port, transport: "tcp" });
    this.#listener = listener;
    this.#port = listener.addr.port;
    this.#acceptLoop = this.#accept(listener);
    return listener.addr;
  }

  /** Stops listening, drops every socket without a close frame and waits for all loops. */
  async close(): Promise<void> {
    const listener = this.#listener;
    this.#listener = null;
    try {
      listener?.close();
    } catch {
      // already closed
    }
    for (const session of this.#sessions) this.#dropSession(session);
    await this.#acceptLoop;
    await Promise.all([...this.#sessions].map((session) => session.done));
  }

  async #accept(listener: Deno.TcpListener): Promise<void> {
    while (true) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      if (this.#listener !== listener) {
        conn.close();
        return;
      }
      this.#admit(conn);
    }
  }

  #admit(conn: Deno.Conn): void {
    const limit = this.#options.maxSockets ?? Infinity;
    if (this.socketCount >= limit) this.#evictLeastRecentlyUsed();
    const session: Session = {
      conn,
      remoteAddr: conn.remoteAddr as Deno.NetAddr,
      lastReceived: ++this.#receiveCounter,
      ws: null,
      closed: false,
      done: Promise.resolve(),
    };
    this.#sessions.add(session);
    session.done = this.#serve(session)
      .catch((error) => console.error("ws_server: session failed:", error))
      .finally(() => {
        this.#dropSession(session);
        this.#sessions.delete(session);
      });
  }

  #evictLeastRecentlyUsed(): void {
    let oldest: Session | null = null;
    for (const session of this.#sessions) {
      if (session.closed) continue;
      if (!oldest || session.lastReceived < oldest.lastReceived) oldest = session;
    }
    if (!oldest) return;
    this.#dropSession(oldest);
    this.#options.onEvict?.(oldest.remoteAddr, oldest.ws);
  }

  #dropSession(session: Session): void {
    if (session.closed) return;
    session.closed = true;
    if (session.ws) return session.ws.abort();
    try {
      session.conn.close();
    } catch {
      // already closed
    }
  }

  #touch(session: Session): void {
    session.lastReceived = ++this.#receiveCounter;
  }

  async #serve(session: Session): Promise<void> {
    const head = await this.#readHead(session);
    if (head === null || session.closed) return;
    if (head instanceof HttpError) {
      return await this.#respond(session, jsonError(head.status, head.message), true);
    }
    const { request, rest } = head;
    if (isUpgradeRequest(request) && request.path === (this.#options.wsPath ?? "/ws")) {
      return await this.#upgrade(session, request, rest);
    }
    await this.#answerHttp(session, request, rest);
  }

  async #readHead(
    session: Session,
  ): Promise<{ request: HttpRequest; rest: Uint8Array } | HttpError | null> {
    const limit = this.#options.maxHeaderBytes ?? 8 * 1024;
    let buffer: Uint8Array = new Uint8Array();
    const chunk = new Uint8Array(READ_CHUNK_BYTES);
    while (true) {
      const end = indexOfBytes(buffer, HEAD_END);
      if (end >= 0 && end + HEAD_END.length <= limit) {
        const head = new TextDecoder("latin1").decode(buffer.subarray(0, end));
        try {
          return {
            request: parseRequestHead(head, session.remoteAddr),
            rest: buffer.slice(end + 4),
          };
        } catch (error) {
          return error instanceof HttpError ? error : new HttpError(400, "bad request");
        }
      }
      if (buffer.length >= limit) return new HttpError(431, "request head too large");
      const count = await this.#read(session, chunk);
      if (count === null) return null;
      buffer = concatBytes(buffer, chunk.subarray(0, count));
    }
  }

  async #read(session: Session, chunk: Uint8Array): Promise<number | null> {
    try {
      const count = await session.conn.read(chunk);
      if (count !== null) this.#touch(session);
      return count;
    } catch {
      return null;
    }
  }

  async #upgrade(session: Session, request: HttpRequest, rest: Uint8Array): Promise<void> {
    const refusal = handshakeProblem(request) ?? this.#options.onUpgradeRequest?.(request);
    if (refusal) return await this.#respond(session, refusal, request.method !== "HEAD");
    const accept = await computeAcceptKey(request.headers.get("sec-websocket-key") ?? "");
    if (session.closed) return;
    const protocol = chooseProtocol(request, this.#options.protocols ?? []);
    const lines = [
      "HTTP/1.1 101 Switching Protocols",
      "Upgrade: websocket",
      "Connection: Upgrade",
      `Sec-WebSocket-Accept: ${accept}`,
      ...(protocol ? [`Sec-WebSocket-Protocol: ${protocol}`] : []),
      "",
      "",
    ];
    const ws = new WsConnection(
      session.conn,
      request,
      protocol,
      this.#connectionOptions,
      () => this.#touch(session),
    );
    session.ws = ws;
    ws.cork();
    try {
      this.#options.onConnection?.(ws);
    } catch (error) {
      console.error("ws_server: onConnection handler failed:", error);
    }
    ws.uncork(encoder.encode(lines.join("\r\n")));
    await ws.run(rest);
  }

  async #answerHttp(session: Session, request: HttpRequest, rest: Uint8Array): Promise<void> {
    const body = await this.#readBody(session, request, rest);
    if (body instanceof HttpError) {
      return await this.#respond(session, jsonError(body.status, body.message), true);
    }
    if (body === null) return;
    request.body = body;
    let response: HttpResponse;
    try {
      const handler = this.#options.onHttpRequest;
      response = handler ? await handler(request) : jsonError(404, "not found");
    } catch (error) {
      console.error("ws_server: onHttpRequest handler failed:", error);
      response = jsonError(500, "internal error");
    }
    await this.#respond(session, response, request.method !== "HEAD");
  }

  async #readBody(
    session: Session,
    request: HttpRequest,
    rest: Uint8Array,
  ): Promise<Uint8Array | HttpError | null> {
    if (request.headers.has("transfer-encoding")) {
      return new HttpError(501, "chunked request bodies are not supported");
    }
    const declared = request.headers.get("content-length") ?? "0";
    if (!/^\d{1,15}$/.test(declared)) return new HttpError(400, "invalid Content-Length");
    const length = Number(declared);
    if (length > (this.#options.maxBodyBytes ?? 64 * 1024)) {
      return new HttpError(413, "request body too large");
    }
    let body = rest;
    const chunk = new Uint8Array(READ_CHUNK_BYTES);
    while (body.length < length) {
      const count = await this.#read(session, chunk);
      if (count === null) return null;
      body = concatBytes(body, chunk.subarray(0, count));
    }
    return body.slice(0, length);
  }

  async #respond(session: Session, response: HttpResponse, includeBody: boolean): Promise<void> {
    if (!session.closed) {
      try {
        await writeAll(session.conn, encodeHttpResponse(response, includeBody));
      } catch {
        // the peer went away; nothing to answer
      }
    }
    this.#dropSession(session);
    try {
      response.afterSend?.();
    } catch (error) {
      console.error("ws_server: afterSend callback failed:", error);
    }
  }
}
