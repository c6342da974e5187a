// Media that gets through where UDP does not: the customer's Chromium runs in a network
// namespace whose nftables drop every UDP packet, so the only way to the relay is ICE-TCP
// on the appliance's HTTPS port. The technician, outside, keeps using UDP.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAppliance, setUp, launchChromium, newContext, inboundVideo, waitFor } from './appliance.mjs';

const ns = `sl-tcp-${process.pid}`;
const hostIf = `sltcp${process.pid % 10000}a`;
const nsIf = `sltcp${process.pid % 10000}b`;
// Addresses from the benchmarking range (RFC 2544), on a link only this test uses.
const hostAddr = '198.18.7.1';
const nsAddr = '198.18.7.2';

let appliance;
let browser;
let confinedBrowser;
let workDir;
let skip = null;

function sh(...args) {
  execFileSync(args[0], args.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
}

// From now on the customer's namespace drops every UDP packet, both ways.
function blockUdp() {
  sh('ip', 'netns', 'exec', ns, 'nft', 'add table inet nudp; flush table inet nudp; add chain inet nudp out { type filter hook output priority 0; }; add rule inet nudp out meta l4proto udp drop; add chain inet nudp in { type filter hook input priority 0; }; add rule inet nudp in meta l4proto udp drop');
}

function cleanUp() {
  try { sh('ip', 'link', 'del', hostIf); } catch { /* already gone */ }
  try { sh('ip', 'netns', 'del', ns); } catch { /* already gone */ }
}

before(async () => {
  try {
    sh('ip', 'netns', 'add', ns);
  } catch (e) {
    skip = `network namespaces unavailable here (${String(e.stderr ?? e).trim()})`;
    return;
  }
  sh('ip', 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf);
  sh('ip', 'link', 'set', nsIf, 'netns', ns);
  sh('ip', 'addr', 'add', `${hostAddr}/30`, 'dev', hostIf);
  sh('ip', 'link', 'set', hostIf, 'up');
  sh('ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', `${nsAddr}/30`, 'dev', nsIf);
  sh('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', nsIf, 'up');
  sh('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');

  workDir = mkdtempSync(join(tmpdir(), 'sightline-tcp-'));
  const wrapper = join(workDir, 'chromium-without-udp');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${process.env.CHROMIUM ?? '/usr/bin/chromium'} "$@"\n`, { mode: 0o755 });

  appliance = await startAppliance({ host: hostAddr });
  browser = await launchChromium();
  confinedBrowser = await launchChromium({ executablePath: wrapper });
});

after(async () => {
  await confinedBrowser?.close();
  await browser?.close();
  await appliance?.stop();
  cleanUp();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

let tech; // the technician's page, signed in once

async function technicianSession() {
  if (!tech) {
    const context = await newContext(browser);
    tech = await context.newPage();
    await setUp(tech, appliance);
  }
  if (await tech.isVisible('#back')) await tech.click('#back');
  await tech.click('#new-session');
  await tech.waitForSelector('#session:not([hidden])');
  return (await tech.textContent('#invite-link')).trim();
}

async function confinedCustomer(link) {
  const context = await newContext(confinedBrowser);
  const page = await context.newPage();
  await page.goto(link);
  await page.waitForSelector('#consent:not([hidden])');
  await page.click('#share');
  await waitFor(async () => (await inboundVideo(tech))?.framesDecoded > 10, { timeout: 30000, what: 'frames at the technician' });
  return { context, page };
}

// The protocols of the candidate pair a page's connection uses now.
async function selectedPair(page) {
  return page.evaluate(async () => {
    const stats = await window.sightline.pc.getStats();
    const reports = [...stats.values()];
    const transport = reports.find((r) => r.type === 'transport');
    const pair = reports.find((r) => r.id === transport?.selectedCandidatePairId)
      ?? reports.find((r) => r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded');
    const local = reports.find((r) => r.id === pair?.localCandidateId);
    const remote = reports.find((r) => r.id === pair?.remoteCandidateId);
    return { local: local?.protocol, remote: remote?.protocol, remotePort: remote?.port };
  });
}

test('when the customer’s network stops passing UDP mid-session, an ICE restart moves the media to TCP', async (t) => {
  if (skip) return t.skip(skip);
  const link = await technicianSession();
  const customer = await confinedCustomer(link);
  assert.equal((await selectedPair(customer.page)).local, 'udp', 'UDP first, while it works');
  const resource = await customer.page.evaluate(() => window.sightline.resource);

  const cutAt = Date.now();
  blockUdp();
  const frames = (await inboundVideo(tech)).framesDecoded;
  // Frames stall, then come back on the new path.
  await waitFor(async () => (await customer.page.evaluate(() => window.sightline.pc.iceConnectionState)) !== 'connected', { timeout: 30000, what: 'the cut noticed' });
  await waitFor(async () => (await inboundVideo(tech)).framesDecoded > frames + 10 && (await selectedPair(customer.page)).local === 'tcp', { timeout: 40000, interval: 100, what: 'frames over the new path' });
  console.log(`path cut to the first new decoded frames at the technician: ${Date.now() - cutAt} ms`);
  assert.equal(await customer.page.evaluate(() => window.sightline.resource), resource, 'the same relay connection, restarted');
  assert.equal(await customer.page.isVisible('#live'), true, 'no reload, no new consent');
  await customer.page.click('#end');
  await customer.context.close();
});

test('with UDP blocked the customer’s media reaches the technician over TCP on the HTTPS port', async (t) => {
  if (skip) return t.skip(skip);
  blockUdp();
  const link = await technicianSession();
  const customer = await confinedCustomer(link);
  const selected = await selectedPair(customer.page);
  assert.equal(selected.local, 'tcp', JSON.stringify(selected));
  assert.equal(selected.remote, 'tcp', JSON.stringify(selected));
  assert.equal(String(selected.remotePort), new URL(appliance.url).port, 'the HTTPS port');
  await customer.page.click('#end');
  await customer.context.close();
});
