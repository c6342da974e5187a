// A browser that trusts the appliance CA — as IT installs it — opens the console with no
// certificate warning: the name-constrained CA and its server certificate are accepted by
// Chromium's own verifier (no ignoreHTTPSErrors here).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startAppliance, isFirefox } from './appliance.mjs';

let appliance;
let home;
let browser;

const hasCertutil = (() => {
  try { execFileSync('certutil', ['-H'], { stdio: 'ignore' }); return true; } catch (e) { return e.status !== undefined && e.code !== 'ENOENT'; }
})();

before(async () => {
  if (!hasCertutil || isFirefox) return;
  appliance = await startAppliance({ host: '127.0.0.1' });
  home = mkdtempSync(join(tmpdir(), 'sightline-nss-'));
  const db = join(home, '.pki', 'nssdb');
  mkdirSync(db, { recursive: true });
  execFileSync('certutil', ['-d', `sql:${db}`, '-N', '--empty-password']);
  const ca = join(appliance.dataDir, 'tls', 'ca.pem');
  assert.match(readFileSync(ca, 'utf8'), /BEGIN CERTIFICATE/);
  execFileSync('certutil', ['-d', `sql:${db}`, '-A', '-t', 'C,,', '-n', 'Sightline appliance CA', '-i', ca]);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    env: { ...process.env, HOME: home },
  });
});

after(async () => {
  await browser?.close();
  await appliance?.stop();
  if (home) rmSync(home, { recursive: true, force: true });
});

// Chromium's system NSS store is the one IT fills; on the Firefox run this is skipped.
test('a browser trusting the appliance CA opens the console by address and by name', { skip: (!hasCertutil && 'certutil (libnss3-tools) is not installed') || (isFirefox && 'runs on Chromium (the system NSS store)') }, async () => {
  const port = new URL(appliance.url).port;
  for (const url of [`https://127.0.0.1:${port}/`, `https://localhost:${port}/`]) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const response = await page.goto(url);
    assert.equal(response.status(), 200, url);
    const security = await response.securityDetails();
    assert.match(security.protocol, /TLS 1\.[23]/, url);
    assert.equal(security.issuer, 'Sightline appliance CA', url);
    await page.waitForSelector('#setup:not([hidden])');
    await context.close();
  }
});
