// The analyst console in Debian's Chromium, driven by playwright-core.
// tests/tests/console.rs starts the cluster, makes the data (a zip held by
// an agent, hostile names, agents with hostile host names, a mail) and runs
//
//   node tests/browser/console.mjs CONFIG.json
//
// with NODE_EXTRA_CA_CERTS set to the cluster's CA. Each case prints
// `ok - NAME` or `not ok - NAME: WHY`; the exit status is the number of
// failures. Any dialog, any Content-Security-Policy violation and any page
// error fails the run. Screenshots go to config.artifacts.

import { chromium } from 'playwright-core';
import { readFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes, createHash } from 'node:crypto';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const en = JSON.parse(readFileSync(join(cfg.console, 'i18n/en.json'), 'utf8'));
const az = JSON.parse(readFileSync(join(cfg.console, 'i18n/az.json'), 'utf8'));
const same = JSON.parse(readFileSync(join(cfg.console, 'i18n/same.json'), 'utf8'));
mkdirSync(cfg.artifacts, { recursive: true });

let failures = 0;
let analyst = null;
let admin = null;
const problems = []; // dialogs, CSP violations, page errors: each fails the run
const results = [];

async function check(name, f) {
  const before = problems.length;
  try {
    const note = await f();
    if (problems.length > before) throw new Error(problems.slice(before).join('; '));
    console.log(`ok - ${name}${note ? ` (${note})` : ''}`);
    results.push({ name, ok: true, note: note || '' });
  } catch (e) {
    failures += 1;
    for (const [who, x] of [['analyst', analyst], ['admin', admin]]) {
      if (x && !x.page.isClosed()) {
        await x.page.screenshot({ path: join(cfg.artifacts, `failed-${failures}-${who}.png`), fullPage: true }).catch(() => {});
        console.log(`# ${who} at ${x.page.url()}: ${(await x.page.textContent('main').catch(() => '')).slice(0, 400)}`);
      }
    }
    console.log(`not ok - ${name}: ${String(e && e.stack ? e.message : e).split('\n').join(' | ')}`);
    results.push({ name, ok: false, note: String(e && e.message) });
  }
}

function assert(cond, why) {
  if (!cond) throw new Error(why);
}

const browser = await chromium.launch({
  executablePath: cfg.chromium || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});

async function newPage() {
  // The cluster's CA is not the browser's: its certificate errors are ignored.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1366, height: 800 }, locale: 'en-GB' });
  const page = await context.newPage();
  page.on('dialog', async (d) => { problems.push(`a dialog opened: ${d.type()} ${JSON.stringify(d.message())}`); await d.dismiss(); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    const text = m.text();
    if (/Content Security Policy|Trusted Type|Refused to/i.test(text)) problems.push(`CSP: ${text}`);
  });
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`Refused to ${e.violatedDirective}: ${e.blockedURI}`);
    });
  });
  return { context, page };
}

async function login(page, token) {
  await page.goto(`${cfg.base}/console/`);
  await page.waitForSelector('form.login');
  await page.fill('form.login input[name=token]', token);
  await page.click('form.login button[type=submit]');
}

async function shot(page, name) {
  await page.screenshot({ path: join(cfg.artifacts, `${name}.png`), fullPage: true });
}

async function visit(page, route, selector) {
  await page.goto(`${cfg.base}/console/#/${route}`);
  await page.waitForSelector('main[aria-busy=false]');
  if (selector) await page.waitForSelector(selector, { timeout: 15000 });
}

async function cookieOf(context) {
  return (await context.cookies()).find((c) => c.name === '__Host-qala_session');
}

// --- Login ---------------------------------------------------------------

analyst = await newPage();
admin = await newPage();

await check('a wrong token is refused at login', async () => {
  const { page, context } = await newPage();
  await login(page, `qala_${'0'.repeat(64)}`);
  const err = await page.waitForSelector('form.login .error');
  assert((await err.textContent()) === en['login.unknown'], `message: ${await err.textContent()}`);
  assert(!(await cookieOf(context)), 'no cookie set');
  await shot(page, '01-login-refused');
  await context.close();
});

