/**
 * A lean WebSocket client (RFC 6455) for the load generator's thousands of
 * receiving sockets. The server sees exactly what the `ws` client sends (the
 * same upgrade request without extensions, masked text frames, pongs to its
 * pings, close handshake); the difference is on the client's CPU:
 *
 * - every socket reads into ONE shared buffer (net's `onread` option), so a
 *   read allocates nothing and skips the stream machinery (Readable push,
 *   'data' events, ws's Writable receiver);
 * - frames are cut out of that buffer in place and each text payload is
 *   handed to `onText(buffer, start, end)` synchronously: the caller reads
 *   the bytes it needs (frames.ts) and must not keep the buffer.
 *
 * Only what the bench needs: ws:// over TCP, no extensions, no subprotocols.
 * A frame split across reads is carried over in a per-socket buffer.
 */
import net from 'node:net';
import { createHash, randomBytes, randomFillSync } from 'node:crypto';

export interface WsClientOptions {
  host: string;
  port: number;
  /** Path and query of the upgrade request, e.g. `/ws/u1?token=…`. */
  path: string;
  /** The upgrade completed: frames can be sent. */
  onOpen(): void;
  /** A text message; its payload is b[start, end), valid only during the call. */
  onText(b: Buffer, start: number, end: number): void;
  /** Before open: the connection or the upgrade failed (the socket is gone, onClose is not called). */
  onError(err: Error): void;
  /** After open: the socket is closed; `code` from the server's close frame, 1005 if it had none, 1006 if there was no close frame. */
  onClose(code: number, reason: string): void;
}

/** One buffer every socket reads into (reads are sequential on the one JS thread). */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);
/** Largest message accepted, as ws's default maxPayload. */
const MAX_PAYLOAD = 100 * 1024 * 1024;
/** Largest upgrade response head. */
const MAX_HEAD = 16 * 1024;
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const HEAD_END = Buffer.from('\r\n\r\n');

const OP_CONTINUATION = 0x0;
const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;

/** Masking keys: random, taken 4 bytes at a time from a pool refilled by the CSPRNG (as ws does). */
const maskPool = Buffer.allocUnsafe(8 * 1024);
let maskAt = maskPool.length;

/** A client frame: FIN, opcode, masked payload (clients must mask, RFC 6455 §5.3). */
function clientFrame(opcode: number, payload: string | Buffer): Buffer {
  const n = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
  const hdr = n < 126 ? 6 : n < 65536 ? 8 : 14;
  const f = Buffer.allocUnsafe(hdr + n);
  f[0] = 0x80 | opcode;
  if (n < 126) f[1] = 0x80 | n;
  else if (n < 65536) {
    f[1] = 0x80 | 126;
    f.writeUInt16BE(n, 2);
  } else {
    f[1] = 0x80 | 127;
    f.writeUInt32BE(Math.floor(n / 2 ** 32), 2);
    f.writeUInt32BE(n >>> 0, 6);
  }
  if (maskAt === maskPool.length) {
    randomFillSync(maskPool);
    maskAt = 0;
  }
  const m = hdr - 4;
  maskPool.copy(f, m, maskAt, maskAt + 4);
  maskAt += 4;
  if (typeof payload === 'string') f.write(payload, hdr, 'utf8');
  else payload.copy(f, hdr);
  for (let i = 0; i < n; i++) f[hdr + i]! ^= f[m + (i & 3)]!;
  return f;
}

export class WsClient {
  private readonly socket: net.Socket;
  private readonly key = randomBytes(16).toString('base64');
  private open = false;
  /** Bytes of an incomplete frame (or response head), carried over to the next read. */
  private rest: Buffer | null = null;
  private restLen = 0;
  /** A fragmented message being collected: its opcode and the fragments so far. */
  private fragOpcode = 0;
  private fragments: Buffer[] | null = null;
  private fragLen = 0;
  private closeCode = 1006;
  private closeReason = '';
  /** A close frame was sent or received, or the socket dropped: no more frames either way. */
  private closing = false;
  private handshakeFailed = false;

