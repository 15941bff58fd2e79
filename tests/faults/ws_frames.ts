/**
 * The WebSocket (RFC 6455) frame codec the raw-TCP tests need: build any frame,
 * well-formed or not, and parse frames out of a byte buffer. Only the tests
 * speak WebSocket on raw TCP (tests/faults/raw_device.ts, the byte-level
 * simulator tests); the product and the simulator use Deno's own WebSocket.
 *
 * @module
 */

/** WebSocket frame opcodes (RFC 6455 §5.2). */
export const Opcode = {
  /** A continuation of a fragmented message. */
  continuation: 0x0,
  /** A text frame (UTF-8). */
  text: 0x1,
  /** A binary frame. */
  binary: 0x2,
  /** A close frame (optional code and reason). */
  close: 0x8,
  /** A ping. */
  ping: 0x9,
  /** A pong. */
  pong: 0xa,
} as const;

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
const encoder = new TextEncoder();

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

/** Parses one complete frame (masked or not) from the start of `buffer`; null if incomplete. */
export function parseFrame(buffer: Uint8Array): ParsedFrame | null {
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
  const length = headerLength + payloadLength;
  if (buffer.length < length) return null;
  const payload = buffer.slice(headerLength, length);
  if (masked) applyMask(payload, buffer.subarray(2 + lengthBytes, headerLength));
  return { fin: (buffer[0] & 0x80) !== 0, opcode: buffer[0] & 0x0f, payload, length };
}

/** The close code of a close frame's payload, or undefined when it carries none. */
export function closeCode(frame: { payload: Uint8Array }): number | undefined {
  if (frame.payload.length < 2) return undefined;
  return new DataView(frame.payload.buffer, frame.payload.byteOffset).getUint16(0);
}

function applyMask(data: Uint8Array, mask: Uint8Array): void {
  for (let i = 0; i < data.length; i++) data[i] ^= mask[i & 3];
}