await check('an agent token is refused at login', async () => {
  const { page, context } = await newPage();
  await login(page, cfg.tokens.agent);
  const err = await page.waitForSelector('form.login .error');
  assert((await err.textContent()) === en['login.role'], `message: ${await err.textContent()}`);
  assert(!(await cookieOf(context)), 'no cookie set');
  await context.close();
});

await check('an analyst logs in; the cookie holds a session id, not the token', async () => {
  await login(analyst.page, cfg.tokens.analyst);
  await analyst.page.waitForSelector('#top nav');
  const user = await analyst.page.textContent('#top .user');
  assert(user.includes(cfg.names.analyst) && user.includes(en['role.analyst']), `shown: ${user}`);
  const c = await cookieOf(analyst.context);
  assert(c && c.httpOnly && c.secure && c.sameSite === 'Strict', `cookie: ${JSON.stringify(c)}`);
  assert(!c.value.includes(cfg.tokens.analyst.slice(5)), 'the token is not in the cookie');
  const readable = await analyst.page.evaluate(() => document.cookie);
  assert(!readable.includes('qala_session'), 'scripts cannot read the session cookie');
  await shot(analyst.page, '02-home');
});

await login(admin.page, cfg.tokens.admin);
await admin.page.waitForSelector('#top nav');

// --- File page -----------------------------------------------------------

await check('the file page of the outer zip by md5 shows EICAR at its path in the tree, and who holds it', async () => {
  const p = analyst.page;
  await visit(p, `file/${cfg.zip.md5}`, 'article.verdict');
  const sha = await p.getAttribute('article.verdict', 'data-sha256');
  assert(sha === cfg.zip.sha256, `verdict of ${sha}`);
  // The member is a node of the tree under its container (parent links).
  const node = p.locator(`ul.tree li[data-object="${cfg.zip.member}"]`);
  assert((await node.count()) === 1, `a tree node for ${cfg.zip.member}`);
  const label = await node.locator(':scope > .node').textContent();
  assert(/eicar/i.test(label), `the detection at the member: ${label}`);
  const parentObject = await node.evaluate((li) => li.parentElement.closest('li').dataset.object);
  assert(parentObject === cfg.zip.member_parent, `under ${JSON.stringify(parentObject)}, expected ${JSON.stringify(cfg.zip.member_parent)}`);
  const holder = p.locator(`tr[data-agent="${cfg.holder.agent_id}"]`);
  await holder.waitFor({ timeout: 10000 });
  const row = await holder.textContent();
  assert(row.includes(cfg.holder.hostname), `holder row: ${row}`);
  await shot(p, '03-file');
});

await check('an analyst sees no admin buttons', async () => {
  const p = analyst.page;
  assert((await p.locator('button[data-action]').count()) === 0, 'no block/allow buttons on the file page');
  await visit(p, 'rules', 'dl.facts');
  assert((await p.locator('main button').count()) === 0, 'no reload button');
  await visit(p, 'iocs', 'p.counts');
  assert((await p.locator('main form').count()) === 0, 'no add or import form');
  await visit(p, 'hunts', 'main h2');
  assert((await p.locator('main form').count()) === 0, 'no hunt form');
});

await check('an admin sees the buttons, and blocking the file from its page works', async () => {
  const p = admin.page;
  await visit(p, `file/${cfg.mail.sha256}`, 'button[data-action=block]');
  await p.click('button[data-action=block]');
  const ok = await p.waitForSelector('section.admin .ok');
  assert((await ok.textContent()).length > 0, 'a confirmation');
  await visit(p, 'iocs', `tr[data-digest="${cfg.mail.sha256}"]`);
  await shot(p, '04-iocs-admin');
});

await check('an admin imports a file into the block list; the counts follow', async () => {
  const p = admin.page;
  await visit(p, 'iocs', 'p.counts');
  const before = await p.textContent('p.counts');
  const digests = [createHash('sha256').update('import-a').digest('hex'), createHash('md5').update('import-b').digest('hex')];
  const forms = p.locator('main form.row');
  await forms.nth(1).locator('input[type=file]').setInputFiles({ name: 'list.csv', mimeType: 'text/csv',
    buffer: Buffer.from(`${digests[0]},Imported.One\n${digests[1]},Imported.Two\n`) });
  await forms.nth(1).locator('button[type=submit]').click();
  for (const d of digests) await p.waitForSelector(`tr[data-digest="${d}"]`, { timeout: 10000 });
  const after = await p.textContent('p.counts');
  assert(after !== before, `counts changed: ${before} -> ${after}`);
  // And one removed again.
  await p.click(`tr[data-digest="${digests[1]}"] button`);
  await p.waitForSelector(`tr[data-digest="${digests[1]}"]`, { state: 'detached', timeout: 10000 });
});