  constructor(private readonly o: WsClientOptions) {
    this.socket = net.connect({
      host: o.host,
      port: o.port,
      onread: { buffer: READ_BUFFER, callback: (n) => this.onRead(n, READ_BUFFER) },
    });
    this.socket.setNoDelay(true);
    this.socket.on('connect', () => {
      this.socket.write(
        `GET ${o.path} HTTP/1.1\r\nHost: ${o.host}:${o.port}\r\nSec-WebSocket-Version: 13\r\n` +
          `Sec-WebSocket-Key: ${this.key}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
      );
    });
    this.socket.on('error', (err) => {
      if (!this.open) this.failHandshake(err);
    });
    this.socket.on('close', () => {
      if (this.open) {
        this.open = false;
        this.o.onClose(this.closeCode, this.closeReason);
      } else this.failHandshake(new Error('socket closed during the upgrade'));
    });
  }

  /** Send a text message (ignored before the upgrade completed and once closing). */
  send(text: string): void {
    if (this.open && !this.closing) this.socket.write(clientFrame(OP_TEXT, text));
  }

  /** Drop the connection without a close handshake (as ws's terminate()). */
  terminate(): void {
    this.closing = true;
    this.socket.destroy();
  }

  private failHandshake(err: Error): void {
    if (this.handshakeFailed || this.open) return;
    this.handshakeFailed = true;
    this.socket.destroy();
    this.o.onError(err);
  }

  // ---------------------------------------------------------------- reading
  private onRead(n: number, b: Buffer): boolean {
    let buf = b;
    let end = n;
    if (this.restLen > 0) {
      this.keep(b, 0, n);
      buf = this.rest!;
      end = this.restLen;
    }
    let used = 0;
    if (!this.open) {
      used = this.readHead(buf, end);
      if (!this.open) return this.carry(buf, used, end);
    }
    used = this.readFrames(buf, used, end);
    return this.carry(buf, used, end);
  }

  /** Keep b[used, end) for the next read. */
  private carry(buf: Buffer, used: number, end: number): boolean {
    if (buf === this.rest) {
      buf.copy(buf, 0, used, end);
      this.restLen = end - used;
      if (this.restLen === 0 && buf.length > READ_BUFFER.length) this.rest = null;
    } else if (used < end) this.keep(buf, used, end);
    return true;
  }

  /** Append b[from, to) to the carried-over bytes (growing the buffer by doubling). */
  private keep(b: Buffer, from: number, to: number): void {
    const need = this.restLen + (to - from);
    if (!this.rest || this.rest.length < need) {
      const grown = Buffer.allocUnsafe(Math.max(4096, need, (this.rest?.length ?? 0) * 2));
      if (this.rest) this.rest.copy(grown, 0, 0, this.restLen);
      this.rest = grown;
    }
    b.copy(this.rest, this.restLen, from, to);
    this.restLen = need;
  }

  /** The upgrade response: returns the bytes it used (0 while the head is incomplete). */
  private readHead(b: Buffer, end: number): number {
    const i = b.subarray(0, end).indexOf(HEAD_END);
    if (i < 0) {
      if (end > MAX_HEAD) this.failHandshake(new Error('upgrade response head too large'));
      return 0;
    }
    const head = b.toString('latin1', 0, i);
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(head);
    const header = (name: string): string | undefined =>
      new RegExp(`\\r\\n${name}:[ \\t]*([^\\r\\n]*)`, 'i').exec(head)?.[1]?.trim();
    const accept = createHash('sha1').update(this.key + GUID).digest('base64');
    if (!status || status[1] !== '101') this.failHandshake(new Error(`upgrade refused: HTTP ${status?.[1] ?? '?'}`));
    else if (header('upgrade')?.toLowerCase() !== 'websocket') this.failHandshake(new Error('invalid Upgrade header'));
    else if (header('sec-websocket-accept') !== accept) this.failHandshake(new Error('invalid Sec-WebSocket-Accept header'));
    else if (header('sec-websocket-extensions') !== undefined) this.failHandshake(new Error('server sent an extension'));
    else {
      this.open = true;
      this.o.onOpen();
    }
    return i + HEAD_END.length;
  }

  /** Every complete frame in b[p, end); returns where the first incomplete one starts. */
  private readFrames(b: Buffer, p: number, end: number): number {
    while (this.open && !this.closing && end - p >= 2) {
      const b0 = b[p]!;
      const b1 = b[p + 1]!;
      let len = b1 & 0x7f;
      let hdr = 2;
      if (len === 126) {
        if (end - p < 4) break;
        len = b.readUInt16BE(p + 2);
        hdr = 4;
      } else if (len === 127) {
        if (end - p < 10) break;
        len = b.readUInt32BE(p + 2) * 2 ** 32 + b.readUInt32BE(p + 6);
        hdr = 10;
      }
      if ((b1 & 0x80) !== 0 || (b0 & 0x70) !== 0) {
        this.fail(1002, 'masked or RSV bit set in a server frame');
        break;
      }
      if (len > MAX_PAYLOAD) {
        this.fail(1009, 'message too big');
        break;
      }
      if (end - p < hdr + len) break;
      const start = p + hdr;
      p = start + len;
      this.onFrame(b0, b, start, p);
    }
    return p;
  }

  private onFrame(b0: number, b: Buffer, start: number, end: number): void {
    const fin = (b0 & 0x80) !== 0;
    const opcode = b0 & 0x0f;
    switch (opcode) {
      case OP_TEXT:
      case OP_BINARY:
        if (this.fragments) return this.fail(1002, 'new message inside a fragmented one');
        if (fin) {
          if (opcode === OP_TEXT) this.o.onText(b, start, end);
          return;
        }
        this.fragOpcode = opcode;
        this.fragments = [Buffer.from(b.subarray(start, end))];
        this.fragLen = end - start;
        return;
      case OP_CONTINUATION: {
        if (!this.fragments) return this.fail(1002, 'continuation without a message');
        this.fragLen += end - start;
        if (this.fragLen > MAX_PAYLOAD) return this.fail(1009, 'message too big');
        this.fragments.push(Buffer.from(b.subarray(start, end)));
        if (!fin) return;
        const whole = Buffer.concat(this.fragments, this.fragLen);
        this.fragments = null;
        if (this.fragOpcode === OP_TEXT) this.o.onText(whole, 0, whole.length);
        return;
      }
      case OP_PING:
        if (!fin || end - start > 125) return this.fail(1002, 'invalid ping');
        this.socket.write(clientFrame(OP_PONG, b.subarray(start, end)));
        return;
      case OP_PONG:
        return;
      case OP_CLOSE: {
        // answer with the same code, then end our side (the server closes the TCP connection)
        this.closeCode = end - start >= 2 ? b.readUInt16BE(start) : 1005;
        this.closeReason = end - start > 2 ? b.toString('utf8', start + 2, end) : '';
        const echo = Buffer.alloc(end - start >= 2 ? 2 : 0);
        if (echo.length) echo.writeUInt16BE(this.closeCode, 0);
        this.closing = true;
        this.socket.end(clientFrame(OP_CLOSE, echo));
        return;
      }
      default:
        return this.fail(1002, `invalid opcode ${opcode}`);
    }
  }

  /** A protocol error: send a close frame with `code` and drop the connection (ws does the same). */
  private fail(code: number, reason: string): void {
    this.closeCode = code;
    this.closeReason = reason;
    this.closing = true;
    const c = Buffer.alloc(2);
    c.writeUInt16BE(code, 0);
    this.socket.end(clientFrame(OP_CLOSE, c), () => this.socket.destroy());
  }
}
