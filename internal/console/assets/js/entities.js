// Entities: find one by id (or by a read-model attribute), and see it: its
// state, its history with the state at each version and what each event
// changed, and its new events live.
import { api, stream } from './api.js';
import { badge, changes, clear, diff, entityLink, errorNote, h, note, pretty, short, table, when } from './ui.js';

const kindOf = (info, type) => (info.entity_types.find((t) => t.name === type) || {}).kind;

export function render(main, info, [type, id]) {
  if (type && id) return entity(main, info, type, id);
  finder(main, info);
}

function typeSelect(info, selected) {
  return h('select', { name: 'type' }, info.entity_types.map((t) =>
    h('option', { value: t.name, selected: t.name === selected }, `${t.name} (${t.kind === 'attributes' ? 'attributes' : 'aggregate'})`)));
}

function finder(main, info) {
  main.append(h('h1', {}, 'Entities'));
  if (!info.entity_types.length) { main.append(note('warn', 'This service knows no entity type.')); return; }
  const type = typeSelect(info);
  const id = h('input', { name: 'id', class: 'id', placeholder: 'entity id (a UUID)', required: true, pattern: '[0-9a-fA-F-]{36}' });
  main.append(h('form', { class: 'row', id: 'find-id', onsubmit: (e) => {
    e.preventDefault();
    location.hash = `#/entities/${encodeURIComponent(type.value)}/${id.value.trim()}`;
  } }, h('label', {}, 'Type', type), h('label', {}, 'Id', id), h('button', { class: 'primary' }, 'Open')));

  const searchable = info.read_model_types || [];
  if (!searchable.length) {
    main.append(note('', info.apis.read_models ? 'No entity type here is kept in the read model.'
      : 'Finding entities by attribute uses the read model, which the projector serves.'));
    return;
  }
  const rtype = h('select', { name: 'rtype' }, searchable.map((t) => h('option', { value: t }, t)));
  const attr = h('input', { name: 'attr', placeholder: 'attribute, e.g. foo', required: true });
  const value = h('input', { name: 'value', placeholder: 'value, e.g. bar or 3 or "3"' });
  const out = h('div', { id: 'found' });
  main.append(h('h2', {}, 'Find by attribute (read model)'),
    h('form', { class: 'row', id: 'find-attr', onsubmit: async (e) => {
      e.preventDefault();
      clear(out, h('p', { class: 'muted' }, 'Searching…'));
      const q = new URLSearchParams({ [attr.value.trim()]: value.value, limit: '50' });
      try {
        const res = await api(`/v1/read-models/${encodeURIComponent(rtype.value)}?${q}`);
        clear(out, res.items.length ? table(['id', 'version#', 'attributes', 'updated'], res.items.map((r) => h('tr', {},
          h('td', {}, entityLink(r.type, r.id)), h('td', { class: 'num' }, r.version),
          h('td', { class: 'trunc mono' }, short(r.attributes, 160)), h('td', {}, when(r.updated_at))))) : note('', 'No entity has that value.'),
        res.next_after ? h('p', { class: 'muted' }, 'First 50 shown.') : null);
      } catch (err) { clear(out, errorNote(err)); }
    } }, h('label', {}, 'Type', rtype), h('label', {}, 'Attribute', attr), h('label', {}, 'Value', value), h('button', {}, 'Find')),
    out);
}

// stateOf is what the API shows of an entity at a version: attributes for
// the generic entity, state for an aggregate.
const stateOf = (e) => (e ? (e.attributes !== undefined ? e.attributes : e.state) : undefined);

