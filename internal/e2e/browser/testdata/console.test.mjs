// Drives eventlog's console in headless Chromium, one phase per run (see
// ../browser_test.go, which starts `eventlog dev` and runs each phase):
//
//   live     create an entity with the form, see it, open its history, watch
//            a second command appear live (history and log), projections,
//            find it by attribute
//   parked   see the entity parked, with its reason and its parked event
//   retried  retry it from the console; it is applied and nothing is parked
//   split    a writer and a projector apart: each console serves what its
//            service has, and says what it has not
//   signin   a service with a token: the console asks for it, refuses a
//            wrong one, and with the right one works, live streams too
//
// Environment: BASE_URL (the service), PHASE, ENTITY_ID (parked, retried,
// split), PROJECTOR_URL (split), TOKEN (signin),
// SHOTS_DIR (a screenshot of each page goes there), CHROMIUM (the browser),
// README_SHOT (if set, where to write the README's screenshot).
// The last line on stdout is a JSON object with what the next phase needs.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const base = process.env.BASE_URL;
const phase = process.env.PHASE;
const shots = process.env.SHOTS_DIR || tmpdir();
const timeout = 15000;

const profile = mkdtempSync(join(tmpdir(), 'eventlog-chromium-'));
// A fresh profile each run: launchPersistentContext passes it as
// --user-data-dir.
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  viewport: { width: 1280, height: 860 },
});
context.setDefaultTimeout(timeout);
const pages = [];
const errors = [];
async function open(hash) {
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(`${page.url()}: ${e.message}`));
  // The browser logs every 4xx answer; the pages show those themselves.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(`${page.url()}: console: ${m.text()}`);
  });
  pages.push(page);
  await page.goto(`${base}/ui/${hash}`);
  return page;
}
let step = 0;
async function shot(page, name) {
  await page.screenshot({ path: join(shots, `${phase}-${String(++step).padStart(2, '0')}-${name}.png`), fullPage: true });
}
function log(...a) { console.error(`[${phase}]`, ...a); }

const out = {};
try {
  if (phase === 'live') await live();
  else if (phase === 'parked') await parked();
  else if (phase === 'retried') await retried();
  else if (phase === 'split') await split();
  else if (phase === 'signin') await signin();
  else throw new Error(`unknown PHASE ${phase}`);
  if (errors.length) throw new Error('the console had errors:\n' + errors.join('\n'));
} catch (e) {
  for (const [i, p] of pages.entries()) {
    await p.screenshot({ path: join(shots, `${phase}-failed-page${i}.png`), fullPage: true }).catch(() => {});
  }
  console.error(e.stack || e);
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(out));

// findBy searches the read model until it shows id: the projector may not
// have applied the last command yet.
async function findBy(page, attr, value, id) {
  await page.fill('input[name=attr]', attr);
  await page.fill('input[name=value]', value);
  const deadline = Date.now() + timeout;
  for (;;) {
    await page.click('#find-attr button');
    try {
      await page.locator('#found a').filter({ hasText: id }).waitFor({ timeout: 1000 });
      return;
    } catch (e) {
      if (Date.now() > deadline) throw e;
    }
  }
}

async function send(page, { command, id, attrs }) {
  await page.goto(`${base}/ui/#/send`);
  await page.selectOption('select[name=entity]', 'example');
  await page.selectOption('select[name=type]', command);
  if (id) await page.fill('input[name=entity_id]', id);
  await page.fill('#attrs .attr input[name=attr-name]', Object.keys(attrs)[0]);
  await page.fill('#attrs .attr input[name=attr-value]', Object.values(attrs)[0]);
  await page.click('#send-form button[type=submit]');
  await page.locator('#result .status').filter({ hasText: 'accepted' }).waitFor();
}

