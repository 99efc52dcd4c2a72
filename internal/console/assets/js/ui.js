// DOM helpers: everything shown is text, never HTML.

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k in el && k !== 'list' && k !== 'form') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  add(el, children);
  return el;
}

function add(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) { el.replaceChildren(); add(el, children); return el; }

export function pretty(v) { return JSON.stringify(v, null, 2); }

export function short(v, n = 120) {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return s && s.length > n ? s.slice(0, n - 1) + '…' : s;
}

export function note(kind, ...children) { return h('div', { class: 'note ' + kind }, children); }

export function badge(kind, text) { return h('span', { class: 'badge ' + kind }, text); }

export function errorNote(e) {
  return note('bad', e.status ? `${e.status}: ` : '', e.message || String(e));
}

export function when(t) {
  if (!t) return '';
  const d = new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleString();
}

export function num(n) { return typeof n === 'number' ? n.toLocaleString() : n ?? ''; }

// table builds a table from column titles and rows of cells.
// A title ending in # is a number column. rows may be a tbody.
export function table(cols, rows, props) {
  return h('table', props,
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', { class: c.endsWith('#') ? 'num' : '' }, c.replace(/#$/, ''))))),
    rows instanceof HTMLTableSectionElement ? rows : h('tbody', {}, rows));
}

export function entityLink(type, id) {
  return h('a', { href: `#/entities/${encodeURIComponent(type)}/${id}`, class: 'mono' }, id);
}

// diff lists what changed from a to b, by JSON path: [{path, op, from, to}],
// op "add", "del" or "chg".
export function diff(a, b, path = '') {
  const out = [];
  const obj = (v) => v && typeof v === 'object' && !Array.isArray(v);
  if (!path && a === undefined && obj(b)) a = {}; // the first event: all added
  if (obj(a) && obj(b)) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const p = path ? path + '.' + k : k;
      if (!(k in a)) out.push({ path: p, op: 'add', to: b[k] });
      else if (!(k in b)) out.push({ path: p, op: 'del', from: a[k] });
      else out.push(...diff(a[k], b[k], p));
    }
  } else if (JSON.stringify(a) !== JSON.stringify(b)) {
    out.push({ path: path || '(state)', op: a === undefined ? 'add' : b === undefined ? 'del' : 'chg', from: a, to: b });
  }
  return out;
}

export function changes(list) {
  if (!list.length) return h('span', { class: 'muted' }, 'nothing');
  return list.map((c) => h('div', { class: c.op },
    h('code', {}, c.path), ' ',
    c.op === 'add' ? ['= ', h('code', {}, short(JSON.stringify(c.to), 80))]
      : c.op === 'del' ? 'removed'
        : [h('code', {}, short(JSON.stringify(c.from), 40)), ' → ', h('code', {}, short(JSON.stringify(c.to), 60))]));
}
