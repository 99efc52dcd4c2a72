// Projections: position and lag per partition (records and seconds), and
// the rate each applies at, from GET /v1/projections every 2 seconds.
import { api } from './api.js';
import { badge, clear, errorNote, h, num, table } from './ui.js';

export function render(main) {
  const out = h('div', { id: 'projections' }, h('p', { class: 'muted' }, 'Loading…'));
  main.append(h('h1', {}, 'Projections'), out);
  let prev = null;
  let timer = null;
  async function tick() {
    try {
      const res = await api('/v1/projections');
      const now = performance.now();
      const names = [...new Set([...Object.keys(res.stats || {}), ...(res.lag || []).map((l) => l.projection)])].sort();
      clear(out, names.map((name) => {
        const st = res.stats[name] || {};
        const parts = (res.lag || []).filter((l) => l.projection === name);
        const behind = parts.reduce((a, l) => a + l.lag, 0);
        const worst = parts.reduce((a, l) => Math.max(a, l.lag_seconds), 0);
        let rate = '…';
        if (prev && prev.stats[name]) rate = Math.max(0, (st.applied - prev.stats[name].applied) / ((now - prev.at) / 1000)).toFixed(1) + '/s';
        return h('section', { class: 'box', 'data-projection': name },
          h('div', { class: 'row' }, h('h2', {}, name),
            behind ? badge('warn', `${num(behind)} behind, ${worst.toFixed(1)} s`) : badge('ok', 'caught up'),
            st.parked_now ? h('a', { href: '#/dead-letters' }, badge('bad', `${num(st.parked_now)} parked (${num(st.parked_events_now)} events)`)) : null),
          h('div', { class: 'kv' },
            h('span', { class: 'muted' }, 'rate'), h('span', { class: 'rate' }, rate),
            h('span', { class: 'muted' }, 'applied'), h('span', {}, num(st.applied)),
            h('span', { class: 'muted' }, 'batches / records'), h('span', {}, `${num(st.batches)} / ${num(st.records)}`),
            h('span', { class: 'muted' }, 'duplicates skipped / gaps repaired'), h('span', {}, `${num(st.duplicates)} / ${num(st.repaired)}`),
            h('span', { class: 'muted' }, 'parked / retried / skipped'), h('span', {}, `${num(st.parked)} / ${num(st.retried)} / ${num(st.skipped)}`)),
          parts.length ? table(['topic', 'partition#', 'position#', 'end offset#', 'lag (records)#', 'lag (s)#'], parts.map((l) => h('tr', {},
            h('td', {}, h('code', {}, l.topic)), h('td', { class: 'num' }, l.partition), h('td', { class: 'num' }, l.position < 0 ? '—' : num(l.position)),
            h('td', { class: 'num' }, num(l.end_offset)), h('td', { class: 'num' }, num(l.lag)), h('td', { class: 'num' }, l.lag_seconds.toFixed(1)))))
            : h('p', { class: 'muted' }, 'No partition measured yet (every 2 s).'));
      }));
      prev = { stats: res.stats || {}, at: now };
    } catch (e) {
      clear(out, errorNote(e));
    }
    timer = setTimeout(tick, 2000);
  }
  tick();
  return () => clearTimeout(timer);
}