async function live() {
  // The form creates an entity; its result links to it.
  const page = await open('#/send');
  await page.locator('header #service').filter({ hasText: 'eventlog dev' }).waitFor();
  await send(page, { command: 'create', attrs: { foo: 'bar' } });
  await shot(page, 'send');
  const id = (await page.locator('#result a.mono').first().textContent()).trim();
  out.id = id;
  log('created', id);

  // Its page: the state, the history, live.
  await page.click('#result a.mono');
  await page.locator('#state-json').filter({ hasText: '"bar"' }).waitFor();
  await page.locator('#history-table tbody tr[data-position="0"]').filter({ hasText: 'example.Created' }).waitFor();
  await page.locator('#entity-status .badge').filter({ hasText: 'live' }).waitFor();
  await shot(page, 'entity');

  // The live log, from the start.
  const logPage = await open('#/log');
  await logPage.selectOption('select[name=from]', '0');
  await logPage.click('form button.primary');
  await logPage.locator('#log-rows tr').filter({ hasText: 'example.Created' }).filter({ hasText: id }).waitFor();

  // A second command, from another tab, appears live in both.
  const other = await open('#/send');
  await send(other, { command: 'update', id, attrs: { foo: 'baz' } });
  const row = page.locator('#history-table tbody tr[data-position="1"]');
  await row.filter({ hasText: 'example.AttributeChanged' }).waitFor();
  await row.locator('.changes').filter({ hasText: 'foo' }).filter({ hasText: '"baz"' }).waitFor(); // what it changed
  await page.locator('#state-json').filter({ hasText: '"baz"' }).waitFor();
  await page.locator('#entity-status').filter({ hasText: 'version 2' }).waitFor();
  await logPage.locator('#log-rows tr').filter({ hasText: 'example.AttributeChanged' }).filter({ hasText: id }).waitFor();
  await shot(page, 'entity-live');
  await shot(logPage, 'log');

  // The state at version 1, replayed.
  await page.locator('#history-table tbody tr[data-position="0"] button').click();
  await page.locator('#entity-state h2').filter({ hasText: 'State at version 1' }).waitFor();
  await page.locator('#state-json').filter({ hasText: '"bar"' }).waitFor();

  // Projections: positions and lag per partition.
  const proj = await open('#/projections');
  await proj.locator('section[data-projection=readmodel] table td').first().waitFor();
  await proj.locator('section[data-projection=readmodel] .rate').filter({ hasText: '/s' }).waitFor();
  await shot(proj, 'projections');

  // Found by attribute, through the read model.
  const find = await open('#/entities');
  await findBy(find, 'foo', 'baz', id);
  await shot(find, 'find');

  // An unknown entity says so.
  await page.goto(`${base}/ui/#/entities/example/00000000-0000-4000-8000-000000000000`);
  await page.locator('#entity-status').filter({ hasText: '404' }).waitFor();
}

async function parked() {
  const id = process.env.ENTITY_ID;
  const page = await open('#/dead-letters');
  const row = page.locator(`#dead-letters tr[data-id="${id}"]`);
  await row.waitFor();
  await shot(page, 'dead-letters');
  await row.locator('a').click();
  await page.locator('#dead-letter .badge').filter({ hasText: 'parked' }).first().waitFor();
  await page.locator('#dead-letter').filter({ hasText: 'not plain JSON' }).waitFor(); // the encrypted event
  await shot(page, 'dead-letter');
  const proj = await open('#/projections');
  await proj.locator('section[data-projection=readmodel] .badge').filter({ hasText: 'parked' }).waitFor();
}

