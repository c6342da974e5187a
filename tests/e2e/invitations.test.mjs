// Sending the customer their link from the session view: by e-mail through a real SMTP
// server (aiosmtpd with STARTTLS and AUTH, tests/fixtures/smtp_server.py) — the mailed
// link is opened in a customer's browser and the technician decodes the video — and by
// SMS through an HTTPS webhook receiver standing in for the gateway; in German, with the
// gateway's refusal shown in the console.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import https from 'node:https';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ADMIN, assertGerman, startWithTechnician, newContext, inboundVideo, waitFor, signIn } from './appliance.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const targetDir = process.env.CARGO_TARGET_DIR ?? resolve(here, '../../target');
const python = [process.env.SIGHTLINE_TEST_SMTP_PYTHON, join(targetDir, 'aiosmtpd-venv', 'bin', 'python')]
  .find((p) => p && existsSync(p));
const hasOpenssl = spawnSync('openssl', ['version']).status === 0;
const skip = (!python && 'no Python with aiosmtpd (scripts/test-all.sh makes one)')
  || (!hasOpenssl && 'openssl is not installed');

let work;
let smtp;
let gateway;
let appliance;
let browser;
let technician;
const received = [];

function openssl(...args) {
  execFileSync('openssl', args, { cwd: work, stdio: ['ignore', 'pipe', 'pipe'] });
}

