// Media that gets through: browsers run in network namespaces this test makes. The
// customer's namespace can be made to drop every UDP packet, so the only way to the relay
// is ICE-TCP on the appliance's HTTPS port; a technician's namespace has its downlink
// throttled, and the relay must send them the small simulcast layer.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ADMIN, startAppliance, setUp, launchBrowser, newContext, inboundVideo, inboundAudio, waitFor, browserPath, isFirefox } from './appliance.mjs';

const ns = `sl-tcp-${process.pid}`;
const hostIf = `sltcp${process.pid % 10000}a`;
const nsIf = `sltcp${process.pid % 10000}b`;
const bwNs = `sl-bw-${process.pid}`;
const bwHostIf = `slbw${process.pid % 10000}a`;
const bwNsIf = `slbw${process.pid % 10000}b`;
// Addresses from the benchmarking range (RFC 2544), on links only this test uses. The
// appliance listens on hostAddr; the technician's namespace reaches it over its own link.
const hostAddr = '198.18.7.1';
const nsAddr = '198.18.7.2';
const bwHostAddr = '198.18.7.5';
const bwNsAddr = '198.18.7.6';

let appliance;
let browser;
let confinedBrowser;
let throttledBrowser;
let workDir;
// These tests run browsers inside namespaces of their own. Playwright drives Chromium
// over a pipe, which crosses namespaces; it drives Firefox over a WebSocket on the
// browser's loopback, which the test (in another namespace) cannot reach.
const onFirefox = isFirefox && 'browsers in namespaces are driven over a pipe, which Playwright offers for Chromium only';
let skip = null;

