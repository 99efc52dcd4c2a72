// The live notification log: GET /v1/notifications/stream.
import { stream } from './api.js';
import { badge, clear, entityLink, h, short } from './ui.js';

const MAX_ROWS = 500;

export function render(main, info) {
  const from = h('select', { name: 'from' },
    h('option', { value: 'end' }, 'from now'), h('option', { value: '0' }, 'from the start'), h('option', { value: 'id' }, 'after id…'));
  const after = h('input', { name: 'after', type: 'number', min: '0', placeholder: 'notification id', hidden: true });
  from.onchange = () => { after.hidden = from.value !== 'id'; };
  const type = h('select', { name: 'entity' }, h('option', { value: '' }, 'every type'), info.entity_types.map((t) => h('option', { value: t.name }, t.name)));
  const status = badge('', 'stopped');
  const count = h('span', { class: 'muted' });
  const tbody = h('tbody', { id: 'log-rows' });
  let s = null;
  let n = 0;
  let paused = false;
  let held = [];
  const pause = h('button', { type: 'button', onclick: () => {
    paused = !paused;
    clear(pause, paused ? 'Resume' : 'Pause');
    if (!paused) { held.forEach(show); held = []; }
  } }, 'Pause');

  function show(ev) {
    const [etype] = ev.topic.split('.');
    const entityCell = info.entity_types.some((t) => t.name === etype) ? entityLink(etype, ev.sequence_id) : h('code', {}, ev.sequence_id);
    tbody.prepend(h('tr', { class: 'new' },
      h('td', { class: 'num' }, ev.notification_id), h('td', {}, h('code', {}, ev.topic)), h('td', {}, entityCell),
      h('td', { class: 'num' }, ev.position), h('td', { class: 'mono trunc' }, ev.state === null ? `(${ev.codec})` : short(ev.state, 140))));
    while (tbody.children.length > MAX_ROWS) tbody.lastChild.remove();
  }

  function follow(e) {
    if (e) e.preventDefault();
    if (s) s.close();
    clear(tbody);
    n = 0;
    const q = new URLSearchParams();
    q.set('after', from.value === 'id' ? String(after.value || 0) : from.value);
    if (type.value) q.set('entity', type.value);
    s = stream(`/v1/notifications/stream?${q}`, {
      onStatus: (st, detail) => { clear(status, st); status.className = 'badge ' + (st === 'live' ? 'ok' : 'warn'); status.title = detail || ''; },
      onEvent: (name, data) => {
        if (name !== 'notification') return;
        n++;
        clear(count, `${n.toLocaleString()} received; the newest ${MAX_ROWS} shown`);
        paused ? held.push(data) : show(data);
        if (held.length > MAX_ROWS) held.shift();
      },
    });
  }

  main.append(h('h1', {}, 'Live notification log'),
    h('form', { class: 'row', onsubmit: follow },
      h('label', {}, 'Start', from), after, h('label', {}, 'Entity type', type), h('button', { class: 'primary' }, 'Follow'), pause, status, count),
    h('p', { class: 'muted' }, 'Every stored item in commit order, as the relay publishes it (events, command results, dead letters, commands of process applications). Server-Sent Events: it resumes with Last-Event-ID after a drop.'),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', { class: 'num' }, 'id'), h('th', {}, 'topic'), h('th', {}, 'entity'), h('th', { class: 'num' }, 'position'), h('th', {}, 'state'))), tbody));
  follow();
  return () => { if (s) s.close(); };
}
