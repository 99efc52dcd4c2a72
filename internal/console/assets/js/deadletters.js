// Dead letters: the projections' parked entities, each with its parked
// events; retry (applied once, in order) or skip (with a reason).
import { api } from './api.js';
import { badge, clear, entityLink, errorNote, h, note, num, pretty, short, table, when } from './ui.js';

const path = (p, e, id) => `/v1/dead-letters/${encodeURIComponent(p)}/${encodeURIComponent(e)}/${id}`;

export function render(main, info, [projection, entity, id]) {
  if (projection && entity && id) return detail(main, projection, entity, id);
  list(main);
}

function list(main) {
  const out = h('div', { id: 'dead-letters' }, h('p', { class: 'muted' }, 'Loading…'));
  const result = h('div');
  const retryAll = h('button', { onclick: async () => {
    retryAll.disabled = true;
    try {
      const res = await api('/v1/dead-letters/retry', { method: 'POST' });
      clear(result, note('ok', `Retried ${res.results.length}: `, res.results.map((r) => `${r.entity} ${r.id} ${r.parked ? 'parked again: ' + r.reason : 'applied ' + r.applied}`).join('; ')));
    } catch (e) { clear(result, errorNote(e)); }
    retryAll.disabled = false;
    load();
  } }, 'Retry all');
  main.append(h('div', { class: 'row' }, h('h1', {}, 'Dead letters'), retryAll), result,
    h('p', { class: 'muted' }, 'An event a projection cannot apply parks its entity for that projection: it and the entity\'s later events wait, in order, while other entities go on.'), out);
  async function load() {
    try {
      const res = await api('/v1/dead-letters?limit=500');
      clear(out, res.items.length ? table(['projection', 'entity', 'positions', 'events#', 'reason', 'parked since', 'failed retries#'], res.items.map((s) => h('tr', { 'data-id': s.id },
        h('td', {}, s.projection), h('td', {}, h('a', { href: `#/dead-letters/${encodeURIComponent(s.projection)}/${encodeURIComponent(s.entity)}/${s.id}` }, s.entity, ' ', h('code', {}, s.id))),
        h('td', {}, `${s.first_position}…${s.last_position}`), h('td', { class: 'num' }, num(s.count)), h('td', { class: 'trunc' }, s.reason),
        h('td', {}, when(s.first_parked_at)), h('td', { class: 'num' }, s.failed_retries)))) : note('ok', 'Nothing is parked.'));
    } catch (e) { clear(out, errorNote(e)); }
  }
  load();
}

function detail(main, projection, entity, id) {
  const out = h('div', { id: 'dead-letter' });
  const result = h('div', { id: 'dead-letter-result' });
  main.append(h('h1', {}, 'Parked: ', entity, ' ', h('code', {}, id)), h('p', {}, h('a', { href: '#/dead-letters' }, '← every parked entity'), ' · ', entityLink(entity, id)), result, out);
  async function load() {
    let d;
    try { d = await api(path(projection, entity, id)); } catch (e) { clear(out, errorNote(e)); return; }
    const reason = h('input', { name: 'reason', placeholder: 'why they are skipped (recorded)', required: true, class: 'id' });
    const retry = h('button', { class: 'primary', disabled: !d.parked, onclick: async () => {
      retry.disabled = true;
      try {
        const r = await api(path(projection, entity, id) + '/retry', { method: 'POST' });
        clear(result, r.parked ? note('warn', `Applied ${r.applied} of ${r.events}; parked again from position ${r.parked_from}: ${r.reason}`)
          : note('ok', `Retried: applied ${r.applied} of ${r.events} events (positions ${r.first_position}…${r.last_position}), once, in order.`));
      } catch (e) { clear(result, errorNote(e)); }
      load();
    } }, 'Retry');
    const skip = h('form', { class: 'row', onsubmit: async (e) => {
      e.preventDefault();
      if (!confirmSkip(d)) return;
      try {
        const r = await api(path(projection, entity, id) + '/skip', { method: 'POST', body: { reason: reason.value } });
        clear(result, note('warn', `Skipped ${r.events} events (positions ${r.first_position}…${r.last_position}), never applied: "${r.reason}".`));
      } catch (err) { clear(result, errorNote(err)); }
      load();
    } }, h('label', {}, 'Reason', reason), h('button', { class: 'danger', disabled: !d.parked }, 'Skip'));
    clear(out,
      h('div', { class: 'row' }, d.parked ? badge('bad', 'parked') : badge('ok', 'not parked'), badge('', `projection ${d.projection}`)),
      d.parked ? note('bad', h('strong', {}, 'Reason: '), d.reason) : note('ok', 'Nothing of this entity is parked now.'),
      h('div', { class: 'kv' },
        h('span', { class: 'muted' }, 'positions'), h('span', {}, `${d.first_position}…${d.last_position} (${num(d.count)} events)`),
        h('span', { class: 'muted' }, 'parked'), h('span', {}, `${when(d.first_parked_at)}, last ${when(d.last_parked_at)}`),
        h('span', { class: 'muted' }, 'failed retries'), h('span', {}, d.failed_retries)),
      h('div', { class: 'row' }, retry), skip,
      h('h2', {}, 'Parked events'),
      d.events.length ? table(['position#', 'event', 'codec', 'from', 'state'], d.events.map((e) => h('tr', {},
        h('td', { class: 'num' }, e.position), h('td', {}, h('code', {}, e.topic)), h('td', {}, e.codec),
        h('td', { class: 'mono' }, e.record ? `${e.record.topic}/${e.record.partition}@${e.record.offset}` : e.notification_id ? `notification ${e.notification_id}` : ''),
        h('td', { class: 'mono trunc' }, e.state !== undefined ? short(e.state, 140) : `${atob(e.state_base64 || '').length} bytes, not plain JSON (compressed or encrypted)`)))) : h('p', { class: 'muted' }, 'None.'),
      h('h2', {}, 'Retries and skips'),
      d.actions.length ? table(['at', 'action', 'positions', 'events#', 'reason'], d.actions.map((a) => h('tr', {},
        h('td', {}, when(a.at)), h('td', {}, a.action), h('td', {}, `${a.first_position}…${a.last_position}`), h('td', { class: 'num' }, a.count), h('td', {}, a.reason || '')))) : h('p', { class: 'muted' }, 'None yet.'),
      h('details', {}, h('summary', { class: 'muted' }, 'JSON'), h('pre', {}, pretty({ ...d, events: d.events.map((e) => ({ ...e, state_base64: e.state_base64 ? '…' : undefined })) }))));
  }
  load();
}

function confirmSkip(d) {
  return window.confirm(`Skip ${d.count} events of ${d.entity} ${d.id}? They will never be applied by ${d.projection}.`);
}
