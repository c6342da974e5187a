// Starts a real `sightline serve` on ephemeral loopback ports for the browser tests and
// drives Debian's Chromium with a fake camera.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, firefox } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const targetDir = process.env.CARGO_TARGET_DIR ?? resolve(here, '../../target');
export const binary = process.env.SIGHTLINE_BIN ?? join(targetDir, 'debug', 'sightline');

// Source addresses that play other hosts (an attacker, a guessing script): spare loopback
// addresses, or in firefox.sh's namespace the far end of its veth pair.
export const otherHosts = process.env.E2E_HOST ? ['198.18.9.2', '198.18.9.3'] : ['127.0.0.9', '127.0.0.10'];

// E2E_HOST: where the appliance listens (firefox.sh runs the suite in a namespace).
// `log`: the appliance's log filter (SIGHTLINE_LOG), e.g. to follow one module's debug lines.
// `env`: further configuration as environment variables (SIGHTLINE_SECTION__KEY).
export async function startAppliance({ host = process.env.E2E_HOST ?? '127.0.0.1', log, env = {} } = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), 'sightline-e2e-'));
  const child = spawn(binary, [
    'serve', '--data-dir', dataDir, '--listen', `${host}:0`, '--media-listen', `${host}:0`, '--metrics-listen', '127.0.0.1:0',
  ], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env, SIGHTLINE_LOG: log ?? process.env.SIGHTLINE_LOG ?? 'warn' } });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const ready = await new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`appliance did not start:\n${stdout}\n${stderr}`)), 20000);
    child.stdout.on('data', (d) => {
      stdout += d;
      const url = stdout.match(/Console:\s+(\S+)/);
      const code = stdout.match(/Setup code:\s+(\S+)/);
      const media = stdout.match(/Media \(UDP\):\s+\S+:(\d+)/);
      const metrics = stdout.match(/Metrics:\s+(\S+)/);
      if (url && code && media && metrics) {
        clearTimeout(timer);
        resolvePromise({ url: url[1], setupCode: code[1], mediaPort: media[1], metricsUrl: metrics[1] });
      }
    });
    child.on('exit', (status) => {
      clearTimeout(timer);
      reject(new Error(`appliance exited with ${status}:\n${stdout}\n${stderr}`));
    });
  });
  return {
    ...ready,
    dataDir,
    process: child,
    logs: () => stderr,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

// One value from the appliance's Prometheus metrics.
export async function metric(appliance, name) {
  const text = await fetch(appliance.metricsUrl).then((r) => r.text());
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  if (!line) throw new Error(`no metric ${name} in:\n${text}`);
  return Number(line.slice(name.length + 1));
}

// The first account admin, as every browser test creates it through the setup page.
export const ADMIN = { email: 'ada@example.com', password: 'Camera4support', name: 'Ada Lovelace', org: 'Example Utilities' };

// Completes first-run setup on `page` and waits for the dashboard.
export async function setUp(page, appliance, admin = ADMIN) {
  await page.goto(appliance.url);
  await page.fill('#setup-code', appliance.setupCode);
  await page.fill('#setup-org', admin.org);
  await page.fill('#setup-name', admin.name);
  await page.fill('#setup-email', admin.email);
  await page.fill('#setup-password', admin.password);
  await page.click('#setup-form button[type=submit]');
  await page.waitForSelector('#dashboard:not([hidden])');
}

// Which engine the suite runs on: E2E_BROWSER=firefox runs it on Debian's Firefox ESR
// (driven over WebDriver BiDi), otherwise Debian's Chromium.
export const engine = process.env.E2E_BROWSER === 'firefox' ? 'firefox' : 'chromium';
export const isFirefox = engine === 'firefox';
export const browserPath = isFirefox ? process.env.FIREFOX ?? '/usr/bin/firefox-esr' : process.env.CHROMIUM ?? '/usr/bin/chromium';

// An appliance, a browser and a technician's page signed in as the first account admin:
// how every suite that drives sessions from the console begins.
export async function startWithTechnician(admin = ADMIN, options = {}) {
  const appliance = await startAppliance(options);
  const browser = await launchBrowser();
  const context = await newContext(browser);
  const page = await context.newPage();
  await setUp(page, appliance, admin);
  return { appliance, browser, technician: { context, page } };
}

export async function launchBrowser({ executablePath = browserPath } = {}) {
  if (isFirefox) {
    return firefox.launch({
      channel: 'moz-firefox',
      executablePath,
      headless: true,
      firefoxUserPrefs: {
        // A fake camera and microphone, granted without asking.
        'media.navigator.streams.fake': true,
        'media.navigator.permission.disabled': true,
        // Firefox drops 127.0.0.1 candidates without this; the relay is on loopback here.
        'media.peerconnection.ice.loopback': true,
        'media.autoplay.default': 0,
        'media.autoplay.blocking_policy': 0,
      },
    });
  }
  return chromium.launch({
    executablePath,
    args: [
      // Two fake cameras, so switching cameras can be tested.
      '--use-fake-device-for-media-stream=device-count=2',
      '--use-fake-ui-for-media-stream',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
}

export async function newContext(browser, { permissions = ['camera', 'microphone'], locale = 'en-GB' } = {}) {
  // Firefox's permissions come from the prefs above.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, permissions: isFirefox ? undefined : permissions, locale });
  return context;
}

// Inbound video statistics of the technician's peer connection.
export async function inboundVideo(page) {
  return page.evaluate(async () => {
    const pc = window.sightline?.pc;
    if (!pc) return null;
    const stats = await pc.getStats();
    for (const report of stats.values()) {
      if (report.type === 'inbound-rtp' && report.kind === 'video') {
        return {
          framesDecoded: report.framesDecoded ?? 0,
          framesReceived: report.framesReceived ?? 0,
          packetsReceived: report.packetsReceived ?? 0,
          bytesReceived: report.bytesReceived ?? 0,
          frameWidth: report.frameWidth ?? 0,
        };
      }
    }
    return { framesDecoded: 0, framesReceived: 0, packetsReceived: 0, bytesReceived: 0, frameWidth: 0 };
  });
}

// Inbound audio statistics of a page's peer connection.
export async function inboundAudio(page) {
  return page.evaluate(async () => {
    const pc = window.sightline?.pc;
    if (!pc) return { packetsReceived: 0 };
    const stats = await pc.getStats();
    for (const report of stats.values()) {
      if (report.type === 'inbound-rtp' && report.kind === 'audio') {
        return { packetsReceived: report.packetsReceived ?? 0 };
      }
    }
    return { packetsReceived: 0 };
  });
}

export async function waitFor(check, { timeout = 20000, interval = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

// The pages' own strings (ES modules served to browsers, loaded here as such).
const language = async (name) => (await import(`data:text/javascript,${encodeURIComponent(readFileSync(new URL(`../../src/web/strings/${name}.js`, import.meta.url), 'utf8'))}`)).default;
export const STRINGS = { en: await language('en'), de: await language('de') };

// English strings that a German page must never show (those that differ between them).
const ENGLISH = Object.keys(STRINGS.en)
  .filter((k) => STRINGS.en[k] !== STRINGS.de[k] && STRINGS.en[k].length > 3)
  .flatMap((k) => STRINGS.en[k].split(/\{\w+\}/))
  .filter((e) => e.trim().length > 3);

// Fails if `page` shows any English text of the pages' strings, or is not marked German.
export async function assertGerman(page, what) {
  const text = await page.evaluate(() => {
    const visible = [];
    for (const el of document.querySelectorAll('body *')) {
      if (el.closest('[hidden]') || !el.checkVisibility()) continue;
      for (const node of el.childNodes) if (node.nodeType === 3 && node.textContent.trim()) visible.push(node.textContent.trim());
      for (const attr of ['aria-label', 'placeholder', 'alt', 'title']) if (el.getAttribute(attr)) visible.push(el.getAttribute(attr));
    }
    return visible;
  });
  for (const line of text) {
    // Short strings must not be the whole text; longer ones not even part of it.
    const leaked = ENGLISH.find((e) => line === e.trim() || (e.length > 12 && line.includes(e.trim())));
    assert.equal(leaked, undefined, `${what}: English text "${line}"`);
  }
  assert.equal(await page.getAttribute('html', 'lang'), 'de');
}

// A new browser context in `locale` signed in as `admin`, at the dashboard.
export async function signIn(browser, appliance, { admin = ADMIN, locale = 'en-GB' } = {}) {
  const context = await newContext(browser, { locale });
  const page = await context.newPage();
  await page.goto(appliance.url);
  await page.waitForSelector('#login:not([hidden])');
  await page.fill('#login-email', admin.email);
  await page.fill('#login-password', admin.password);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#dashboard:not([hidden])');
  return { context, page };
}
