/**
 * Reading the server's WebSocket frames (API.md §5) in the load generator
 * without a UTF-8 decode and a JSON.parse per delivery.
 *
 * A `message` or `ack` frame from the service or the bare-ws peer is
 * `{"type":"message","data":{...,"msg_content":"b<step>.<i>.<us>",...}}` or
 * `{"type":"ack","client_msg_id":...,"data":{...}}`. readFastFrame() checks
 * the frame up to `"data":{`, finds the first `"msg_content":"` after it
 * (inside a JSON string every `"` is escaped, and a message's other values are
 * strings and numbers, so the first match is the message's own key) and reads
 * the three numbers straight from the bytes. Anything it does not recognise
 * exactly (another frame type, another key order, an escape or any other
 * byte inside the numbers, more than 15 digits) returns false, and the caller
 * falls back to JSON.parse: the fast path never decides differently from it.
 *
 * The Socket.IO peer's events carry the same objects behind a
 * `42["message",` / `42["ack",` prefix (readFastSocketIoEvent).
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
const MESSAGE_PREFIX = bytes('{"type":"message","data":{');
const ACK_PREFIX = bytes('{"type":"ack","client_msg_id":');
const SIO_MESSAGE_PREFIX = bytes('42["message",{"type":"message","data":{');
const SIO_ACK_PREFIX = bytes('42["ack",{"type":"ack","client_msg_id":');
/** What follows the ack's client_msg_id value. */
const ACK_DATA = bytes(',"data":{');
const NULL = bytes('null');
const CONTENT_KEY = bytes('"msg_content":"');

const QUOTE = 0x22;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
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
  return readEvent(b, start, end, out, MESSAGE_PREFIX, ACK_PREFIX);
}

/**
 * The same for a Socket.IO packet (Engine.IO message + Socket.IO event, as the
 * Socket.IO peer emits them): `42["message",{"type":"message","data":{...}}]`
 * or `42["ack",{"type":"ack","client_msg_id":...,"data":{...}}]`.
 */
export function readFastSocketIoEvent(b: Uint8Array, start: number, end: number, out: FastFrame): boolean {
  return readEvent(b, start, end, out, SIO_MESSAGE_PREFIX, SIO_ACK_PREFIX);
}

/** A message (`messagePrefix` up to `"data":{`) or an ack (`ackPrefix`, the client_msg_id value, `,"data":{`). */
function readEvent(b: Uint8Array, start: number, end: number, out: FastFrame, messagePrefix: Uint8Array, ackPrefix: Uint8Array): boolean {
  if (startsWith(b, start, end, messagePrefix)) {
    out.ack = false;
    return readContentBytes(b, start + messagePrefix.length, end, out);
  }
  if (!startsWith(b, start, end, ackPrefix)) return false;
  const v = skipStringOrNull(b, start + ackPrefix.length, end);
  if (v < 0 || !startsWith(b, v, end, ACK_DATA)) return false;
  out.ack = true;
  return readContentBytes(b, v + ACK_DATA.length, end, out);
}

/** Skips a JSON string or `null` at b[p]; returns the index after it, or -1. */
function skipStringOrNull(b: Uint8Array, p: number, end: number): number {
  if (startsWith(b, p, end, NULL)) return p + NULL.length;
  if (p >= end || b[p] !== QUOTE) return -1;
  for (let i = p + 1; i < end; i++) {
    const c = b[i];
    if (c === BACKSLASH) i++;
    else if (c === QUOTE) return i + 1;
  }
  return -1;
}

/**
 * The first `msg_content` from b[from] (just inside the `data` object, whose
 * values are strings and numbers) into `out`; false when not read exactly
 * (the key is not data's own, or the value is not a plain `b…`/`r…`).
 */
function readContentBytes(b: Uint8Array, from: number, end: number, out: BenchContent): boolean {
  const key = findContentKey(b, from, end);
  if (key < 0) return false;
  // still inside `data`: no brace before the key (one in a string value only sends the frame to JSON.parse)
  for (let i = from; i < key; i++) if (b[i] === OPEN_BRACE || b[i] === CLOSE_BRACE) return false;
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