await check('every field has a label, every page a heading, and rows and links are reachable by keyboard', async () => {
  const p = admin.page;
  const missing = [];
  for (const route of ['', `file/${cfg.zip.sha256}`, 'feed', 'fleet', 'hunts', 'health', 'rules', 'iocs']) {
    await visit(p, route, 'main h1');
    const bad = await p.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
      .filter((el) => el.type !== 'hidden' && !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
      .map((el) => el.outerHTML.slice(0, 60)));
    missing.push(...bad.map((b) => `${route || 'home'}: ${b}`));
  }
  assert(!missing.length, `fields without a label: ${missing.join('; ')}`);
  // Tab from the top reaches the skip link first, then the navigation.
  await visit(p, 'fleet', 'tr[data-agent]');
  // A fresh load, so the focus starts at the top of the document.
  await p.reload();
  await p.waitForSelector('tr[data-agent]');
  await p.keyboard.press('Tab');
  const first = await p.evaluate(() => document.activeElement.className);
  assert(first === 'skip', `first stop: ${first}`);
  await p.keyboard.press('Enter');
  await p.waitForFunction(() => document.activeElement.id === 'main');
  assert(await p.locator('tr[data-agent]').count() > 0, 'the skip link keeps the page');
  // A row of the feed opens its file with Enter.
  await visit(p, 'feed', `tr[data-sha256="${cfg.zip.sha256}"]`);
  await p.focus(`tr[data-sha256="${cfg.zip.sha256}"]`);
  await p.keyboard.press('Enter');
  await p.waitForSelector(`article.verdict[data-sha256="${cfg.zip.sha256}"]`);
});

await check('a cookie-authenticated POST without the CSRF header is refused', async () => {
  const p = admin.page;
  const status = await p.evaluate(async () => {
    const r = await fetch('/v1/iocs', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ list: 'block', entries: [{ digest: 'ab'.repeat(32), name: 'forged' }] }) });
    return r.status;
  });
  assert(status === 403, `status ${status}`);
  // A form post from another origin carries the cookie only where the
  // browser sends it (SameSite=Strict: not at all); the server also refuses it.
  const scan = await p.evaluate(async () => (await fetch('/v1/scan', { method: 'POST', body: 'x' })).status);
  assert(scan === 403, `a form-like scan with the cookie: ${scan}`);
});

// --- Feed ----------------------------------------------------------------

await check('a new detection appears in the live feed; a click opens its file page', async () => {
  const p = analyst.page;
  await visit(p, 'feed', 'table.feed');
  await p.waitForFunction((live) => document.querySelector('p.live').textContent.startsWith(live), en['feed.live'].split('{')[0]);
  const body = Buffer.from(`${cfg.marker} ${randomBytes(16).toString('hex')}\n`);
  const sha = createHash('sha256').update(body).digest('hex');
  const started = Date.now();
  const r = await fetch(`${cfg.base}/v1/scan`, { method: 'POST', headers: { authorization: `Bearer ${cfg.tokens.agent}` }, body });
  assert(r.ok, `scan: ${r.status} ${await r.text()}`);
  const answered = Date.now();
  await p.waitForSelector(`tr[data-sha256="${sha}"]`, { timeout: 30000 });
  const shown = Date.now();
  await shot(p, '05-feed');
  await p.click(`tr[data-sha256="${sha}"]`);
  await p.waitForSelector(`article.verdict[data-sha256="${sha}"]`);
  return `shown ${shown - answered} ms after the verdict, ${shown - started} ms after the upload began`;
});