function sh(...args) {
  execFileSync(args[0], args.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
}

// From now on the customer's namespace drops every UDP packet, both ways.
function blockUdp() {
  sh('ip', 'netns', 'exec', ns, 'nft', 'add table inet nudp; flush table inet nudp; add chain inet nudp out { type filter hook output priority 0; }; add rule inet nudp out meta l4proto udp drop; add chain inet nudp in { type filter hook input priority 0; }; add rule inet nudp in meta l4proto udp drop');
}

function cleanUp() {
  for (const link of [hostIf, bwHostIf]) {
    try { sh('ip', 'link', 'del', link); } catch { /* already gone */ }
  }
  for (const name of [ns, bwNs]) {
    try { sh('ip', 'netns', 'del', name); } catch { /* already gone */ }
  }
}

// Limits what the host sends into the technician's namespace (their downlink).
function throttle(rate) {
  try { sh('tc', 'qdisc', 'del', 'dev', bwHostIf, 'root'); } catch { /* none yet */ }
  if (rate) sh('tc', 'qdisc', 'add', 'dev', bwHostIf, 'root', 'tbf', 'rate', rate, 'burst', '8kb', 'latency', '200ms');
}

before(async () => {
  if (onFirefox) return;
  try {
    sh('ip', 'netns', 'add', ns);
  } catch (e) {
    skip = `network namespaces unavailable here (${String(e.stderr ?? e).trim()})`;
    return;
  }
  // IPv4 only: IPv6 addresses appearing a moment after the links come up would make
  // Chromium report a network change and abort requests in flight.
  sh('ip', 'netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
  sh('ip', 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf);
  sh('sysctl', '-qw', `net.ipv6.conf.${hostIf}.disable_ipv6=1`);
  sh('ip', 'link', 'set', nsIf, 'netns', ns);
  sh('ip', 'addr', 'add', `${hostAddr}/30`, 'dev', hostIf);
  sh('ip', 'link', 'set', hostIf, 'up');
  sh('ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', `${nsAddr}/30`, 'dev', nsIf);
  sh('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', nsIf, 'up');
  sh('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');

  sh('ip', 'netns', 'add', bwNs);
  sh('ip', 'netns', 'exec', bwNs, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
  sh('ip', 'link', 'add', bwHostIf, 'type', 'veth', 'peer', 'name', bwNsIf);
  sh('sysctl', '-qw', `net.ipv6.conf.${bwHostIf}.disable_ipv6=1`);
  sh('ip', 'link', 'set', bwNsIf, 'netns', bwNs);
  sh('ip', 'addr', 'add', `${bwHostAddr}/30`, 'dev', bwHostIf);
  sh('ip', 'link', 'set', bwHostIf, 'up');
  sh('ip', 'netns', 'exec', bwNs, 'ip', 'addr', 'add', `${bwNsAddr}/30`, 'dev', bwNsIf);
  sh('ip', 'netns', 'exec', bwNs, 'ip', 'link', 'set', bwNsIf, 'up');
  sh('ip', 'netns', 'exec', bwNs, 'ip', 'link', 'set', 'lo', 'up');
  sh('ip', 'netns', 'exec', bwNs, 'ip', 'route', 'add', `${hostAddr}/32`, 'via', bwHostAddr);

  workDir = mkdtempSync(join(tmpdir(), 'sightline-tcp-'));
  const inNamespace = (name, file) => {
    const wrapper = join(workDir, file);
    writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${name} ${browserPath} "$@"\n`, { mode: 0o755 });
    return wrapper;
  };

  // The relay logs each technician's downlink estimate and layer, for the ramp's timeline.
  appliance = await startAppliance({ host: hostAddr, log: 'warn,sightline::media::layers=debug' });
  browser = await launchBrowser();
  confinedBrowser = await launchBrowser({ executablePath: inNamespace(ns, 'chromium-customer') });
  throttledBrowser = await launchBrowser({ executablePath: inNamespace(bwNs, 'chromium-technician') });
});

after(async () => {
  await confinedBrowser?.close();
  await throttledBrowser?.close();
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

test('when the customer’s network stops passing UDP mid-session, the media moves to TCP without a reload', { skip: onFirefox }, async (t) => {
  if (skip) return t.skip(skip);
  const link = await technicianSession();
  const customer = await confinedCustomer(link);
  assert.equal((await selectedPair(customer.page)).local, 'udp', 'UDP first, while it works');
  const resource = await customer.page.evaluate(() => window.sightline.resource);

  const cutAt = Date.now();
  blockUdp();
  const frames = (await inboundVideo(tech)).framesDecoded;
  // Chrome either moves to the TCP pair it already checked, or loses the path and the
  // page restarts ICE; either way the same relay connection carries on over TCP.
  await waitFor(async () => (await inboundVideo(tech)).framesDecoded > frames + 10 && (await selectedPair(customer.page)).local === 'tcp', { timeout: 60000, interval: 100, what: 'frames over the new path' });
  const restarts = await customer.page.evaluate(() => window.sightline.iceRestarts);
  console.log(`path cut to the first new decoded frames at the technician: ${Date.now() - cutAt} ms (${restarts} ICE restarts)`);
  assert.equal(await customer.page.evaluate(() => window.sightline.resource), resource, 'the same relay connection');
  assert.equal(await customer.page.isVisible('#live'), true, 'no reload, no new consent');
  await customer.page.click('#end');
  await customer.page.click('#end-yes');
  await customer.context.close();
});

test('a technician on a thin downlink gets the small simulcast layer and keeps decoding; on a wide one the full layer', { skip: onFirefox }, async (t) => {
  if (skip) return t.skip(skip);
  await technicianSession();
  const context = await newContext(throttledBrowser);
  const remote = await context.newPage();
  await remote.goto(appliance.url);
  await remote.fill('#login-email', ADMIN.email);
  await remote.fill('#login-password', ADMIN.password);
  await remote.click('#login-form button[type=submit]');
  await remote.waitForSelector('#dashboard:not([hidden])');
  await remote.click('#new-session');
  await remote.waitForSelector('#session:not([hidden])');
  const link = (await remote.textContent('#invite-link')).trim();

  const customerContext = await newContext(browser);
  const customer = await customerContext.newPage();
  await customer.goto(link);
  await customer.waitForSelector('#consent:not([hidden])');
  await customer.check('#share-mic');
  const logged = appliance.logs().length;
  await customer.click('#share');
  const started = Date.now();
  // Whatever the outcome, the ramp can be explained: what the technician decoded and how
  // fast bytes came, sampled with every check, beside the relay's estimates and layers.
  const timeline = [];
  // eslint-disable-next-line no-control-regex
  const relayLog = () => appliance.logs().slice(logged).replace(/\x1b\[[0-9;]*m/g, '').split('\n').filter((l) => l.includes('media::layers'));
  const sample = async () => {
    const v = await inboundVideo(remote);
    timeline.push({ ms: Date.now() - started, width: v?.frameWidth ?? 0, bytes: v?.bytesReceived ?? 0 });
    return v;
  };
  const explain = () => {
    const rows = timeline.map((t, i) => {
      const before = timeline[i - 1];
      const kbps = before ? Math.round(((t.bytes - before.bytes) * 8) / Math.max(1, t.ms - before.ms)) : 0;
      return `  ${t.ms} ms: ${t.width} px, ${kbps} kbit/s`;
    });
    return `technician's side:\n${rows.join('\n')}\nrelay:\n${relayLog().map((l) => `  ${l}`).join('\n')}`;
  };
  const step = async (what, condition, timeout = 40000) => {
    try {
      await waitFor(condition, { timeout, interval: 200, what });
    } catch (e) {
      console.log(explain());
      throw e;
    }
  };
  await step('the full layer on a wide downlink', async () => (await sample())?.frameWidth === 1280);
  const estimates = relayLog().map((l) => l.match(/estimate_bps=(\d+)/)?.[1]).filter(Boolean);
  console.log(`full layer reached ${Date.now() - started} ms after sharing (${estimates.length} estimates from the relay, the last ${estimates.at(-1) ?? 'none'} bit/s)`);

  throttle('400kbit');
  await step('the small layer on a thin downlink', async () => {
    const v = await sample();
    return v.frameWidth > 0 && v.frameWidth < 1280;
  });
  const small = await inboundVideo(remote);
  await step('frames keep decoding', async () => (await sample()).framesDecoded > small.framesDecoded + 20, 20000);
  console.log(`thin downlink: ${small.frameWidth} px wide, still decoding`);

  // Too thin for any video: the technician is told, and the customer's voice goes on.
  throttle('60kbit');
  await step('the note that video is off', () => remote.isVisible('#bandwidth-note'));
  const heard = (await inboundAudio(remote)).packetsReceived;
  await step('audio on a link too thin for video', async () => (await inboundAudio(remote)).packetsReceived > heard + 25, 20000);

  throttle(null);
  await customer.click('#end');
  await customer.click('#end-yes');
  await customerContext.close();
  await context.close();
});

test('with UDP blocked the customer’s media reaches the technician over TCP on the HTTPS port', { skip: onFirefox }, async (t) => {
  if (skip) return t.skip(skip);
  blockUdp();
  const link = await technicianSession();
  const customer = await confinedCustomer(link);
  const selected = await selectedPair(customer.page);
  assert.equal(selected.local, 'tcp', JSON.stringify(selected));
  assert.equal(selected.remote, 'tcp', JSON.stringify(selected));
  assert.equal(String(selected.remotePort), new URL(appliance.url).port, 'the HTTPS port');
  await customer.page.click('#end');
  await customer.page.click('#end-yes');
  await customer.context.close();
});
