// The console in headless Chromium against a running `gantry dev`
// (console/e2e_test.go starts it and sets the environment). Each step
// asserts what a user would see; nothing reloads the page after the first
// load, so whatever changes on screen came from the live updates.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const base = process.env.GANTRY_URL;
const shots = process.env.GANTRY_SCREENSHOTS;
const example = JSON.parse(process.env.GANTRY_EXAMPLE);
const origin = new URL(base).origin;
mkdirSync(shots, { recursive: true });

const t0 = Date.now();
const step = (s) => console.log(`${((Date.now() - t0) / 1000).toFixed(1)}s ${s}`);

const browser = await chromium.launch({
  executablePath: process.env.GANTRY_CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const page = await browser.newPage({ viewport: { width: 1366, height: 900 } });
page.setDefaultTimeout(20_000);

// Every request the page makes must go to Gantry itself.
const foreign = [];
page.on('request', (r) => {
  const u = r.url();
  if (!u.startsWith('data:') && new URL(u).origin !== origin) foreign.push(u);
});
// Script errors and Content-Security-Policy violations fail the test;
// the browser's own "Failed to load resource" lines for the 400 and 401
// that the test provokes on purpose, and the 404 of the permissions API
// before identity lands, do not.
const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
  if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of (400|401|404)/.test(m.text())) problems.push(`console: ${m.text()}`);
});
await page.addInitScript(() => {
  document.addEventListener('securitypolicyviolation', (e) => console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));
  // Every state the endpoint page's heading shows, in order.
  window.__states = [];
  new MutationObserver(() => {
    const s = document.querySelector('h1 [data-testid=state]')?.textContent;
    if (s && s !== window.__states.at(-1)) window.__states.push(s);
  }).observe(document, { subtree: true, childList: true, characterData: true });
});

let loads = 0;
page.on('load', () => (loads += 1));

