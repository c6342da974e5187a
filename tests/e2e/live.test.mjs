// The live camera path end to end: a technician and a customer in separate browser
// contexts of real Chromium with a fake camera, through the appliance's own relay.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import https from 'node:https';
import { ADMIN, startWithTechnician, newContext, inboundVideo, waitFor, metric, otherHosts } from './appliance.mjs';

let appliance;
let browser;
let technician; // { context, page }
const admin = ADMIN;

before(async () => {
  ({ appliance, browser, technician } = await startWithTechnician(admin));
  // A new appliance's history says it is empty rather than showing nothing.
  await technician.page.waitForSelector('#session-list .empty');
  assert.match(await technician.page.textContent('#session-list'), /No sessions yet/);
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
  const link = (await page.textContent('#invite-link')).trim();
  const pin = (await page.textContent('#invite-pin')).trim();
  assert.match(link, /\/c#[A-Za-z0-9_-]{43}$/);
  assert.match(pin, /^\d{6}$/);
  assert.match(await page.getAttribute('#invite-qr', 'src'), /^data:image\/svg\+xml;base64,/);
  await waitFor(async () => (await page.getAttribute('#session-status', 'data-state')) === 'waiting', { what: 'the session waiting' });
  return { link, pin };
}

async function openCustomer(link) {
  const context = await newContext(browser);
  const page = await context.newPage();
  await page.goto(link);
  await page.waitForSelector('#consent:not([hidden])');
  return { context, page };
}

const status = (page) => page.getAttribute('#session-status', 'data-state');

test('customer consents and the technician decodes live video through the relay', async () => {
  const { link } = await newSession();
  // Before anyone joins the stage says what will appear there; copying the link says so.
  assert.match(await technician.page.textContent('#stage-placeholder'), /camera appears here/);
  await technician.page.click('#copy-link');
  // The note comes once the clipboard has answered, which the click does not wait for.
  await technician.page.waitForFunction(() => document.querySelector('#copy-note').textContent !== '');
  assert.match(await technician.page.textContent('#copy-note'), /Link copied|copy it/);
  const customer = await openCustomer(link);
  assert.equal(await customer.page.textContent('#consent-title'), `${admin.name} from ${admin.org} would like to see your camera`);
  await waitFor(async () => (await status(technician.page)) === 'joined', { what: 'joined state' });
  // Nothing flows before consent, and a session waiting for its customer costs the relay
  // nothing: the technician's media connection opens once the customer's video flows.
  assert.equal(await technician.page.evaluate(() => window.sightline.pc), null, 'no media connection yet');
  assert.equal(await metric(appliance, 'sightline_media_peers'), 0);
  const sentBefore = await metric(appliance, 'sightline_media_datagrams_sent_total');
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(await metric(appliance, 'sightline_media_datagrams_sent_total'), sentBefore, 'nothing sent while waiting');

  const consentAt = Date.now();
  await customer.page.click('#share');
  await waitFor(async () => (await inboundVideo(technician.page))?.framesDecoded > 0, { what: 'decoded frames' });
  const firstFrameMs = Date.now() - consentAt;
  console.log(`consent tap to first decoded frame at the technician: ${firstFrameMs} ms`);

  await technician.page.waitForSelector('#stage-placeholder', { state: 'hidden' });
  const width = await waitFor(
    () => technician.page.evaluate(() => document.querySelector('#remote-video').videoWidth),
    { what: 'video width' },
  );
  assert.ok(width > 0);
  await waitFor(async () => (await status(technician.page)) === 'live', { what: 'live state' });
  const before = (await inboundVideo(technician.page)).framesDecoded;
  await new Promise((r) => setTimeout(r, 1000));
  assert.ok((await inboundVideo(technician.page)).framesDecoded > before, 'frames keep arriving');

  // The picture stops (the camera's track is taken off the connection): within about two
  // seconds the console says so instead of showing the last frame as live; it recovers
  // when frames come back.
  const stoppedAt = Date.now();
  const videoSender = 'window.sightline.pc.getTransceivers().find((t) => t.receiver.track.kind === "video").sender';
  await customer.page.evaluate(`${videoSender}.replaceTrack(null)`);
  await technician.page.waitForSelector('#video-stalled:not([hidden])', { timeout: 6000 });
  console.log(`frames stop to "video stopped" shown: ${Date.now() - stoppedAt} ms`);
  assert.equal(await technician.page.textContent('#session-status'), 'Video stopped');
  await customer.page.evaluate(`${videoSender}.replaceTrack(window.sightline.camera.getVideoTracks()[0])`);
  await technician.page.waitForSelector('#video-stalled', { state: 'hidden', timeout: 10000 });
  assert.equal(await technician.page.textContent('#session-status'), 'Live');

  // Chat both ways, shown on both sides with who wrote it.
  await technician.page.fill('#chat-text', 'Please point the camera at the router.');
  await technician.page.press('#chat-text', 'Enter');
  await customer.page.waitForSelector('#chat-lines li[data-from=technician]');
  assert.equal(await customer.page.textContent('#chat-lines li[data-from=technician]'), `${admin.name}: Please point the camera at the router.`);
  await customer.page.fill('#chat-text', 'Done, can you see it?');
  await customer.page.click('#chat-form button');
  await technician.page.waitForSelector('#chat-lines li[data-from=customer]');
  assert.equal(await technician.page.textContent('#chat-lines li[data-from=customer]'), 'Customer: Done, can you see it?');

  // A reload rejoins the same session without asking consent again; video resumes.
  const sessionId = await technician.page.evaluate(() => window.sightline.sessionId);
  const consentBefore = (await technician.page.request.get(`${appliance.url}api/sessions/${sessionId}`).then((r) => r.json())).consent;
  await customer.page.reload();
  await customer.page.waitForSelector('#live:not([hidden])');
  const resumedFrom = (await inboundVideo(technician.page)).framesDecoded;
  await waitFor(async () => (await inboundVideo(technician.page)).framesDecoded > resumedFrom + 5, { what: 'frames after the reload' });
  const consentAfter = (await technician.page.request.get(`${appliance.url}api/sessions/${sessionId}`).then((r) => r.json())).consent;
  assert.deepEqual(consentAfter, consentBefore, 'the consent on record is reused, not asked again');
  assert.equal(await customer.page.locator('#chat-lines li').count(), 2, 'the chat so far is shown after the reload');

  // "End session" asks first: keeping on sharing changes nothing; ending tells the
  // technician.
  await customer.page.click('#end');
  await customer.page.waitForSelector('#end-confirm[open]');
  await customer.page.click('#end-no');
  assert.equal(await customer.page.isVisible('#live'), true);
  assert.equal(await status(technician.page), 'live');
  await customer.page.click('#end');
  await customer.page.click('#end-yes');
  await customer.page.waitForSelector('#ended:not([hidden])');
  await waitFor(async () => (await status(technician.page)) === 'ended', { what: 'ended state' });
  assert.match(await technician.page.textContent('#session-status'), /ended by the customer/);

  // The history's CSV export (the console's download link) lists the session.
  await technician.page.click('#back');
  await technician.page.selectOption('#history-state', 'ended');
  await technician.page.click('#history-filter button');
  await technician.page.selectOption('#history-technician', { label: admin.name });
  await technician.page.click('#history-filter button');
  const href = await technician.page.getAttribute('#history-csv', 'href');
  assert.match(href, /state=ended/);
  assert.match(href, /technician_id=[0-9a-f]+/);
  const csv = await technician.page.request.get(new URL(href, appliance.url).href).then((r) => r.text());
  assert.ok(csv.split('\n').some((row) => row.startsWith(sessionId) && row.includes(',customer,')), csv);
  await customer.context.close();
});

test('a forwarded link cannot take over the camera; a second device must agree afresh', async () => {
  const { link } = await newSession();
  const first = await openCustomer(link);
  await first.page.click('#share');
  await waitFor(async () => (await status(technician.page)) === 'live', { what: 'live state' });

  // While the customer is here, another device with the same link is turned away.
  const second = await newContext(browser);
  const page = await second.newPage();
  await page.goto(link);
  await page.waitForSelector('#problem:not([hidden])');
  assert.match(await page.textContent('#problem-text'), /another device/i);

  // The customer's phone goes away; the other device may now join, but as a new
  // participant: it is asked for consent, and the technician is told.
  await first.context.close();
  await waitFor(async () => /disconnected/i.test(await technician.page.textContent('#session-status')), { what: 'customer away' });
  await page.reload();
  await page.waitForSelector('#consent:not([hidden])');
  await technician.page.waitForSelector('#device-note:not([hidden])');
  assert.match(await technician.page.textContent('#device-note'), /Another device joined/);
  assert.equal(await status(technician.page), 'joined', 'the earlier consent does not carry over');
  const before = (await inboundVideo(technician.page))?.framesDecoded ?? 0;
  await page.click('#share');
  await waitFor(async () => (await inboundVideo(technician.page))?.framesDecoded > before + 5, { what: 'frames from the new device' });
  await page.click('#end');
  await page.click('#end-yes');
  await second.close();
});

test('thirty ordinary sessions from one address raise no alarm', async () => {
  // Customers behind one NAT: every page and every media packet from 127.0.0.1. Each
  // session goes live and is ended by the technician while the customer's camera is on.
  const customer = await newContext(browser);
  const page = await customer.newPage();
  const alarms = async () => ({
    guesses: await metric(appliance, 'sightline_guesses_rejected_total'),
    throttled: await metric(appliance, 'sightline_sources_throttled_total'),
    anomalies: await metric(appliance, 'sightline_anomaly_alerts_total'),
  });
  const before = await alarms();
  const started = Date.now();
  for (let n = 0; n < 30; n += 1) {
    const { link } = await newSession();
    await page.goto('about:blank');
    await page.goto(link);
    await page.waitForSelector('#consent:not([hidden])');
    await page.click('#share');
    await waitFor(async () => (await status(technician.page)) === 'live', { what: `session ${n} live` });
    await technician.page.click('#end-session');
    await page.waitForSelector('#ended:not([hidden])');
  }
  console.log(`30 sessions from one address in ${Date.now() - started} ms`);
  // Late media from the ended sessions arrives for a while yet.
  await new Promise((r) => setTimeout(r, 3000));
  assert.deepEqual(await alarms(), before);
  await customer.close();
});

// The live view puts the picture first: at 1366×768 and 1920×1080 the whole video is on
// screen without scrolling, at least 60 % of the width, with the chat beside it; the
// customer page fits a 360 px phone without sideways scrolling. Screenshots go to
// SCREENSHOTS_DIR when set (the README's are made so), else to a temporary directory.
test('the live view at laptop and desktop sizes, and the customer page on phones', async () => {
  const { mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = process.env.SCREENSHOTS_DIR ?? mkdtempSync(join(tmpdir(), 'sightline-shots-'));
  const { link } = await newSession();
  const customer = await openCustomer(link);
  await customer.page.click('#share');
  await waitFor(async () => (await inboundVideo(technician.page))?.framesDecoded > 10, { what: 'frames' });
  await customer.page.fill('#chat-text', 'The label is on the back, next to the power socket.');
  await customer.page.click('#chat-form button');
  await technician.page.waitForSelector('#chat-lines li[data-from=customer]');
  for (const [width, height] of [[1366, 768], [1920, 1080]]) {
    await technician.page.setViewportSize({ width, height });
    await technician.page.evaluate(() => window.scrollTo(0, 0));
    await new Promise((r) => setTimeout(r, 300));
    const box = await technician.page.evaluate(() => {
      const rect = (s) => document.querySelector(s).getBoundingClientRect().toJSON();
      return { video: rect('#remote-video'), chat: rect('#chat-lines'), tools: rect('.live-tools') };
    });
    assert.ok(box.video.width >= width * 0.6, `${width}×${height}: the picture is ${box.video.width} px wide`);
    assert.ok(box.video.bottom <= height, `${width}×${height}: the picture ends at ${box.video.bottom}, off screen`);
    assert.ok(box.chat.left >= box.video.right, `${width}×${height}: the chat is beside the picture`);
    assert.ok(box.tools.bottom <= height, `${width}×${height}: the tools are on screen without scrolling`);
    await technician.page.screenshot({ path: join(dir, `console-live-${width}x${height}.png`) });
  }
  await technician.page.setViewportSize({ width: 1280, height: 720 });
  for (const [width, height] of [[360, 640], [390, 844]]) {
    await customer.page.setViewportSize({ width, height });
    await new Promise((r) => setTimeout(r, 300));
    const overflow = await customer.page.evaluate(() => document.scrollingElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${width}×${height}: the customer page scrolls sideways by ${overflow} px`);
    await customer.page.screenshot({ path: join(dir, `customer-live-${width}x${height}.png`) });
  }
  console.log(`screenshots in ${dir}`);
  await customer.page.click('#end');
  await customer.page.click('#end-yes');
  await customer.context.close();
});

test('a customer who declines shares nothing and the technician sees it', async () => {
  const { link } = await newSession();
  const customer = await openCustomer(link);
  await customer.page.click('#decline');
  await customer.page.waitForSelector('#declined:not([hidden])');
  await waitFor(async () => (await status(technician.page)) === 'declined', { what: 'declined state' });
  assert.match(await technician.page.textContent('#session-status'), /declined/);
  await new Promise((r) => setTimeout(r, 2000));
  // No picture ever flowed, so the console never opened its media connection.
  assert.equal(await technician.page.evaluate(() => window.sightline.pc), null, 'no media connection');
  assert.equal(await inboundVideo(technician.page), null);
  const cameraStarted = await customer.page.evaluate(() => document.querySelector('#preview').srcObject !== null);
  assert.equal(cameraStarted, false, 'the camera was never opened');
  // Nothing to draw on and nobody reading: the tools are off, and the console says why.
  assert.deepEqual(await toolsEnabled(technician.page), { pen: false, freeze: false, snapshot: false, switchCamera: false, chat: false });
  assert.match(await technician.page.textContent('#tools-note'), /chose not to share/);
  await customer.context.close();
});

const toolsEnabled = (page) => page.evaluate(() => {
  const on = (selector) => !document.querySelector(selector).disabled;
  return { pen: on('#tools [data-tool=pen]'), freeze: on('#freeze'), snapshot: on('#snapshot'), switchCamera: on('#cam-switch'), chat: on('#chat-text') };
});

test('the customer joins with the PIN and the technician ends the session', async () => {
  const { pin } = await newSession();
  const context = await newContext(browser);
  const page = await context.newPage();
  await page.goto(new URL('/join', appliance.url).href);
  await page.fill('#pin', pin);
  await page.click('#pin-form button[type=submit]');
  await page.waitForSelector('#consent:not([hidden])');
  assert.match(await page.textContent('#consent-title'), new RegExp(admin.name));
  await page.click('#share');
  await waitFor(async () => (await inboundVideo(technician.page))?.framesDecoded > 0, { what: 'decoded frames' });
  await waitFor(async () => (await toolsEnabled(technician.page)).snapshot, { what: 'tools on while live' });
  assert.equal((await toolsEnabled(technician.page)).chat, true);
  await technician.page.click('#end-session');
  await page.waitForSelector('#ended:not([hidden])');
  assert.match(await page.textContent('#ended-reason'), /technician ended/);
  // After the end the tools are off, the console says why, and nothing can be typed
  // into a chat nobody reads.
  await waitFor(async () => (await status(technician.page)) === 'ended', { what: 'ended state' });
  assert.deepEqual(await toolsEnabled(technician.page), { pen: false, freeze: false, snapshot: false, switchCamera: false, chat: false });
  assert.match(await technician.page.textContent('#tools-note'), /session has ended/);
  const tracksLive = await page.evaluate(() => document.querySelector('#preview').srcObject?.getTracks().some((t) => t.readyState === 'live') ?? false);
  assert.equal(tracksLive, false, 'the camera is released when the session ends');
  await context.close();
});

// Wrong PINs from one source and a burst of junk datagrams from another raise anomaly
// alerts, while the live session keeps decoding frames.
test('attack bursts are flagged while a live session keeps receiving frames', async () => {
  const { link } = await newSession();
  const customer = await openCustomer(link);
  await customer.page.click('#share');
  await waitFor(async () => (await inboundVideo(technician.page))?.framesDecoded > 0, { what: 'decoded frames' });
  const before = (await inboundVideo(technician.page)).framesDecoded;

  const url = new URL(appliance.url);
  const guesses = [];
  for (let i = 0; i < 12; i++) {
    guesses.push(new Promise((resolve) => {
      const request = https.request({
        host: url.hostname, port: url.port, path: '/api/join/pin', method: 'POST', localAddress: otherHosts[0],
        rejectUnauthorized: false, headers: { 'content-type': 'application/json' },
      }, (response) => { response.resume(); response.on('end', () => resolve(response.statusCode)); });
      request.on('error', () => resolve(0));
      request.end(JSON.stringify({ pin: '000000' }));
    }));
  }
  const statuses = await Promise.all(guesses);
  assert.ok(statuses.includes(429), `the guessing source is throttled: ${statuses}`);

  const mediaPort = Number(appliance.mediaPort);
  const socket = dgram.createSocket('udp4');
  await new Promise((resolve) => socket.bind(0, otherHosts[1], resolve));
  for (let i = 0; i < 300; i++) {
    await new Promise((resolve) => socket.send(Buffer.from([0xff, i & 0xff, 1, 2]), mediaPort, new URL(appliance.url).hostname, resolve));
  }
  socket.close();

  await new Promise((r) => setTimeout(r, 1500));
  const after = (await inboundVideo(technician.page)).framesDecoded;
  assert.ok(after > before + 10, `frames kept coming during the attack (${before} → ${after})`);
  await waitFor(() => (appliance.logs().match(/anomaly/g) ?? []).length >= 2, { what: 'two anomaly alerts in the log' });
  const guesser = otherHosts[0].replaceAll('.', '\\.');
  assert.match(appliance.logs(), new RegExp(`${guesser}.*PIN guessing|PIN guessing[^\\n]*${guesser}`));
  assert.match(appliance.logs(), /malformed/);
  await customer.context.close();
});
