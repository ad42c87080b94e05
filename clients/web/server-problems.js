// Where the server is, and why the page cannot reach it or lost it, in words a user can act on: a browser reports
// any refused or dropped WebSocket as a bare close code.

const REALTIME_PATH = '/v1/realtime'; // where the server takes sessions, as OpenAI's API does

// One of the server's HTTP endpoints beside its WebSocket URL (null for a malformed URL): under the same sub-path,
// where a reverse proxy mounts the server (ws://host/voice/v1/realtime -> http://host/voice/healthz).
export function serverUrl(wsUrl, path) {
  let url;
  try {
    url = new URL(wsUrl);
  } catch {
    return null;
  }
  const api = url.pathname.replace(/\/$/, '');
  const root = api.endsWith(REALTIME_PATH) ? api.slice(0, -REALTIME_PATH.length) : '';
  url = new URL(root + path, url);
  url.protocol = secure(url) ? 'https:' : 'http:';
  return url;
}

// The Realtime API's address for a page or server address: at that address's folder, so that a page a reverse proxy
// serves under a sub-path (http://host/voice/) reaches the server under it too, not at the host's root.
export function realtimeUrlAt(href) {
  const url = new URL(REALTIME_PATH.slice(1), href);
  url.protocol = secure(url) ? 'wss:' : 'ws:';
  return url.href;
}

function secure(url) {
  return ['wss:', 'https:'].includes(url.protocol);
}

// A server that takes the connection and answers nothing (stuck, its event loop blocked, a proxy holding the request)
// left the page 'starting' for good, Connect disabled: the page's requests and handshake on the way to a session give
// up after this.
const ANSWER_TIMEOUT_S = 10;

export function fetchOrGiveUp(url, init = {}) {
  return fetch(url, { ...init, cache: 'no-store', signal: AbortSignal.timeout(ANSWER_TIMEOUT_S * 1000) });
}

// Why connecting fails or would fail, from the server's /healthz: a browser reports any refused WebSocket as close
// code 1006, and a stopped server first as a worklet that failed to load.
export async function serverProblem(wsUrl) {
  const healthUrl = serverUrl(wsUrl, '/healthz');
  if (!healthUrl) return null; // the WebSocket constructor names a malformed URL itself
  try {
    return await healthProblem(healthUrl);
  } catch (err) {
    if (err.name !== 'TimeoutError') throw err;
    return notAnswering(healthUrl.host);
  }
}

function notAnswering(host) {
  return `the server at ${host} took the connection but did not answer in ${ANSWER_TIMEOUT_S} s: it may be stuck or `
    + 'overloaded (its log may say why). Press Connect to try again.';
}

async function healthProblem(healthUrl) {
  let res;
  try {
    res = await fetchOrGiveUp(healthUrl);
  } catch (err) {
    if (err.name === 'TimeoutError') throw err;
    // Another host's /healthz can be unreadable only for want of CORS headers: then that server answers all the same.
    if (healthUrl.host !== location.host && await answers(healthUrl)) return null;
    return `the server at ${healthUrl.host} does not answer: is stepaudio-rt serve running? `
      + 'Press Connect again once it is.';
  }
  if (res.status !== 503) return null;
  // /healthz says why: {"status": "loading" | "full" | "chat_lm_down", "reason": ...}
  const health = await res.json().catch(() => ({}));
  if (health.status === 'full') return 'the server is full (all its sessions are taken): try again later';
  if (health.status === 'chat_lm_down') return `the server cannot answer now: ${health.reason}`;
  return 'the server is still loading its models: connect again in a few seconds';
}

// Whether anything answers at url, its response unread (so that no CORS header is needed). An https page may not ask
// an http URL at all: that tells nothing, and the WebSocket says why it cannot connect.
async function answers(url) {
  if (location.protocol === 'https:' && url.protocol === 'http:') return true;
  try {
    await fetchOrGiveUp(url, { mode: 'no-cors' });
    return true;
  } catch (err) {
    if (err.name === 'TimeoutError') throw err;
    return false;
  }
}

// A refused handshake is asked about again: another page may have taken the server's last place since the check
// made before the microphone was opened.
export async function openSocket(socket, wsUrl) {
  try {
    await socket.open(ANSWER_TIMEOUT_S);
  } catch (err) {
    if (err.name === 'TimeoutError') throw new Error(notAnswering(new URL(wsUrl).host));
    const problem = (await serverProblem(wsUrl)) || pathProblem(wsUrl) || (await refusal(wsUrl, socket.key));
    throw new Error(problem || err.message);
  }
}

// Why a server that answers refused the handshake, which a browser reports as a bare 1006 whatever the status: asked
// again as a plain request with the key, stepaudio-rt answers 401 to a wrong or missing key, and 426 (upgrade
// required) to the right one, as it did to the handshake itself if a proxy dropped its upgrade on the way.
// Unanswered (another host's server, which allows no Authorization header across origins), it tells nothing.
async function refusal(wsUrl, key) {
  const url = serverUrl(wsUrl, REALTIME_PATH);
  let res;
  try {
    res = await fetchOrGiveUp(url, key ? { headers: { Authorization: `Bearer ${key}` } } : {});
  } catch {
    return null;
  }
  if (res.status === 401 && key) return 'the server refused the API key: check it under API key';
  if (res.status === 401) return 'the server needs an API key: enter it under API key';
  if (res.status !== 426) return null;
  return `the server at ${url.host} answers, but the WebSocket handshake reached it without its upgrade: a proxy in `
    + 'between does not pass WebSocket upgrades on (nginx needs proxy_http_version 1.1 and proxy_set_header '
    + 'Upgrade $http_upgrade and Connection "upgrade")';
}

// A server that answers yet refused the handshake: an address without the API's path (the page's own, pasted into the
// Server box) is refused as not found, which the browser reports as a bare 1006 that blamed the API key.
// A folder's address (a page's, http://host/voice/) has the API below it; a mistyped path (/v1/realtim) is no folder.
function pathProblem(wsUrl) {
  const url = new URL(wsUrl);
  if (url.pathname.replace(/\/$/, '').endsWith(REALTIME_PATH)) return null;
  const api = realtimeUrlAt(url.pathname.endsWith('/') ? url : new URL('/', url));
  return `nothing takes a session at ${wsUrl}: the server's address is ${api}`;
}

// The microphone's refusals name a DOMException ("Permission denied", "Requested device not found"): say what to do.
export function problemText(err) {
  if (err.name === 'NotAllowedError') {
    return 'the microphone is blocked for this page: allow it in the browser (the icon at the left of the address '
      + 'bar) and press Connect again';
  }
  if (err.name === 'NotFoundError') return 'no microphone was found: plug one in and press Connect again';
  return err.message || String(err);
}

// A bare close code reads as a fault of the page: say what the server's codes mean and what to do.
export function closedMessage(e) {
  const code = `code ${e.code}${e.reason ? `: ${e.reason}` : ''}`;
  if (e.code === 1001) return `the server shut down (${code}): connect again once it is back`;
  if (e.code === 1011) return `the server failed in this session (${code}): its log says why; connect again`;
  if (e.code === 1006) return `the connection to the server was lost (${code}): connect again`;
  // 1013 is 'try again later': stepaudio-rt sends it (reason 'loading') to a session it cannot serve until its models
  // are loaded.
  if (e.code === 1013) return `the server cannot take a session yet (${code}): connect again in a few seconds`;
  return `connection closed by the server (${code})`;
}
