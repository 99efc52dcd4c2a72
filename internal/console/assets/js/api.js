// The service's HTTP API: JSON requests and Server-Sent Events streams,
// with the credentials the person gave (kept for this tab only).

const root = new URL('../', document.baseURI); // the service, behind any path prefix
const KEY = 'eventlog.authorization';

export function credentials() { return sessionStorage.getItem(KEY) || ''; }
export function setCredentials(v) { v ? sessionStorage.setItem(KEY, v) : sessionStorage.removeItem(KEY); }
export function bearer(token) { return 'Bearer ' + token.trim(); }
export function basic(user, pass) {
  const bytes = new TextEncoder().encode(user + ':' + pass);
  return 'Basic ' + btoa(String.fromCharCode(...bytes));
}

function headers(extra) {
  const h = { 'X-Requested-With': 'eventlog-console', ...extra };
  const c = credentials();
  if (c) h.Authorization = c;
  return h;
}

export class HTTPError extends Error {
  constructor(status, body) {
    super((body && body.error) || 'HTTP ' + status);
    this.status = status;
    this.body = body || {};
  }
}

export function url(path) { return new URL(path.replace(/^\//, ''), root); }

// api sends a request and returns the decoded JSON answer, or throws an
// HTTPError with the API's message.
export async function api(path, { method = 'GET', body, signal } = {}) {
  const init = { method, headers: headers({ Accept: 'application/json' }), signal, cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url(path), init);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: text.trim() }; }
  if (!res.ok) throw new HTTPError(res.status, data);
  return data;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// stream follows a Server-Sent Events stream of the API. It reads with
// fetch (so that it can send the credentials), resumes with Last-Event-ID
// after a drop, an end or a broken connection, and stops for good on a 4xx
// answer or a "forgotten" event. onEvent(name, data, id) gets every event;
// onStatus(state, detail) hears "live", "reconnecting", "stopped".
export function stream(path, { onEvent, onStatus = () => {}, lastEventId = '' }) {
  const s = { closed: false, ctl: null, lastEventId };
  (async () => {
    for (let attempt = 0; !s.closed; attempt++) {
      let wait = Math.min(500 * 2 ** attempt, 5000);
      s.ctl = new AbortController();
      try {
        const h = headers({ Accept: 'text/event-stream' });
        if (s.lastEventId) h['Last-Event-ID'] = s.lastEventId;
        const res = await fetch(url(path), { headers: h, signal: s.ctl.signal, cache: 'no-store' });
        if (!res.ok) {
          const body = await res.json().catch(() => ({}));
          if (res.status >= 400 && res.status < 500) { onStatus('stopped', `${res.status}: ${body.error || res.statusText}`, res.status); return; }
          throw new Error(body.error || res.statusText);
        }
        onStatus('live');
        attempt = -1;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '', ev = {}, last = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, i).replace(/\r$/, '');
            buf = buf.slice(i + 1);
            if (line === '') {
              if (ev.event || ev.data !== undefined) {
                if (ev.id) s.lastEventId = ev.id;
                let data = null;
                try { data = JSON.parse(ev.data || 'null'); } catch { data = ev.data; }
                last = ev.event || 'message';
                onEvent(last, data, ev.id || '');
              }
              ev = {};
              continue;
            }
            if (line.startsWith(':')) continue;
            const c = line.indexOf(':');
            const field = c < 0 ? line : line.slice(0, c);
            let v = c < 0 ? '' : line.slice(c + 1);
            if (v.startsWith(' ')) v = v.slice(1);
            if (field === 'data') ev.data = ev.data === undefined ? v : ev.data + '\n' + v;
            else if (field === 'id' || field === 'event') ev[field] = v;
          }
        }
        if (last === 'forgotten') { onStatus('stopped', 'the entity was forgotten'); return; }
        if (last === 'dropped') wait = 0;
        onStatus('reconnecting', last ? `the stream ended (${last})` : 'the stream ended');
      } catch (e) {
        if (s.closed) return;
        onStatus('reconnecting', e.message);
      }
      if (wait) await sleep(wait);
    }
  })();
  return { close() { s.closed = true; if (s.ctl) s.ctl.abort(); }, get lastEventId() { return s.lastEventId; } };
}
