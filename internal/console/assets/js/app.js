// The console: what this service serves (GET /v1/info), the pages, and a
// router over location.hash.
import { api, basic, bearer, credentials, setCredentials } from './api.js';
import { clear, errorNote, h, note } from './ui.js';
import * as entities from './entities.js';
import * as log from './log.js';
import * as projections from './projections.js';
import * as deadLetters from './deadletters.js';
import * as send from './send.js';

const pages = [
  { path: 'entities', title: 'Entities', page: entities, needs: ['entities', 'read_models'], by: 'the writer (history) or the projector (read model)' },
  { path: 'log', title: 'Live log', page: log, needs: ['streams'], by: 'the writer' },
  { path: 'projections', title: 'Projections', page: projections, needs: ['projections'], by: 'the projector' },
  { path: 'dead-letters', title: 'Dead letters', page: deadLetters, needs: ['dead_letters'], by: 'the projector' },
  { path: 'send', title: 'Send a command', page: send, needs: ['commands'], by: 'the writer' },
];

const main = document.getElementById('main');
let info = null;
let cleanup = null;

function available(p) { return p.needs.some((n) => info.apis[n]); }

function nav(current) {
  clear(document.getElementById('nav'), pages.map((p) => h('a', {
    href: '#/' + p.path,
    class: (p.path === current ? 'on ' : '') + (available(p) ? '' : 'off'),
    title: available(p) ? '' : `not on this service: served by ${p.by}`,
  }, p.title)));
}

function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  const p = pages.find((x) => x.path === parts[0]) || pages[0];
  nav(p.path);
  document.title = `${p.title} · ${info.program} ${info.service}`;
  clear(main);
  if (!available(p)) {
    main.append(h('h1', {}, p.title), note('warn',
      `This service (${info.program} ${info.service}) does not serve this page: it is served by ${p.by}. `,
      'Open the console of that service, or run everything in one process with ', h('code', {}, `${info.program} dev`), '.'));
    return;
  }
  try {
    cleanup = p.page.render(main, info, parts.slice(1)) || null;
  } catch (e) {
    main.append(errorNote(e));
  }
}

function signIn(schemes, message) {
  clear(document.getElementById('nav'));
  const token = h('input', { type: 'password', name: 'token', autocomplete: 'off', placeholder: 'token', class: 'id' });
  const user = h('input', { name: 'user', autocomplete: 'username', placeholder: 'user' });
  const pass = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', placeholder: 'password' });
  const form = h('form', { class: 'box', onsubmit: (e) => {
    e.preventDefault();
    setCredentials(token.value ? bearer(token.value) : basic(user.value, pass.value));
    start();
  } },
  h('h1', {}, 'Sign in'),
  note('warn', message || 'This service asks who you are.'),
  schemes.includes('bearer') ? h('div', { class: 'row' }, h('label', {}, 'Bearer token (the service\'s -http-token)', token)) : null,
  schemes.includes('basic') ? h('div', { class: 'row' }, h('label', {}, 'User', user), h('label', {}, 'Password', pass)) : null,
  h('div', { class: 'row' }, h('button', { class: 'primary', type: 'submit' }, 'Sign in')),
  h('p', { class: 'muted' }, 'Kept in this tab only (session storage), sent to this service only.'));
  clear(main, form);
}

async function start() {
  try {
    info = await api('/v1/info');
  } catch (e) {
    if (e.status === 401) {
      const had = credentials() !== '';
      setCredentials('');
      signIn(e.body.auth || ['bearer'], had ? 'Those credentials were not accepted.' : e.message);
      return;
    }
    clear(main, errorNote(e), note('', 'Is the service running? The console asks it for /v1/info.'));
    return;
  }
  clear(document.getElementById('service'), `${info.program} ${info.service}`);
  clear(document.getElementById('who'), credentials() ? h('a', { href: '#', onclick: (e) => {
    e.preventDefault(); setCredentials(''); location.reload();
  } }, 'sign out') : '');
  window.onhashchange = route;
  route();
}

start();
