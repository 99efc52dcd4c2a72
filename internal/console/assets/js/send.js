// Send a command (POST /v1/commands) and see its result.
import { api } from './api.js';
import { clear, entityLink, errorNote, h, note, pretty } from './ui.js';

export function render(main, info) {
  const types = info.entity_types.filter((t) => t.commands && t.commands.length);
  main.append(h('h1', {}, 'Send a command'));
  if (!types.length) { main.append(note('warn', 'No entity type here takes commands.')); return; }
  const type = h('select', { name: 'entity' }, types.map((t) => h('option', { value: t.name }, t.name)));
  const cmd = h('select', { name: 'type' });
  const id = h('input', { name: 'entity_id', class: 'id', placeholder: 'leave empty for a new entity' });
  const expected = h('input', { name: 'expected_version', type: 'number', min: '0', placeholder: 'any' });
  const attrs = h('div', { id: 'attrs' });
  const raw = h('textarea', { name: 'data', spellcheck: false, placeholder: 'the command\'s data, e.g. {"amount": 100}' });
  const rawBox = h('label', {}, 'Data (JSON)', raw);
  const result = h('div', { id: 'result' });
  const kind = () => (types.find((t) => t.name === type.value) || {}).kind;
  const attributeForm = () => kind() === 'attributes' && (cmd.value === 'create' || cmd.value === 'update');

  function attrRow(name = '', value = '') {
    const n = h('input', { name: 'attr-name', placeholder: 'attribute', value: name });
    const v = h('input', { name: 'attr-value', placeholder: 'value (JSON, or else text)', value, class: 'id' });
    const r = h('div', { class: 'row attr' }, n, v, h('button', { type: 'button', onclick: () => r.remove() }, '×'));
    attrs.append(r);
  }
  function refresh() {
    const t = types.find((x) => x.name === type.value);
    const keep = cmd.value;
    clear(cmd, t.commands.map((c) => h('option', { value: c, selected: c === keep }, c)));
    const form = attributeForm();
    attrs.hidden = !form;
    addAttr.hidden = !form;
    rawBox.hidden = form || (kind() === 'attributes' && cmd.value === 'discard');
    if (form && !attrs.children.length) attrRow();
  }
  const addAttr = h('button', { type: 'button', onclick: () => attrRow() }, '+ attribute');
  type.onchange = refresh;
  cmd.onchange = refresh;

  function data() {
    if (attributeForm()) {
      const out = {};
      for (const r of attrs.querySelectorAll('.attr')) {
        const [n, v] = r.querySelectorAll('input');
        if (!n.value.trim()) continue;
        let val;
        try { val = JSON.parse(v.value); } catch { val = v.value; }
        out[n.value.trim()] = val;
      }
      return out;
    }
    if (!raw.value.trim()) return undefined;
    return JSON.parse(raw.value);
  }

  const form = h('form', { class: 'box', id: 'send-form', onsubmit: async (e) => {
    e.preventDefault();
    const body = { type: cmd.value, entity: type.value };
    if (id.value.trim()) body.entity_id = id.value.trim();
    if (expected.value !== '') body.expected_version = Number(expected.value);
    try {
      const d = data();
      if (d !== undefined) body.data = d;
    } catch (err) { clear(result, note('bad', 'The data is not JSON: ', err.message)); return; }
    clear(result, h('p', { class: 'muted' }, 'Sent; waiting for the result…'));
    try {
      const r = await api('/v1/commands', { method: 'POST', body });
      clear(result, note('ok', h('strong', { class: 'status' }, r.status), `: ${r.entity} `, entityLink(r.entity, r.entity_id), ` at version ${r.version}`,
        r.positions ? `, events at positions ${r.positions.join(', ')}` : ''), h('pre', {}, pretty(r)));
    } catch (err) {
      const r = err.body || {};
      clear(result, note(err.status === 504 ? 'warn' : 'bad', h('strong', { class: 'status' }, r.status || err.status), ': ', r.error || err.message), r.status ? h('pre', {}, pretty(r)) : null);
    }
  } },
  h('div', { class: 'row' }, h('label', {}, 'Entity type', type), h('label', {}, 'Command', cmd), h('label', {}, 'Entity id', id), h('label', {}, 'Expected version', expected)),
  attrs, addAttr, rawBox,
  h('div', { class: 'row' }, h('button', { class: 'primary', type: 'submit' }, 'Send')));
  main.append(form, result, h('p', { class: 'muted' }, 'The command goes to Kafka like any other; the writer answers with its result (accepted, rejected, conflict or invalid).'));
  refresh();
}