function entity(main, info, type, id) {
  const kind = kindOf(info, type);
  const head = h('div', { class: 'row' }, h('h1', {}, type, ' ', h('code', {}, id)));
  const status = h('div', { id: 'entity-status' });
  const current = h('div', { id: 'entity-state' });
  const history = h('div', { id: 'history' });
  main.append(head, status, current, history);
  if (!kind) { status.append(note('bad', `This service knows no entity type "${type}".`)); return; }
  if (!info.apis.entities) { readModelRow(info, type, id, status, current); return; }

  let events = [];
  const states = new Map(); // version -> state (undefined: not loaded)
  let live = null;
  let closed = false;
  const liveBadge = badge('', 'connecting');

  async function stateAt(version) {
    if (states.has(version)) return states.get(version);
    const p = api(`/v1/entities/${encodeURIComponent(type)}/${id}?version=${version}`).then(stateOf, () => undefined);
    states.set(version, p);
    return p;
  }

  function showState(e) {
    clear(current, h('h2', {}, 'State at version ', e.version),
      h('pre', { id: 'state-json' }, pretty(stateOf(e))));
  }

  async function loadCurrent() {
    try {
      const e = await api(`/v1/entities/${encodeURIComponent(type)}/${id}`);
      clear(status, h('div', { class: 'row' }, badge('ok', `version ${e.version}`), badge('', kind), liveBadge));
      showState(e);
      return 'ok';
    } catch (err) {
      if (err.status === 410) {
        clear(status, note('bad', h('strong', {}, 'Forgotten. '), err.message, ' Its id and the topics of its events are all that is left.'));
        clear(current);
        return 'forgotten';
      }
      if (err.status === 404 && events.length) {
        const last = events[events.length - 1];
        clear(status, h('div', { class: 'row' }, badge('warn', `discarded at version ${last.position + 1}`), badge('', kind), liveBadge),
          note('warn', 'The entity is discarded: its history below shows what it was.'));
        clear(current);
        return 'discarded';
      }
      clear(status, errorNote(err));
      return 'missing';
    }
  }

  const tbody = h('tbody');
  function row(ev, fresh, auto = true) {
    const version = ev.position + 1;
    const changed = h('td', { class: 'changes' }, h('span', { class: 'muted' }, '…'));
    const show = h('button', { onclick: async () => {
      const s = await stateAt(version);
      clear(current, h('h2', {}, 'State at version ', version, ' ', h('a', { href: '#', onclick: (e) => { e.preventDefault(); loadCurrent(); } }, '(back to the current state)')),
        s === undefined ? note('warn', 'Not available at that version.') : h('pre', { id: 'state-json' }, pretty(s)));
      current.scrollIntoView({ behavior: 'smooth' });
    } }, 'state');
    const tr = h('tr', { class: fresh ? 'new' : '', 'data-position': ev.position },
      h('td', { class: 'num' }, version), h('td', {}, h('code', {}, ev.topic)), h('td', {}, when(ev.state && ev.state.timestamp)),
      h('td', { class: 'mono trunc' }, ev.state === null ? h('span', { class: 'muted' }, `not readable (${ev.codec})`) : short(ev.state, 140)),
      changed, h('td', {}, show));
    tbody.prepend(tr);
    const compare = async () => {
      const after = await stateAt(version);
      const before = version > 1 ? await stateAt(version - 1) : undefined;
      clear(changed, after === undefined && before === undefined ? h('span', { class: 'muted' }, '—') : changes(diff(before, after)));
    };
    if (auto) compare();
    else clear(changed, h('button', { onclick: compare }, 'compare'));
  }

  async function loadHistory() {
    try {
      const res = await api(`/v1/entities/${encodeURIComponent(type)}/${id}/events`);
      events = res.events;
    } catch (err) {
      if (err.status !== 410) clear(history, errorNote(err));
      return false;
    }
    clear(history, h('h2', {}, 'History ', h('span', { class: 'muted' }, '(newest first; each state replayed with ?version=N)')),
      table(['version#', 'event', 'at', 'data', 'changed', ''], tbody, { id: 'history-table' }));
    // What changed is worked out from the states at each version: for the
    // newest 100 at once, for older ones on demand.
    events.forEach((ev, i) => row(ev, false, i >= events.length - 100));
    return true;
  }

  (async () => {
    const ok = await loadHistory();
    const state = await loadCurrent();
    if (!ok || state === 'forgotten' || closed) return;
    const last = events.length ? String(events[events.length - 1].position) : '';
    live = stream(`/v1/entities/${encodeURIComponent(type)}/${id}/stream`, {
      lastEventId: last,
      onStatus: (s, detail) => { clear(liveBadge, s === 'live' ? 'live' : s); liveBadge.className = 'badge ' + (s === 'live' ? 'ok' : 'warn'); liveBadge.title = detail || ''; },
      onEvent: (name, data) => {
        if (name === 'event') {
          events.push(data);
          states.delete(data.position + 1);
          row(data, true);
          loadCurrent();
        } else if (name === 'forgotten') {
          loadCurrent();
        }
      },
    });
  })();
  return () => { closed = true; if (live) live.close(); };
}

// readModelRow shows what a projector alone knows of an entity.
async function readModelRow(info, type, id, status, current) {
  status.append(note('warn', 'This service has no entity API: the history is served by the writer. Here is the read model\'s row.'));
  if (!(info.read_model_types || []).includes(type)) return;
  try {
    const row = await api(`/v1/read-models/${encodeURIComponent(type)}/${id}`);
    current.append(h('h2', {}, 'Read model at version ', row.version), h('pre', { id: 'state-json' }, pretty(row.attributes)));
  } catch (err) {
    current.append(err.status === 410 ? note('bad', h('strong', {}, 'Forgotten. '), err.message) : errorNote(err));
  }
}

export { entityLink };
