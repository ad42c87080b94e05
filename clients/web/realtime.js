// A thin Realtime API socket for the browser: JSON events in and out, handlers by event type.
// Browsers cannot set an Authorization header on a WebSocket, so the key travels as the
// subprotocol "openai-insecure-api-key.<key>" next to "realtime", as OpenAI's API accepts.

// A subprotocol is an HTTP token (RFC 6455 4.1, RFC 7230 3.2.6): the browser refuses a key with any other character
// ('/', '=', a space...) before connecting, in an error that quotes the key.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

export function keyFitsSubprotocol(key) {
  return !key || TOKEN.test(key);
}

export class RealtimeSocket {
  constructor(url, key) {
    this.url = url;
    this.key = key;
    this.ws = null;
    this.handlers = new Map();
    this.onAny = () => {};
    this.onClose = () => {}; // (CloseEvent) once an opened socket closes, whoever closed it
  }

  on(type, fn) {
    this.handlers.set(type, fn);
    return this;
  }

  // Rejects with a TimeoutError if the handshake has not completed in timeoutS: a browser waits for a server that
  // takes the connection and never answers for minutes.
  open(timeoutS) {
    const protocols = ['realtime'];
    if (this.key) protocols.push(`openai-insecure-api-key.${this.key}`);
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, protocols);
      this.ws = ws;
      let opened = false;
      const timer = setTimeout(() => {
        ws.onclose = null;
        ws.close();
        reject(Object.assign(new Error(`${this.url} did not answer`), { name: 'TimeoutError' }));
      }, timeoutS * 1000);
      ws.onopen = () => {
        clearTimeout(timer);
        opened = true;
        resolve();
      };
      ws.onmessage = (e) => {
        let event;
        try {
          event = JSON.parse(e.data);
        } catch {
          return;
        }
        this.onAny(event);
        const fn = this.handlers.get(event.type);
        if (fn) fn(event);
      };
      ws.onclose = (e) => {
        clearTimeout(timer);
        if (!opened) {
          // The handshake failed (wrong key gives HTTP 401, a loading server 503): the browser
          // only reports code 1006, so say what usually causes it.
          reject(new Error(`could not connect to ${this.url} (close code ${e.code}; `
            + 'check the server and the API key)'));
          return;
        }
        this.onClose(e);
      };
    });
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  send(event) {
    if (this.isOpen) this.ws.send(JSON.stringify(event));
  }

  close() {
    if (this.ws) this.ws.close(1000, 'bye');
  }
}

// ArrayBuffer -> base64 without building one huge argument list.
export function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function fromBase64(text) {
  const s = atob(text);
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
  return bytes;
}
