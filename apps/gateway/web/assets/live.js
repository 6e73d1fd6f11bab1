// The WebSocket connection: one per page, authenticated by the key as a subprotocol (browsers
// cannot set headers on a WebSocket). Frames that expect a reply get an `id` and a promise.
//
// Each subscription remembers the last durable `seq` it handled. When the connection drops (the
// server restarted, the network went away), the page reconnects with exponential backoff and
// jitter and subscribes again after that seq, so nothing is missed; an event whose seq was
// handled already is dropped, so nothing is shown twice.

const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 10_000;

export class Live extends EventTarget {
  constructor(key) {
    super();
    this.key = key;
    this.socket = null;
    this.pending = new Map();
    this.subscriptions = new Map();
    this.nextId = 1;
    this.attempt = 0;
    this.stopped = false;
    this.timer = null;
  }

  get open() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  connect() {
    this.stopped = false;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/v1/ws`, ["colloquy.v1", `colloquy.key.${this.key}`]);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.attempt = 0;
      this.emit("state", { online: true });
      for (const [conversationId, subscription] of this.subscriptions) this.sendSubscribe(conversationId, subscription);
    });
    socket.addEventListener("message", (message) => this.receive(message.data));
    socket.addEventListener("close", (close) => {
      if (this.socket !== socket) return;
      this.socket = null;
      for (const { reject } of this.pending.values()) {
        reject(Object.assign(new Error("the connection dropped before the gateway answered: try again"), { code: "disconnected" }));
      }
      this.pending.clear();
      if (this.stopped) return;
      if (close.code === 1008) {
        this.emit("revoked", { reason: close.reason });
        return;
      }
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt) * (0.5 + Math.random() / 2);
      this.attempt += 1;
      this.emit("state", { online: false, retryInMs: Math.round(delay), attempt: this.attempt, code: close.code });
      this.timer = setTimeout(() => this.connect(), delay);
    });
  }

  /** Closes for good (sign out). */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.socket?.close(1000, "signed out");
    this.socket = null;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.id !== undefined && this.pending.has(frame.id)) {
      const { resolve, reject } = this.pending.get(frame.id);
      this.pending.delete(frame.id);
      if (frame.type === "error") reject(Object.assign(new Error(frame.message), frame));
      else resolve(frame);
      return;
    }
    const subscription = this.subscriptions.get(frame.conversation_id);
    if (frame.type === "event" && subscription) {
      if (typeof frame.seq === "number") {
        if (frame.seq <= subscription.lastSeq) return;
        subscription.lastSeq = frame.seq;
      }
      subscription.onEvent(frame.event, frame.seq);
    } else if (frame.type === "presence" && subscription) {
      subscription.onPresence(frame.online);
    } else if (frame.type === "error") {
      this.emit("problem", frame);
    }
  }

  /** Sends a frame and resolves with its ack (or pong); rejects with the gateway's error. */
  request(frame) {
    if (!this.open) {
      return Promise.reject(Object.assign(new Error("not connected to the gateway yet: wait for the connection to come back"), { code: "disconnected" }));
    }
    const id = `f${this.nextId++}`;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.send(JSON.stringify({ ...frame, id }));
    });
  }

  /** Follows a conversation from after `afterSeq`: replayed first, then live, across reconnects. */
  subscribe(conversationId, afterSeq, onEvent, onPresence) {
    const subscription = { lastSeq: afterSeq, onEvent, onPresence };
    this.subscriptions.set(conversationId, subscription);
    if (this.open) this.sendSubscribe(conversationId, subscription);
    return subscription;
  }

  unsubscribe(conversationId) {
    if (!this.subscriptions.delete(conversationId)) return;
    if (this.open) this.request({ type: "unsubscribe", conversation_id: conversationId }).catch(() => {});
  }

  sendSubscribe(conversationId, subscription) {
    this.request({ type: "subscribe", conversation_id: conversationId, after_seq: subscription.lastSeq }).catch((error) => {
      this.emit("problem", { ...error, message: error.message, conversation_id: conversationId });
    });
  }
}