// A test CA and a certificate from it for 127.0.0.1: the relay's and the gateway's.
function certificates() {
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-subj', '/CN=Relay Test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  openssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  writeFileSync(join(work, 'server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-days', '2', '-extfile', 'server.ext', '-out', 'server.pem');
}

function secret(name, value) {
  const path = join(work, name);
  writeFileSync(path, value);
  chmodSync(path, 0o600);
  return path;
}

async function startSmtp() {
  const child = spawn(python, [join(here, '../fixtures/smtp_server.py'), '--cert', join(work, 'server.pem'),
    '--key', join(work, 'server.key'), '--user', 'sightline', '--password', 'relay-Passw0rd', '--out', join(work, 'mail')],
  { stdio: ['pipe', 'pipe', 'inherit'] });
  const line = await new Promise((r) => createInterface({ input: child.stdout }).once('line', r));
  return { child, ports: JSON.parse(line) };
}

function mails() {
  return readdirSync(join(work, 'mail')).filter((f) => f.endsWith('.json'))
    .sort((a, b) => parseInt(a, 10) - parseInt(b, 10))
    .map((f) => JSON.parse(readFileSync(join(work, 'mail', f), 'utf8')));
}

async function startGateway() {
  const server = https.createServer({ key: readFileSync(join(work, 'server.key')), cert: readFileSync(join(work, 'server.pem')) }, (req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      const json = JSON.parse(body);
      received.push({ method: req.method, url: req.url, json });
      res.writeHead(json.to === '+4915550000500' ? 500 : 202, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return server;
}

before(async () => {
  if (skip) return;
  work = mkdtempSync(join(tmpdir(), 'sightline-invitations-'));
  execFileSync('mkdir', [join(work, 'mail')]);
  certificates();
  smtp = await startSmtp();
  gateway = await startGateway();
  const env = {
    SIGHTLINE_SMTP__HOST: '127.0.0.1',
    SIGHTLINE_SMTP__PORT: String(smtp.ports.starttls),
    SIGHTLINE_SMTP__FROM: 'IT Support <support@example.test>',
    SIGHTLINE_SMTP__USERNAME: 'sightline',
    SIGHTLINE_SMTP__PASSWORD_FILE: secret('smtp-password', 'relay-Passw0rd\n'),
    SIGHTLINE_SMTP__CA_FILE: join(work, 'ca.pem'),
    SIGHTLINE_SMS__URL: `https://127.0.0.1:${gateway.address().port}/api/sms`,
    SIGHTLINE_SMS__SECRET_FILE: secret('sms-key', 'gateway-key-42'),
    SIGHTLINE_SMS__BODY: '{"to": "{number}", "text": "{text}", "api_key": "{secret}"}',
    SIGHTLINE_SMS__CA_FILE: join(work, 'ca.pem'),
  };
  ({ appliance, browser, technician } = await startWithTechnician(ADMIN, { env }));
});

after(async () => {
  await browser?.close();
  await appliance?.stop();
  gateway?.close();
  if (smtp) {
    smtp.child.stdin.end();
    smtp.child.kill();
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

async function newSession(page) {
  if (await page.isVisible('#back')) await page.click('#back');
  await page.waitForSelector('#dashboard:not([hidden])');
  await page.click('#new-session');
  await page.waitForSelector('#send-invitation:not([hidden])');
  return (await page.textContent('#invite-pin')).trim();
}

test('the technician e-mails the link and the customer joins with it', { skip }, async () => {
  const { page } = technician;
  const pin = await newSession(page);
  assert.ok(await page.isVisible('#send-by-sms-choice'), 'both channels are offered');
  assert.equal(await page.inputValue('#send-language'), 'en');
  await page.fill('#send-to', 'kunde@example.org');
  await page.click('#send-link');
  await waitFor(async () => /Sent to/.test(await page.textContent('#send-note')), { what: 'the sent note' });
  assert.equal(await page.textContent('#send-note'), 'Sent to k…@example.org.');
  const [mail] = mails();
  assert.deepEqual(mail.to, ['kunde@example.org']);
  assert.ok(mail.tls && mail.login === 'sightline', 'over STARTTLS, signed in');
  assert.equal(mail.subject, `Video support from ${ADMIN.org}`);
  assert.ok(!mail.body.includes(pin), 'never the PIN with the link');
  const link = mail.body.split(/\s+/).find((w) => /\/c#[A-Za-z0-9_-]{43}$/.test(w));
  assert.ok(link, mail.body);

  // The mailed link, opened in the customer's browser, is a way into this session.
  const context = await newContext(browser);
  const customer = await context.newPage();
  await customer.goto(link);
  await customer.waitForSelector('#consent:not([hidden])');
  await customer.click('#share');
  await waitFor(async () => (await inboundVideo(page))?.framesDecoded > 0, { what: 'decoded frames' });
  await context.close();
});

test('in German, an SMS the gateway refuses is a clear error, and then one goes out', { skip }, async () => {
  const { context, page } = await signIn(browser, appliance, { locale: 'de-DE' });
  await newSession(page);
  assert.equal(await page.inputValue('#send-language'), 'de', 'the message in the console\'s language');
  await page.check('#send-by-sms-choice input');
  assert.equal(await page.textContent('#send-to-label'), 'Mobilnummer (+49 …)');
  await page.fill('#send-to', '0170 1234567');
  await page.click('#send-link');
  await waitFor(async () => /Nummer/.test(await page.textContent('#send-note')), { what: 'the refusal' });
  assert.match(await page.textContent('#send-note'), /^Diese Adresse oder Nummer kann nicht verwendet werden\./);
  await page.fill('#send-to', '+49 1555 0000500');
  await page.click('#send-link');
  await waitFor(async () => /nicht gesendet/.test(await page.textContent('#send-note')), { what: 'the gateway error' });
  assert.match(await page.textContent('#send-note'), /^Die Nachricht konnte nicht gesendet werden\. \(.*500/);
  await page.fill('#send-to', '+49 170 1234567');
  await page.click('#send-link');
  await waitFor(async () => /Gesendet/.test(await page.textContent('#send-note')), { what: 'the sent note' });
  assert.equal(await page.textContent('#send-note'), 'Gesendet an +…567.');
  await assertGerman(page, 'session view with the send form');
  const sms = received.at(-1);
  assert.equal(sms.method, 'POST');
  assert.equal(sms.json.to, '+491701234567');
  assert.equal(sms.json.api_key, 'gateway-key-42');
  assert.match(sms.json.text, /lädt Sie zum Video-Support ein: https:\/\/\S+\/c#[A-Za-z0-9_-]{43} \(gültig \d+ Min\.\)$/);
  await context.close();
});