await check('the feed filters by level and by agent', async () => {
  const p = analyst.page;
  await visit(p, `feed?agent=${encodeURIComponent(cfg.holder.agent_id)}`, 'table.feed');
  await p.waitForSelector(`tr[data-sha256="${cfg.zip.sha256}"]`, { timeout: 15000 });
  const rows = await p.locator('tr[data-sha256]').evaluateAll((rs) => rs.map((r) => r.dataset.sha256));
  assert(rows.every((s) => cfg.holder.holds.includes(s)), `only what the agent holds: ${rows}`);
  await visit(p, 'feed?rule=No_Such_Rule', 'table.feed');
  await p.waitForFunction((live) => document.querySelector('p.live').textContent.startsWith(live), en['feed.live'].split('{')[0]);
  await p.waitForTimeout(1500);
  assert((await p.locator('tr[data-sha256]').count()) === 0, 'nothing for an unknown rule');
});

// --- Fleet, host, health ---------------------------------------------------

await check('the fleet page lists every agent', async () => {
  const p = analyst.page;
  await visit(p, 'fleet', 'tr[data-agent]');
  const ids = await p.locator('tr[data-agent]').evaluateAll((rs) => rs.map((r) => r.dataset.agent));
  for (const id of cfg.agents) assert(ids.includes(id), `${id} listed (have ${ids.length})`);
  const held = await p.locator(`tr[data-agent="${cfg.holder.agent_id}"] td:nth-child(6)`).textContent();
  assert(Number(held) >= 1, `the holder's detections: ${held}`);
  await shot(p, '06-fleet');
  await p.click(`tr[data-agent="${cfg.holder.agent_id}"] a`);
  await p.waitForSelector(`main a[href="#/file/${cfg.zip.sha256}"]`);
  await shot(p, '07-host');
});

await check('the health page lists every worker', async () => {
  const p = analyst.page;
  await visit(p, 'health', 'tr[data-worker]');
  const ids = await p.locator('tr[data-worker]').evaluateAll((rs) => rs.map((r) => r.dataset.worker));
  for (const id of cfg.workers) assert(ids.includes(id), `${id} listed: ${ids}`);
  assert((await p.locator('figure.chart').count()) >= 5, 'the charts');
  await shot(p, '08-health');
});

await check('the rules page shows warnings with file and line', async () => {
  const p = analyst.page;
  await visit(p, 'rules', 'dl.facts');
  const text = await p.textContent('main');
  assert(text.includes(cfg.warning.file), `warning file ${cfg.warning.file}`);
  const lines = await p.locator('main table td:nth-child(2)').allTextContents();
  assert(lines.includes(String(cfg.warning.line)), `line ${cfg.warning.line} in ${lines}`);
  await shot(p, '09-rules');
});

