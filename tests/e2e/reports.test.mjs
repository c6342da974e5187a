// The reports page with the figures of sessions this test ran: one the customer shared
// with the microphone, one without, one declined, one never opened. The page's tiles,
// its SVG charts and its CSV must say exactly that — in English and in German.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ADMIN, assertGerman, startWithTechnician, newContext, inboundVideo, waitFor, signIn } from './appliance.mjs';

let appliance;
let browser;
let technician;

before(async () => {
  ({ appliance, browser, technician } = await startWithTechnician(ADMIN));
});

after(async () => {
  await browser?.close();
  await appliance?.stop();
});

async function newSession() {
  const { page } = technician;
  if (await page.isVisible('#back')) await page.click('#back');
  await page.waitForSelector('#dashboard:not([hidden])');
  await page.click('#new-session');
  await page.waitForSelector('#session:not([hidden])');
  await waitFor(async () => (await page.getAttribute('#session-status', 'data-state')) === 'waiting', { what: 'the session waiting' });
  return (await page.textContent('#invite-link')).trim();
}

// The customer answers; a shared session runs until frames arrive, then the customer ends it.
async function customerAnswers(link, { share, microphone = false }) {
  const context = await newContext(browser);
  const page = await context.newPage();
  await page.goto(link);
  await page.waitForSelector('#consent:not([hidden])');
  if (!share) {
    await page.click('#decline');
    await page.waitForSelector('#declined:not([hidden])');
  } else {
    if (microphone) await page.check('#share-mic');
    await page.click('#share');
    await waitFor(async () => (await inboundVideo(technician.page))?.framesDecoded > 0, { what: 'decoded frames' });
    await page.click('#end');
    await page.click('#end-yes');
    await page.waitForSelector('#ended:not([hidden])');
  }
  await context.close();
}

const tile = (page, name) => page.textContent(`#reports-totals [data-figure=${name}] dd`);

test('the reports page shows the figures of the sessions that were run, as charts and as CSV', async () => {
  await customerAnswers(await newSession(), { share: true, microphone: true });
  await customerAnswers(await newSession(), { share: true });
  await customerAnswers(await newSession(), { share: false });
  await newSession();

  const { page } = technician;
  await page.click('#back');
  await page.click('[data-nav=reports]');
  await page.waitForSelector('#reports-totals [data-figure=sessions]');
  const report = await page.evaluate(async () => (await fetch('/api/reports')).json());
  assert.equal(report.totals.sessions, 4);

  assert.equal(await tile(page, 'sessions'), '4');
  assert.equal(await tile(page, 'declined'), '33.3%');
  assert.equal(await tile(page, 'microphone'), '50%');
  assert.equal(await tile(page, 'recordings'), '0');
  const asText = (secs) => (secs < 60 ? `${secs} s` : `${Math.floor(secs / 60)} min ${secs % 60} s`);
  assert.equal(await tile(page, 'median'), asText(report.totals.median_duration_secs));
  assert.equal(await tile(page, 'p90'), asText(report.totals.p90_duration_secs));
  assert.match(await page.textContent('#reports-scope'), /All sessions of the account/);

  // The period chart: thirty days, today's bar holds the four sessions, one of them declined.
  const bars = await page.$$eval('#reports-chart rect.bar:not(.declined)', (rects) => rects.map((r) => Number(r.dataset.sessions)));
  assert.equal(bars.length, 30);
  assert.equal(bars.at(-1), 4);
  assert.equal(bars.reduce((a, b) => a + b, 0), 4);
  assert.equal(await page.locator('#reports-chart rect.declined').count(), 1);
  const technicians = await page.$$eval('#reports-technician-chart rect.bar', (rects) => rects.map((r) => [r.dataset.name, r.dataset.sessions]));
  assert.deepEqual(technicians, [[ADMIN.name, '4']]);
  const row = await page.$$eval('#reports-technicians tr td', (tds) => tds.map((td) => td.textContent));
  assert.deepEqual([row[0], row[1], row[4], row[5], row[6]], [ADMIN.name, '4', '33.3%', '50%', '0']);
  assert.equal(await page.isVisible('#reports-groups-card'), true);

  // By week the same sessions fall into one bar.
  await page.selectOption('#reports-bucket', 'week');
  await page.click('#reports-form button[type=submit]');
  await waitFor(async () => (await page.textContent('#reports-chart-title')) === 'Sessions per week', { what: 'weekly chart' });
  const weekly = await page.$$eval('#reports-chart rect.bar:not(.declined)', (rects) => rects.map((r) => Number(r.dataset.sessions)));
  assert.equal(weekly.filter((n) => n > 0).length, 1);
  assert.equal(weekly.reduce((a, b) => a + b, 0), 4);

  // The CSV behind the link has the same figures.
  const href = await page.getAttribute('#reports-csv', 'href');
  assert.match(href, /bucket=week/);
  const csv = await (await page.request.get(new URL(href, appliance.url).href)).text();
  const totals = csv.split('\n')[1];
  assert.ok(totals.startsWith('total,account,,4,3,1,2,1,0,'), totals);
  assert.ok(totals.endsWith(',0.3333,0.5000'), totals);

  // A span that ends before it starts is refused on the page, and the figures stay.
  await page.fill('#reports-since', '2030-01-02');
  await page.fill('#reports-until', '2029-12-01');
  await page.click('#reports-form button[type=submit]');
  await waitFor(async () => (await page.textContent('#reports-error')) !== '', { what: 'the refusal' });
  assert.equal(await tile(page, 'sessions'), '4');
});

test('the reports page in German', async () => {
  const { context, page } = await signIn(browser, appliance, { locale: 'de-DE' });
  await page.click('[data-nav=reports]');
  await page.waitForSelector('#reports-totals [data-figure=sessions]');
  assert.equal(await page.textContent('#reports h2'), 'Berichte');
  assert.equal(await page.textContent('#reports-totals [data-figure=declined] dt'), 'Kamera abgelehnt');
  assert.match(await tile(page, 'declined'), /^33,3\s%$/);
  assert.match(await tile(page, 'median'), /^(\d+ Min\. )?\d+ s$/);
  assert.equal(await page.textContent('#reports-chart-title'), 'Sitzungen pro Tag');
  await assertGerman(page, 'reports page');
  await context.close();
});