async function retried() {
  const id = process.env.ENTITY_ID;
  const page = await open(`#/dead-letters/readmodel/example/${id}`);
  await page.locator('#dead-letter .badge').filter({ hasText: 'parked' }).first().waitFor();
  await page.locator('#dead-letter button.primary').filter({ hasText: 'Retry' }).click();
  await page.locator('#dead-letter-result').filter({ hasText: 'Retried: applied 1 of 1' }).waitFor();
  await page.locator('#dead-letter .badge').filter({ hasText: 'not parked' }).waitFor();
  await shot(page, 'retried');
  await page.goto(`${base}/ui/#/dead-letters`);
  await page.locator('#dead-letters').filter({ hasText: 'Nothing is parked' }).waitFor();

  // The entity, now readable in full, and its read-model row caught up.
  const ent = await open(`#/entities/example/${id}`);
  await ent.locator('#state-json').filter({ hasText: '"secret"' }).waitFor();
  await ent.locator('#history-table tbody tr[data-position="2"] .changes').filter({ hasText: 'secret' }).waitFor();
  await shot(ent, 'entity');
  if (process.env.README_SHOT) {
    await ent.screenshot({ path: process.env.README_SHOT });
  }
  const find = await open('#/entities');
  await findBy(find, 'secret', 'kept', id);
}

async function split() {
  const id = process.env.ENTITY_ID;
  // The writer: entities, the log and commands; not the projector's pages.
  const w = await open(`#/entities/example/${id}`);
  await w.locator('header #service').filter({ hasText: 'eventlog writer' }).waitFor();
  await w.locator('#state-json').filter({ hasText: '"secret"' }).waitFor();
  await w.locator('nav a.off').filter({ hasText: 'Projections' }).waitFor();
  await w.locator('nav a.off').filter({ hasText: 'Dead letters' }).waitFor();
  await w.goto(`${base}/ui/#/projections`);
  await w.locator('main .note').filter({ hasText: 'served by the projector' }).waitFor();
  await shot(w, 'writer');

  // The projector: read models, projections, dead letters; no history, no
  // commands, no log.
  const p = await context.newPage();
  pages.push(p);
  await p.goto(`${process.env.PROJECTOR_URL}/ui/#/entities/example/${id}`);
  await p.locator('header #service').filter({ hasText: 'eventlog projector' }).waitFor();
  await p.locator('#entity-status').filter({ hasText: 'served by the writer' }).waitFor();
  await p.locator('#state-json').filter({ hasText: '"kept"' }).waitFor(); // the read model's row
  await p.locator('nav a.off').filter({ hasText: 'Send a command' }).waitFor();
  await p.locator('nav a.off').filter({ hasText: 'Live log' }).waitFor();
  await shot(p, 'projector-entity');
  await p.goto(`${process.env.PROJECTOR_URL}/ui/#/send`);
  await p.locator('main .note').filter({ hasText: 'served by the writer' }).waitFor();
  await p.goto(`${process.env.PROJECTOR_URL}/ui/#/dead-letters`);
  await p.locator('#dead-letters').filter({ hasText: 'Nothing is parked' }).waitFor();
  await p.goto(`${process.env.PROJECTOR_URL}/ui/#/projections`);
  await p.locator('section[data-projection=readmodel] table td').first().waitFor();
  await shot(p, 'projector-projections');
}

async function signin() {
  const page = await open('');
  await page.locator('main h1').filter({ hasText: 'Sign in' }).waitFor();
  await page.fill('input[name=token]', 'not-the-token-0123456789');
  await page.click('main form button.primary');
  await page.locator('main .note').filter({ hasText: 'not accepted' }).waitFor();
  await page.fill('input[name=token]', process.env.TOKEN);
  await page.click('main form button.primary');
  await page.locator('header #service').filter({ hasText: 'eventlog dev' }).waitFor();
  await shot(page, 'signed-in');
  // Streams and commands carry the token too.
  await page.goto(`${base}/ui/#/log`);
  await page.locator('main .badge').filter({ hasText: 'live' }).waitFor();
  await send(page, { command: 'create', attrs: { who: 'signed in' } });
  await page.locator('#result a.mono').click();
  await page.locator('#state-json').filter({ hasText: '"signed in"' }).waitFor();
  await page.locator('#entity-status .badge').filter({ hasText: 'live' }).waitFor();
  await page.locator('#who a').filter({ hasText: 'sign out' }).waitFor();
}