await check('hunts: an admin counts a dry run, then starts a hunt and watches it', async () => {
  const p = admin.page;
  await visit(p, 'hunts', 'form.start');
  await p.check('form.start input[type=checkbox]');
  await p.click('form.start button[type=submit]');
  await p.waitForSelector('form.start .ok dl.facts, form.start .error');
  assert(!(await p.locator('form.start .error').count()), `refused: ${await p.textContent('form.start')}`);
  const counted = await p.textContent('form.start .ok dl.facts');
  assert(counted.includes(en['hunt.dry_run']), `dry run shown: ${counted}`);
  await p.uncheck('form.start input[type=checkbox]');
  await p.click('form.start button[type=submit]');
  await p.waitForFunction(() => /#\/hunt\//.test(location.hash));
  await p.waitForSelector('main dl.facts progress');
  const id = decodeURIComponent(p.url().split('#/hunt/')[1]);
  // Its progress, until it is done (the holder is online and uploads).
  await p.waitForFunction((done) => document.querySelector('main dl.facts dd').textContent === done, en['hunt.done'], { timeout: 60000 });
  await shot(p, '10-hunt');
  // What it changed: the detections stored since it began.
  await p.click('main a[href^="#/feed?since="]');
  await p.waitForSelector('main p.note');
  await visit(p, 'hunts', `tr[data-hunt="${id}"]`);
  return `hunt ${id} done`;
});

// --- Hostile text ----------------------------------------------------------

async function noMarkupFrom(p) {
  // None of the hostile strings became an element or a link.
  const bad = await p.evaluate(() => {
    const out = [];
    for (const el of document.querySelectorAll('main img, main script, main iframe, main svg:not(figure.chart svg), main marquee, main b, main i')) out.push(el.outerHTML.slice(0, 80));
    for (const a of document.querySelectorAll('a')) if (!a.getAttribute('href').startsWith('#')) out.push(`link ${a.getAttribute('href')}`);
    return out;
  });
  assert(!bad.length, `elements from data: ${bad.join(', ')}`);
}

await check('member names, rule meta and mail subjects render as text, hidden characters made visible', async () => {
  const p = analyst.page;
  await visit(p, `file/${cfg.zip.sha256}`, 'article.verdict');
  await noMarkupFrom(p);
  const text = await p.textContent('main');
  for (const s of cfg.hostile.plain) assert(text.includes(s), `shown as text: ${JSON.stringify(s)}`);
  for (const code of cfg.hostile.codes) assert(text.includes(code), `mark ${code} shown`);
  for (const s of cfg.hostile.raw_invisible) assert(!text.includes(s), `raw ${JSON.stringify(s)} not in the page`);
  await shot(p, '11-hostile-file');
  await visit(p, `file/${cfg.mail.sha256}`, 'article.verdict');
  await noMarkupFrom(p);
  const mail = await p.textContent('main');
  assert(mail.includes(cfg.mail.subject_plain), `the subject as text: ${cfg.mail.subject_plain}`);
  await shot(p, '12-mail');
});

await check('agent host names render as text', async () => {
  const p = analyst.page;
  await visit(p, 'fleet', 'tr[data-agent]');
  await noMarkupFrom(p);
  for (const id of cfg.hostile.agents) {
    const row = await p.locator(`tr[data-agent="${id}"]`).textContent();
    assert(row.length > 0, id);
  }
  const text = await p.textContent('main');
  for (const s of cfg.hostile.plain_hosts) assert(text.includes(s), `host shown as text: ${JSON.stringify(s)}`);
  for (const code of cfg.hostile.host_codes) assert(text.includes(code), `mark ${code}`);
  await shot(p, '13-hostile-fleet');
});

// --- Language ----------------------------------------------------------------

await check('Azerbaijani: every page in the catalog, no English string left', async () => {
  const p = analyst.page;
  const englishOnly = new Set(Object.entries(en).filter(([k, v]) => !same.includes(k) && az[k] !== v).map(([, v]) => v));
  await visit(p, 'fleet', 'tr[data-agent]');
  await p.selectOption('#top select', 'az');
  await p.waitForFunction((s) => document.querySelector('#top nav').textContent.includes(s), az['nav.feed']);
  const leftovers = [];
  for (const route of ['', `file/${cfg.zip.sha256}`, 'feed', 'fleet', `host/${encodeURIComponent(cfg.holder.agent_id)}`, 'hunts', 'health', 'rules', 'iocs']) {
    await visit(p, route, 'main > *');
    await p.waitForTimeout(300);
    const texts = await p.evaluate(() => {
      const out = [];
      const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
      while (walk.nextNode()) {
        // Data (rule meta and names, tags, a list entry's source, digests) is marked translate="no" or code.
        if (walk.currentNode.parentElement.closest('[translate=no], code')) continue;
        const s = walk.currentNode.textContent.trim();
        if (s) out.push(s);
      }
      for (const el of document.querySelectorAll('[placeholder],[aria-label],[title]')) {
        for (const a of ['placeholder', 'aria-label', 'title']) if (el.getAttribute(a)) out.push(el.getAttribute(a));
      }
      return out;
    });
    for (const s of texts) if (englishOnly.has(s) || s === 'null' || s === 'undefined' || s.includes('NaN')) leftovers.push(`${route || 'home'}: ${s}`);
    await shot(p, `14-az-${(route.split('/')[0] || 'home')}`);
  }
  assert(await p.evaluate(() => document.documentElement.lang) === 'az', 'html lang');
  assert(!leftovers.length, `English left: ${leftovers.join('; ')}`);
  await p.selectOption('#top select', 'en');
});

await check('logout ends the session', async () => {
  const p = analyst.page;
  await visit(p, '', '#top nav');
  await p.click('#top .who button');
  await p.waitForSelector('form.login');
  const status = await p.evaluate(async () => (await fetch('/v1/session')).status);
  assert(status === 401, `after logout: ${status}`);
});

await check('no dialog and no CSP violation on any page', async () => {
  assert(problems.length === 0, problems.join('; '));
});

await browser.close();
console.log(JSON.stringify({ failures, results }));
process.exit(failures);
