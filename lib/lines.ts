/** Splits a byte stream into newline-terminated lines, with a cap per line. */
export class LineSplitter {
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  /** Longest line accepted, in bytes, without the newline. */
  readonly maxLineBytes: number;

  /** A splitter rejecting lines longer than `maxLineBytes` (without the newline). */
  constructor(maxLineBytes: number) {
    this.maxLineBytes = maxLineBytes;
  }

  /**
   * Feeds a chunk; returns the complete lines it finished (as bytes, without
   * the newline), or `null` once a line exceeds the cap.
   */
  push(chunk: Uint8Array): Uint8Array[] | null {
    const lines: Uint8Array[] = [];
    let start = 0;
    for (let newline = chunk.indexOf(10); newline !== -1; newline = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, newline);
      if (this.#pendingBytes + piece.byteLength > this.maxLineBytes) return null;
      lines.push(this.#take(piece));
      start = newline + 1;
    }
    const rest = chunk.subarray(start);
    if (this.#pendingBytes + rest.byteLength > this.maxLineBytes) return null;
    if (rest.byteLength > 0) {
      this.#pending.push(rest.slice());
      this.#pendingBytes += rest.byteLength;
    }
    return lines;
  }

  #take(tail: Uint8Array): Uint8Array {
    if (this.#pending.length === 0) return tail.slice();
    const line = new Uint8Array(this.#pendingBytes + tail.byteLength);
    let offset = 0;
    for (const part of this.#pending) {
      line.set(part, offset);
      offset += part.byteLength;
    }
    line.set(tail, offset);
    this.#pending = [];
    this.#pendingBytes = 0;
    return line;
  }
}

/** Writes all of `data` to `writer`, looping over short writes. */
export async function writeAll(
  writer: { write(data: Uint8Array): Promise<number> },
  data: Uint8Array,
): Promise<void> {
  let written = 0;
  while (written < data.byteLength) {
    written += await writer.write(data.subarray(written));
  }
}
