// The company's certificate, as IT brings it: a test CA made with openssl issues the
// appliance's certificate; `sightline cert import` installs it while a customer's camera
// is live in the browser; SIGHUP (systemctl reload) makes the appliance serve it at once
// and openssl verifies the chain it serves; then a renewal replaces it — and the
// technician's picture never stops.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ADMIN, binary, startWithTechnician, newContext, inboundVideo, waitFor } from './appliance.mjs';

const NAME = 'support.example.test';
const ENV = { SIGHTLINE_HTTP__SERVER_NAMES: NAME };
const hasOpenssl = spawnSync('openssl', ['version']).status === 0;

let appliance;
let browser;
let technician;
let work;
let host;
let port;

function openssl(...args) {
  return execFileSync('openssl', args, { cwd: work, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

// A server certificate for the appliance's names from the test CA; returns its PEM.
function issue(name, days) {
  openssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${NAME}`);
  writeFileSync(join(work, `${name}.ext`), [
    `subjectAltName=DNS:${NAME},IP:${host},IP:127.0.0.1`,
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth',
    'authorityKeyIdentifier=keyid',
    'subjectKeyIdentifier=hash',
  ].join('\n'));
  openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-days', String(days), '-extfile', `${name}.ext`, '-out', `${name}.pem`);
  writeFileSync(join(work, `${name}-chain.pem`), readFileSync(join(work, `${name}.pem`), 'utf8') + readFileSync(join(work, 'ca.pem'), 'utf8'));
  return readFileSync(join(work, `${name}.pem`), 'utf8');
}

function importCertificate(name) {
  const result = spawnSync(binary, ['--data-dir', appliance.dataDir, 'cert', 'import',
    '--cert', join(work, `${name}-chain.pem`), '--key', join(work, `${name}.key`)], { env: { ...process.env, ...ENV }, encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  return result.stdout;
}

// The served leaf, as openssl sees it when it verifies the chain against the test CA only.
function served() {
  const result = spawnSync('openssl', ['s_client', '-connect', `${host}:${port}`, '-servername', NAME,
    '-CAfile', join(work, 'ca.pem'), '-verify_return_error', '-verify_hostname', NAME, '-showcerts'],
  { input: '', encoding: 'utf8', timeout: 10000 });
  if (result.status !== 0 || !/Verify return code: 0 \(ok\)/.test(result.stdout)) return null;
  return result.stdout.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/)?.[0] ?? null;
}

const same = (a, b) => a?.replace(/\s+/g, '') === b?.replace(/\s+/g, '');

before(async () => {
  if (!hasOpenssl) return;
  ({ appliance, browser, technician } = await startWithTechnician(ADMIN, { env: ENV }));
  const url = new URL(appliance.url);
  host = url.hostname;
  port = url.port;
  work = mkdtempSync(join(tmpdir(), 'sightline-corporate-ca-'));
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '30',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-subj', '/CN=Example Corp Issuing CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
});

after(async () => {
  await browser?.close();
  await appliance?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

test('an imported certificate is served and replaced while a session stays live', { skip: !hasOpenssl && 'openssl is not installed' }, async () => {
  const { page } = technician;
  await page.click('#new-session');
  await page.waitForSelector('#session:not([hidden])');
  await waitFor(async () => (await page.getAttribute('#session-status', 'data-state')) === 'waiting', { what: 'waiting' });
  const link = (await page.textContent('#invite-link')).trim();
  const context = await newContext(browser);
  const customer = await context.newPage();
  await customer.goto(link);
  await customer.waitForSelector('#consent:not([hidden])');
  await customer.click('#share');
  await waitFor(async () => (await inboundVideo(page))?.framesDecoded > 0, { what: 'decoded frames' });
  assert.equal(served(), null, 'before: the appliance CA\'s certificate, which the test CA does not vouch for');

  const framesGoOn = async (what) => {
    const before = (await inboundVideo(page)).framesDecoded;
    await waitFor(async () => (await inboundVideo(page)).framesDecoded > before + 30, { timeout: 20000, what });
  };

  const first = issue('first', 60);
  const printed = importCertificate('first');
  assert.match(printed, new RegExp(`names: +${NAME.replaceAll('.', '\\.')}`));
  process.kill(appliance.process.pid, 'SIGHUP');
  await waitFor(async () => same(served(), first), { timeout: 10000, what: 'the imported certificate served and verified' });
  await framesGoOn('frames after the import');

  // A renewal: served in place of the first, still without a restart.
  const second = issue('second', 20);
  importCertificate('second');
  process.kill(appliance.process.pid, 'SIGHUP');
  await waitFor(async () => same(served(), second), { timeout: 10000, what: 'the renewed certificate served' });
  await framesGoOn('frames after the renewal');
  assert.equal(appliance.process.exitCode, null, 'SIGHUP reloads, it does not stop the appliance');
  assert.equal(await page.getAttribute('#session-status', 'data-state'), 'live');

  // Twenty days left: the admin's console warns (a fresh page, as the next sign-in).
  await page.click('#back');
  await page.reload();
  await page.waitForSelector('#cert-warning:not([hidden])');
  assert.match(await page.textContent('#cert-warning'), /expires on .* \(in 19 days\)|expires on .* \(in 20 days\)/);

  await customer.click('#end');
  await customer.click('#end-yes');
  await context.close();
});