try {
  // A fresh load starts at the top: the first tab stop is the skip link,
  // which moves focus to the page's content.
  await page.goto(base + '/#/sign-in');
  await page.getByRole('heading', { name: 'Sign in to Gantry' }).waitFor();
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Skip to content');
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'main');

  // Sign in: gantry dev requires a token and writes the admin's to its
  // data dir (console/e2e_test.go names it).
  const tokenFile = process.env.GANTRY_TOKEN_FILE;
  assert.ok(existsSync(tokenFile), `no admin token at GANTRY_TOKEN_FILE (${tokenFile})`);
  step('sign in');
  await page.getByLabel('Access token').fill('not-a-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: /UNAUTHENTICATED|token/i }).waitFor();
  await page.screenshot({ path: join(shots, 'sign-in.png') });
  await page.getByLabel('Access token').fill(readFileSync(tokenFile, 'utf8').trim());
  await page.getByRole('button', { name: 'Sign in' }).click();
  assert.ok(!page.url().includes(readFileSync(tokenFile, 'utf8').trim()), 'the token must never be in the URL');
  await page.getByRole('heading', { name: 'Serving endpoints' }).waitFor();
  await page.getByText('No serving endpoints yet').waitFor();


  step('upload a model through the Models page');
  await page.getByRole('link', { name: 'Models' }).click();
  await page.getByRole('heading', { name: 'Models' }).waitFor();
  await page.getByLabel('Model name').fill('binary');
  await page.getByLabel('MLflow model directory as .tar.gz').setInputFiles(process.env.GANTRY_MODEL_TGZ);
  await page.getByRole('button', { name: 'Upload' }).click();
  await page.getByText('Uploaded binary version 1.').waitFor();
  const modelRow = page.getByRole('row').filter({ hasText: 'binary' });
  await modelRow.getByText('xgboost').waitFor();
  await modelRow.getByText('mean_radius: double', { exact: false }).first().waitFor({ state: 'attached' });
  await page.screenshot({ path: join(shots, 'models.png'), fullPage: true });

  step('create an endpoint with two served entities through the form');
  await page.getByRole('link', { name: 'Endpoints' }).click();
  await page.getByRole('link', { name: 'Create serving endpoint' }).click();
  await page.getByRole('heading', { name: 'Create serving endpoint' }).waitFor();
  await page.getByLabel('Name', { exact: true }).fill('fraud');
  await page.getByRole('button', { name: 'Add served entity' }).click();
  const second = page.getByRole('group', { name: 'Served entity 2' });
  await second.getByLabel('Served entity name').fill('challenger');
  await second.getByLabel('Served entity name').blur();
  await page.getByLabel('binary-1 (%)').fill('50');
  await page.getByLabel('challenger (%)').fill('50');
  await page.getByText('Sum: 100 %').waitFor();
  await page.getByLabel('Log every request and response to ClickHouse').check();
  await page.getByLabel('Catalog').fill('ml');
  await page.getByLabel('Schema').fill('logs');
  // Every control of the form has a label.
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll('main input, main select, main textarea')].filter((el) => !el.labels?.length && !el.getAttribute('aria-label')).map((el) => el.outerHTML),
  );
  assert.deepEqual(unlabelled, [], 'controls without a label');
  await page.getByText('JSON', { exact: true }).click();
  const sent = JSON.parse(await page.getByTestId('config-json').textContent());
  assert.deepEqual(sent.config.traffic_config.routes, [
    { served_model_name: 'binary-1', traffic_percentage: 50 },
    { served_model_name: 'challenger', traffic_percentage: 50 },
  ]);
  await page.screenshot({ path: join(shots, 'create.png'), fullPage: true });
  await page.getByRole('button', { name: 'Create' }).click();

  step('see it become READY without reloading');
  await page.getByRole('heading', { name: /^fraud/ }).waitFor();
  const state = page.getByRole('heading', { name: /^fraud/ }).getByTestId('state');
  await page.waitForFunction(() => document.querySelector('h1 [data-testid=state]')?.textContent === 'READY', null, { timeout: 60_000 });
  assert.equal(await state.textContent(), 'READY');
  const states = await page.evaluate(() => window.__states);
  step(`states shown: ${states.join(' → ')}`);
  assert.notEqual(states[0], 'READY', 'the page showed READY from the start: the live update went untested');
  for (const e of ['binary-1', 'challenger']) {
    await page.locator(`tr[data-entity="${e}"]`).getByText('READY', { exact: true }).waitFor();
  }

  step('change the split: 90 % is refused by the server, 70/30 applies');
  await page.getByLabel('binary-1 (%)').fill('60');
  await page.getByLabel('challenger (%)').fill('30');
  await page.getByTestId('split-sum').getByText('Sum: 90 %', { exact: false }).waitFor();
  assert.equal(await page.getByLabel('binary-1 (%)').getAttribute('aria-invalid'), 'true');
  await page.getByRole('button', { name: 'Apply split' }).click();
  const refusal = page.getByTestId('split-result').getByRole('alert');
  await refusal.waitFor();
  const text = await refusal.textContent();
  assert.match(text, /^400 INVALID_PARAMETER_VALUE/, text);
  assert.match(text, /sum to 90/, text);
  await page.screenshot({ path: join(shots, 'split-400.png'), fullPage: true });
  await page.getByLabel('binary-1 (%)').fill('70');
  await page.getByRole('button', { name: 'Apply split' }).click();
  await page.getByTestId('split-result').getByText('Split applied.').waitFor();
  await page.locator('tr[data-entity="binary-1"]').getByText('70 %').waitFor();
  await page.locator('tr[data-entity="challenger"]').getByText('30 %').waitFor();

  step('charts: read before any traffic');
  const chart = page.getByTestId('chart-requests');
  await page.getByText(/^Read \d/).waitFor({ timeout: 30_000 });
  const before = Number(await chart.getAttribute('data-points'));

  step('try it: the example comes from the signature; the prediction is Python\'s');
  const body = page.getByLabel('Request body (MLflow scoring protocol)');
  await page.waitForFunction(() => document.querySelector('textarea')?.value.includes('mean_radius'));
  const prefilled = JSON.parse(await body.inputValue());
  assert.deepEqual(prefilled.dataframe_split.columns, example.columns);
  await body.fill(JSON.stringify({ dataframe_split: { columns: example.columns, data: [example.row] } }));
  await page.getByRole('button', { name: 'Send request' }).click();
  const answer = JSON.parse(await page.getByTestId('prediction').textContent());
  assert.equal(answer.predictions.length, 1);
  assert.ok(Math.abs(answer.predictions[0] - example.prediction) <= 1e-6, `prediction ${answer.predictions[0]}, want ${example.prediction}`);
  await page.getByTestId('try-result').getByText(/^200 in \d+ ms from (binary-1|challenger)/).waitFor();

  step('traffic: 30 more requests, then the chart gains points');
  await page.getByLabel('Send to').selectOption({ label: 'Only challenger' });
  for (let i = 0; i < 3; i++) {
    await page.getByRole('button', { name: 'Send request' }).click();
    await page.getByTestId('try-result').getByText(/from challenger/).waitFor();
  }
  await page.evaluate(async (row) => {
    const token = sessionStorage.getItem('gantry.token');
    const headers = { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) };
    await Promise.all(Array.from({ length: 26 }, () => fetch('/serving-endpoints/fraud/invocations', { method: 'POST', headers, body: JSON.stringify({ instances: [row] }) })));
  }, example.row);
  let after = before;
  for (const deadline = Date.now() + 45_000; after <= before && Date.now() < deadline; ) {
    await page.getByRole('button', { name: 'Refresh charts' }).click();
    await page.waitForTimeout(1000);
    after = Number(await chart.getAttribute('data-points'));
  }
  assert.ok(after > before, `chart points ${before} → ${after}: no new points after traffic`);
  assert.equal(await chart.locator('canvas').count(), 1, 'uPlot drew no canvas');
  step('the A/B table compares both entities');
  const abSection = page.locator('section').filter({ has: page.getByRole('heading', { name: 'A/B comparison' }) });
  for (const e of ['binary-1', 'challenger']) await abSection.getByRole('rowheader', { name: e }).waitFor();
  await page.getByRole('heading', { name: 'Worker logs' }).scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(shots, 'endpoint.png'), fullPage: true });

  step('the list shows the endpoint live, with filter and sort');
  await page.getByRole('link', { name: 'Endpoints' }).click();
  const row = page.locator('tr[data-endpoint="fraud"]');
  await row.getByText('READY').waitFor();
  await row.getByText(/^\d+ \/ \d+/).waitFor();
  await page.getByLabel('Filter').fill('nothing-matches');
  assert.equal(await page.locator('tr[data-endpoint]').count(), 0);
  await page.getByLabel('Filter').fill('challenger');
  await row.waitFor();
  await page.getByRole('button', { name: 'Name' }).click();
  assert.equal(await page.getByRole('columnheader', { name: 'Name' }).getAttribute('aria-sort'), 'descending');
  await page.screenshot({ path: join(shots, 'endpoints.png') });

  await permissionsAndAUser();

  assert.equal(loads, 1, `the page loaded ${loads} times; updates must come without reloads`);
  assert.deepEqual(foreign, [], 'requests to hosts other than Gantry');
  assert.deepEqual(problems, [], 'errors in the page');
  step('ok');
} catch (e) {
  await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
  console.error(`FAIL: ${e.stack ?? e}`);
  if (problems.length) console.error(problems.join('\n'));
  process.exitCode = 1;
} finally {
  await browser.close();
}

