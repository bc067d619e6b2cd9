/**
 * Reading the server's WebSocket frames (API.md §5) in the load generator
 * without a UTF-8 decode and a JSON.parse per delivery.
 *
 * A `message` or `ack` frame from the service or the bare-ws peer is
 * `{"type":"message","data":{...,"msg_content":"b<step>.<i>.<us>",...}}` or
 * `{"type":"ack","client_msg_id":...,"data":{...}}`. readFastFrame() checks the
 * type prefix, finds the first `"msg_content":"` (inside a JSON string every
 * `"` is escaped, so the first match is always the message's key) and reads
 * the three numbers straight from the bytes. Anything it does not recognise
 * exactly (another frame type, another key order, an escape or any other
 * byte inside the numbers, more than 15 digits) returns false, and the caller
 * falls back to JSON.parse: the fast path never decides differently from it.
 */

/** What a delivery's `msg_content` says, filled in place (no allocation per frame). */
export interface BenchContent {
  /** `b<step>.<index>.<intendedUs>`: a bench message; `r…`: an AI reply; anything else is not the bench's. */
  kind: 'bench' | 'ai' | 'other';
  step: number;
  index: number;
  intendedUs: number;
}

/** The fields readFastFrame() fills: the content, and whether the frame is an ack (else a message). */
export interface FastFrame extends BenchContent {
  ack: boolean;
}

const bytes = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));
const MESSAGE_PREFIX = bytes('{"type":"message",');
const ACK_PREFIX = bytes('{"type":"ack",');
const CONTENT_KEY = bytes('"msg_content":"');

const QUOTE = 0x22;
const DOT = 0x2e;
const BACKSLASH = 0x5c;
const CHAR_B = 0x62;
const CHAR_R = 0x72;
/** Longest digit run read from bytes: 15 decimal digits are exact in a double, as Number() would give. */
const MAX_DIGITS = 15;

function startsWith(b: Uint8Array, start: number, end: number, prefix: Uint8Array): boolean {
  if (end - start < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (b[start + i] !== prefix[i]) return false;
  return true;
}

/**
 * Horspool skip table for CONTENT_KEY: how far the window may move when its
 * last byte is c (most bytes of a frame are not in the key: a 15-byte jump).
 */
const SKIP = (() => {
  const t = new Uint8Array(256).fill(CONTENT_KEY.length);
  for (let k = 0; k < CONTENT_KEY.length - 1; k++) t[CONTENT_KEY[k]!] = CONTENT_KEY.length - 1 - k;
  return t;
})();

/** Index of the first CONTENT_KEY in b[from, end), or -1 (Horspool: a few steps per frame, no native call). */
function findContentKey(b: Uint8Array, from: number, end: number): number {
  const n = CONTENT_KEY.length;
  const lastByte = CONTENT_KEY[n - 1]!;
  for (let i = from; i + n <= end; ) {
    const c = b[i + n - 1]!;
    if (c === lastByte) {
      let j = 0;
      while (j < n - 1 && b[i + j] === CONTENT_KEY[j]) j++;
      if (j === n - 1) return i;
    }
    i += SKIP[c]!;
  }
  return -1;
}

/** Set by readDigits(): the value of the digit run it read. */
let digitValue = 0;

/** Reads decimal digits at b[p, end) into digitValue; returns the index after them, or -1 when there are none or too many. */
function readDigits(b: Uint8Array, p: number, end: number): number {
  let v = 0;
  let i = p;
  for (; i < end; i++) {
    const c = b[i]!;
    if (c < 0x30 || c > 0x39) break;
    v = v * 10 + (c - 0x30);
  }
  if (i === p || i - p > MAX_DIGITS) return -1;
  digitValue = v;
  return i;
}

/**
 * Reads a `message` / `ack` frame's content from the raw payload b[start, end).
 * Returns false when the frame is not one in the known shape (the caller then
 * decodes and JSON.parses it).
 */
export function readFastFrame(b: Uint8Array, start: number, end: number, out: FastFrame): boolean {
  let from: number;
  if (startsWith(b, start, end, MESSAGE_PREFIX)) {
    out.ack = false;
    from = start + MESSAGE_PREFIX.length;
  } else if (startsWith(b, start, end, ACK_PREFIX)) {
    out.ack = true;
    from = start + ACK_PREFIX.length;
  } else return false;
  const key = findContentKey(b, from, end);
  if (key < 0) return false;
  const p = key + CONTENT_KEY.length;
  const c = p < end ? b[p]! : -1;
  if (c === CHAR_R) {
    out.kind = 'ai';
    return true;
  }
  if (c !== CHAR_B) {
    // an escape could stand for 'b' or 'r' (JSON.stringify never writes one there, but stay exact)
    if (c === BACKSLASH || c < 0) return false;
    out.kind = 'other';
    return true;
  }
  const p1 = readDigits(b, p + 1, end);
  if (p1 < 0 || p1 >= end || b[p1] !== DOT) return false;
  out.step = digitValue;
  const p2 = readDigits(b, p1 + 1, end);
  if (p2 < 0 || p2 >= end || b[p2] !== DOT) return false;
  out.index = digitValue;
  const p3 = readDigits(b, p2 + 1, end);
  if (p3 < 0 || p3 >= end || b[p3] !== QUOTE) return false;
  out.intendedUs = digitValue;
  out.kind = 'bench';
  return true;
}

/** The same reading of a content string (Socket.IO events, frames that took the JSON.parse path). */
export function readContent(content: string, out: BenchContent): void {
  const c0 = content.charCodeAt(0);
  if (c0 === CHAR_R) {
    out.kind = 'ai';
    return;
  }
  if (c0 !== CHAR_B) {
    out.kind = 'other';
    return;
  }
  const d1 = content.indexOf('.');
  const d2 = content.indexOf('.', d1 + 1);
  out.kind = 'bench';
  out.step = Number(content.slice(1, d1));
  out.index = Number(content.slice(d1 + 1, d2));
  out.intendedUs = Number(content.slice(d2 + 1));
}
