// The WebSocket connection of API.md §5, with a visible state and automatic
// reconnect (exponential backoff with jitter). No dependencies.
//
// States: 'connecting' (first attempt), 'online', 'reconnecting' (an attempt
// after a drop), 'offline' (closed, waiting for the next attempt, or stopped).

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
const PING_EVERY_MS = 20000;
const PONG_WITHIN_MS = 10000;
/** A connection must last this long before the backoff resets (a server that accepts then drops must not be hammered). */
const STABLE_AFTER_MS = 5000;

export class LiveConnection {
  /**
   * @param {object} o
   * @param {() => string} o.url            WebSocket URL (re-read on every attempt)
   * @param {(frame: object) => void} o.onFrame
   * @param {(state: string, info: object) => void} o.onState
   * @param {() => void} o.onOpen           called after every successful (re)connect
   */
  constructor({ url, onFrame, onState, onOpen }) {
    this.url = url;
    this.onFrame = onFrame;
    this.onState = onState;
    this.onOpen = onOpen;
    this.ws = null;
    this.state = 'offline';
    this.attempt = 0;
    this.everOpened = false;
    this.stopped = true;
    this.paused = false;
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.stableTimer = null;
    this.retryAt = null;
    this.onBrowserOnline = () => {
      if (!this.stopped && !this.paused && this.state === 'offline') this.connectNow();
    };
  }

  setState(state, info = {}) {
    this.state = state;
    this.onState(state, { attempt: this.attempt, retryAt: this.retryAt, paused: this.paused, ...info });
  }

  start() {
    this.stopped = false;
    this.paused = false;
    window.addEventListener('online', this.onBrowserOnline);
    this.connect();
  }

  /** Closes for good (sign out). */
  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onBrowserOnline);
    this.clearTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, 'signed out');
    this.setState('offline', { reason: 'stopped' });
  }

  /** Manual disconnect (stays offline until resume()). */
  pause() {
    if (this.stopped) return;
    this.paused = true;
    this.clearTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, 'paused by user');
    this.setState('offline', { reason: 'paused' });
  }

  resume() {
    if (this.stopped) return;
    this.paused = false;
    this.connectNow();
  }

  connectNow() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.attempt = 0;
    this.connect();
  }

  /** True when the frame was handed to an open socket. */
  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  get online() {
    return this.state === 'online';
  }

  connect() {
    if (this.stopped || this.paused) return;
    this.retryAt = null;
    this.setState(this.everOpened ? 'reconnecting' : 'connecting');
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (err) {
      this.scheduleRetry(err instanceof Error ? err.message : String(err));
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.everOpened = true;
      this.setState('online');
      this.stableTimer = setTimeout(() => {
        this.attempt = 0;
      }, STABLE_AFTER_MS);
      this.schedulePing();
      this.onOpen();
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.schedulePing();
      let frame;
      try {
        frame = JSON.parse(typeof ev.data === 'string' ? ev.data : '');
      } catch {
        return;
      }
      if (frame && typeof frame === 'object') this.onFrame(frame);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.clearTimers();
      if (ev.code === 4401 || ev.code === 4403) {
        // auth failures: retrying cannot help (API.md §5)
        this.stopped = true;
        this.setState('offline', { reason: ev.code === 4401 ? 'token rejected' : 'not allowed', fatal: true });
        return;
      }
      this.scheduleRetry(ev.reason || `closed (${ev.code})`);
    };
    ws.onerror = () => {
      // onclose follows and decides
    };
  }

  scheduleRetry(reason) {
    if (this.stopped || this.paused) return;
    const base = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempt++;
    this.retryAt = Date.now() + delay;
    this.setState('offline', { reason });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  /** Heartbeat: a ping after PING_EVERY_MS of silence; no answer within PONG_WITHIN_MS = dead link. */
  schedulePing() {
    clearTimeout(this.pingTimer);
    clearTimeout(this.pongTimer);
    this.pingTimer = setTimeout(() => {
      if (!this.send({ type: 'ping' })) return;
      this.pongTimer = setTimeout(() => {
        const ws = this.ws;
        if (ws) ws.close(4000, 'no pong');
        // a dead link may never fire onclose promptly: treat it as closed now
        if (this.ws === ws) {
          this.ws = null;
          this.clearTimers();
          this.scheduleRetry('no answer to ping');
        }
      }, PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  clearTimers() {
    clearTimeout(this.retryTimer);
    clearTimeout(this.pingTimer);
    clearTimeout(this.pongTimer);
    clearTimeout(this.stableTimer);
    this.retryTimer = this.pingTimer = this.pongTimer = this.stableTimer = null;
  }
}