// api calls Gantry from node as the admin, for what the console does not
// do itself (SCIM users, their first token).
async function api(method, path, body, token = readFileSync(process.env.GANTRY_TOKEN_FILE, 'utf8').trim()) {
  const resp = await fetch(base + path, { method, headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body: body && JSON.stringify(body) });
  const text = await resp.text();
  return { status: resp.status, data: text ? JSON.parse(text) : null };
}

async function permissionsAndAUser() {
  step('permissions: the server\'s 400 for an unknown user; grant CAN_QUERY and CAN_VIEW to users made through SCIM, remove one');
  await page.locator('tr[data-endpoint="fraud"]').getByRole('link', { name: 'fraud' }).click();
  const perms = page.locator('section').filter({ has: page.getByRole('heading', { name: 'Permissions' }) });
  await perms.locator('tr[data-principal="admins"]').getByText('CAN_MANAGE (inherited)').waitFor();
  await perms.getByLabel('Principal name').fill('nobody@corp.com');
  await perms.getByLabel('Permission level').selectOption('CAN_QUERY');
  await perms.getByRole('button', { name: 'Grant' }).click();
  const refused = await page.getByTestId('perms-result').getByRole('alert').textContent();
  assert.match(refused, /^400 INVALID_PARAMETER_VALUE.*nobody@corp\.com.*does not exist/, refused);

  for (const u of ['ada@corp.com', 'bob@corp.com']) {
    const r = await api('POST', '/api/2.0/preview/scim/v2/Users', { userName: u });
    assert.equal(r.status, 201, JSON.stringify(r.data));
  }
  // Ada's first token, before any grant: her invocation is refused.
  const t = await api('POST', '/api/2.0/token-management/on-behalf-of/tokens', { user_name: 'ada@corp.com', comment: 'console test' });
  assert.equal(t.status, 200, JSON.stringify(t.data));
  const ada = t.data.token_value;
  const invoke = () => fetch(base + '/serving-endpoints/fraud/invocations', { method: 'POST', headers: { Authorization: `Bearer ${ada}`, 'Content-Type': 'application/json' }, body: JSON.stringify({ instances: [example.row] }) });
  // The activator learns of a new token with its next access snapshot
  // (401 until then).
  let before = 401;
  for (const deadline = Date.now() + 10_000; before === 401 && Date.now() < deadline; await new Promise((r) => setTimeout(r, 200))) before = (await invoke()).status;
  // Without a grant the endpoint answers her as a missing one.
  assert.equal(before, 404, 'ada may reach the endpoint before any grant');

  await perms.getByLabel('Principal name').fill('ada@corp.com');
  await perms.getByLabel('Permission level').selectOption('CAN_QUERY');
  await perms.getByRole('button', { name: 'Grant' }).click();
  await page.getByTestId('perms-result').getByText('Granted CAN_QUERY to ada@corp.com.').waitFor();
  await perms.locator('tr[data-principal="ada@corp.com"]').getByText('CAN_QUERY').waitFor();
  await perms.getByLabel('Principal name').fill('bob@corp.com');
  await perms.getByLabel('Permission level').selectOption('CAN_VIEW');
  await perms.getByRole('button', { name: 'Grant' }).click();
  await perms.locator('tr[data-principal="bob@corp.com"]').getByText('CAN_VIEW').waitFor();
  await page.screenshot({ path: join(shots, 'permissions.png'), fullPage: true });
  await perms.getByRole('button', { name: 'Remove bob@corp.com' }).click();
  await page.getByTestId('perms-result').getByText('Removed bob@corp.com.').waitFor();
  assert.equal(await perms.locator('tr[data-principal="bob@corp.com"]').count(), 0);
  const acl = (await api('GET', `/api/2.0/permissions/serving-endpoints/fraud`)).data.access_control_list;
  const levelOf = (u) => acl.find((a) => a.user_name === u)?.all_permissions.map((p) => p.permission_level);
  assert.deepEqual(levelOf('ada@corp.com'), ['CAN_QUERY'], JSON.stringify(acl));
  assert.equal(levelOf('bob@corp.com'), undefined, JSON.stringify(acl));

  // The grant reaches the activators with their next access snapshot.
  let st = 0;
  for (const deadline = Date.now() + 10_000; st !== 200 && Date.now() < deadline; await new Promise((r) => setTimeout(r, 200))) st = (await invoke()).status;
  assert.equal(st, 200, 'ada\'s token cannot invoke after the CAN_QUERY grant');

  step('a user (not an admin) follows the endpoint live: challenger scales to zero, her request wakes it, its cold-start phases appear, the first response last');
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 900 } });
  const user = await ctx.newPage();
  user.setDefaultTimeout(20_000);
  const userProblems = [];
  user.on('pageerror', (e) => userProblems.push(`page error: ${e.message}`));
  // The try-it example reads the model's signature, which ada may not
  // read (403/404): expected.
  user.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of (403|404)/.test(m.text())) userProblems.push(`console: ${m.text()}`);
  });
  const calls = [];
  user.on('request', (r) => calls.push(new URL(r.url()).pathname + new URL(r.url()).search));
  let userLoads = 0;
  user.on('load', () => (userLoads += 1));
  await user.addInitScript(() => {
    // Every replicas cell of challenger, in order.
    window.__replicas = [];
    new MutationObserver(() => {
      const s = document.querySelector('tr[data-entity="challenger"] [data-testid=replicas]')?.textContent;
      if (s && s !== window.__replicas.at(-1)) window.__replicas.push(s);
    }).observe(document, { subtree: true, childList: true, characterData: true });
  });
  await user.goto(base + '/#/sign-in');
  await user.getByLabel('Access token').fill(ada);
  await user.getByRole('button', { name: 'Sign in' }).click();
  await user.locator('tr[data-endpoint="fraud"]').getByRole('link', { name: 'fraud' }).click();
  await user.getByRole('heading', { name: /^fraud/ }).waitFor();
  await user.getByText('Your level: CAN_QUERY').waitFor();
  await user.getByText('Only managers of this endpoint see who else may use it.').waitFor();
  // No control that could only answer 403.
  for (const [role, name] of [['link', 'Edit config'], ['button', 'Delete'], ['button', 'Apply split'], ['button', 'Grant']]) {
    assert.equal(await user.getByRole(role, { name }).count(), 0, `a CAN_QUERY user sees ${name}`);
  }
  await user.getByText('binary-1 70 %, challenger 30 %').waitFor();
  const row = user.locator('tr[data-entity="challenger"]');
  await row.getByText('scaled to zero', { exact: true }).waitFor({ timeout: 60_000 });
  step(`challenger is at zero; replicas shown so far: ${JSON.stringify(await user.evaluate(() => window.__replicas))}`);
  await user.evaluate(() => (window.__replicas = [window.__replicas.at(-1)]));

  await user.getByLabel('Send to').selectOption({ label: 'Only challenger' });
  await user.getByLabel('Request body (MLflow scoring protocol)').fill(JSON.stringify({ dataframe_split: { columns: example.columns, data: [example.row] } }));
  await user.getByRole('button', { name: 'Send request' }).click();
  const answer = JSON.parse(await user.getByTestId('prediction').textContent());
  assert.ok(Math.abs(answer.predictions[0] - example.prediction) <= 1e-6, `ada's prediction ${answer.predictions[0]}`);
  // Her call was the replica's first request: its cold start's last
  // phase, which the driver learns from the worker's next /ping.
  const answered = row.locator('li[data-phase="first_response"]');
  await answered.waitFor();
  assert.equal(await answered.locator('.badge').textContent(), 'answered its first request');
  const phases = await answered.locator('.phases').textContent();
  assert.match(phases, /^schedule \d+ ms · process start \d+ ms · model load \d+ ms · first response \d+ ms$/, phases);
  await row.getByTestId('replicas').getByText(/^1 \/ 1/).waitFor();
  const seen = await user.evaluate(() => window.__replicas);
  step(`replicas shown: ${JSON.stringify(seen)}; phases: ${phases}`);
  assert.ok(seen.some((s) => /^0 \/ 1/.test(s)), `the page never showed challenger starting (0 / 1) before it was ready: ${JSON.stringify(seen)}`);
  await user.screenshot({ path: join(shots, 'endpoint-user.png'), fullPage: true });

  const blocking = calls.filter((c) => c.startsWith('/api/2.0/serving-endpoints/fraud?index='));
  assert.ok(blocking.length > 0, `no blocking query on the endpoint: ${calls.join(' ')}`);
  assert.ok(!calls.some((c) => c.startsWith('/api/2.0/gantry/routes')), 'a CAN_QUERY user asked for the route table');
  assert.equal(userLoads, 1, `ada's page loaded ${userLoads} times; updates must come without reloads`);
  assert.deepEqual(userProblems, [], 'errors in ada\'s page');
  await ctx.close();
}
