// Technician identity in the browser: an admin creates a technician in a group that
// requires two-factor sign-in; the technician chooses a password, enrols TOTP (codes
// computed here from the secret the console shows), signs out and back in with a code;
// repeated wrong passwords show the lockout and when it ends.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { startAppliance, launchBrowser, newContext } from './appliance.mjs';

let appliance;
let browser;

function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const ch of text.replace(/=+$/, '').toUpperCase()) {
    bits += alphabet.indexOf(ch).toString(2).padStart(5, '0');
  }
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}

// RFC 6238 TOTP: SHA-1, 6 digits, 30-second steps.
function totp(secret, unixSeconds) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(unixSeconds / 30)));
  const mac = createHmac('sha1', base32Decode(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const value = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return value.toString().padStart(6, '0');
}

before(async () => {
  appliance = await startAppliance();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await appliance?.stop();
});

test('admin adds a technician to a 2FA group; the technician enrols and signs in with a code; lockout is shown', async () => {
  const adminContext = await newContext(browser);
  const admin = await adminContext.newPage();
  await admin.goto(appliance.url);
  await admin.fill('#setup-code', appliance.setupCode);
  await admin.fill('#setup-org', 'Example Utilities');
  await admin.fill('#setup-name', 'Ada Lovelace');
  await admin.fill('#setup-email', 'ada@example.com');
  await admin.fill('#setup-password', 'Camera4support');
  await admin.click('#setup-form button[type=submit]');
  await admin.waitForSelector('#dashboard:not([hidden])');

  await admin.click('[data-nav=groups]');
  await admin.waitForSelector('#group-rows .empty');
  assert.match(await admin.textContent('#group-rows'), /No groups yet/);
  await admin.fill('#ng-name', 'Field');
  await admin.check('#ng-2fa');
  await admin.click('#group-form button[type=submit]');
  await admin.waitForSelector('#group-rows tr[data-name="Field"]');
  assert.equal(await admin.isChecked('#group-rows tr[data-name="Field"] [data-setting=require_2fa]'), true);

  await admin.click('[data-nav=users]');
  await admin.fill('#nu-email', 'tess@example.com');
  await admin.fill('#nu-name', 'Tess Tech');
  await admin.fill('#nu-password', 'Tangerine kettle 47');
  await admin.check('#nu-groups input');
  await admin.click('#user-form button[type=submit]');
  const row = admin.locator('#user-rows tr[data-email="tess@example.com"]');
  await row.waitFor();
  assert.match(await row.textContent(), /Field/);

  // The technician's first sign-in: own password, then two-factor enrolment.
  const techContext = await newContext(browser);
  const tech = await techContext.newPage();
  await tech.goto(appliance.url);
  await tech.fill('#login-email', 'tess@example.com');
  await tech.fill('#login-password', 'Tangerine kettle 47');
  await tech.click('#login-form button[type=submit]');
  await tech.waitForSelector('#change-password:not([hidden])');
  await tech.fill('#cp-new', 'Orchid lantern 93 quay');
  await tech.click('#change-password-form button[type=submit]');
  await tech.waitForSelector('#enrol:not([hidden])');
  const secret = (await tech.textContent('#enrol-secret')).trim();
  assert.match(secret, /^[A-Z2-7]{32}$/);
  const now = Math.floor(Date.now() / 1000);
  await tech.fill('#enrol-code', totp(secret, now));
  await tech.click('#enrol-form button[type=submit]');
  await tech.waitForSelector('#recovery:not([hidden])');
  assert.equal(await tech.locator('#recovery-codes li').count(), 10);
  await tech.click('#recovery-done');
  await tech.waitForSelector('#dashboard:not([hidden])');
  assert.equal(await tech.isVisible('#admin-nav'), false, 'technicians get no admin pages');

  // Sign out and back in with a code (the next step's code: the current one was used).
  await tech.click('#logout');
  await tech.waitForSelector('#login:not([hidden])');
  await tech.fill('#login-email', 'tess@example.com');
  await tech.fill('#login-password', 'Orchid lantern 93 quay');
  await tech.click('#login-form button[type=submit]');
  await tech.waitForSelector('#second-factor:not([hidden])');
  await tech.fill('#second-factor-code', totp(secret, now + 30));
  await tech.click('#second-factor-form button[type=submit]');
  await tech.waitForSelector('#dashboard:not([hidden])');
  assert.equal(await tech.textContent('#who-name'), 'Tess Tech');

  // Five wrong passwords: the console says when the lockout ends.
  const otherContext = await newContext(browser);
  const other = await otherContext.newPage();
  await other.goto(appliance.url);
  for (let i = 0; i < 5; i++) {
    await other.fill('#login-email', 'tess@example.com');
    await other.fill('#login-password', `Wrong guess ${i}x`);
    await other.evaluate(() => { document.querySelector('#login-error').textContent = ''; });
    await other.click('#login-form button[type=submit]');
    await other.waitForFunction(() => document.querySelector('#login-error').textContent !== '');
  }
  const message = await other.textContent('#login-error');
  assert.match(message, /Too many failed sign-ins\. You can try again at \d{1,2}:\d{2}:\d{2}/);

  // The admin sees the lockout and the audit trail, and can unlock.
  await admin.click('[data-nav=users]');
  // The list re-renders after the click; wait for the fresh row rather than the old one.
  await admin.locator('#user-rows tr[data-email="tess@example.com"]', { hasText: 'locked until' }).waitFor();
  assert.match(await row.textContent(), /locked until/);
  await admin.click('[data-nav=audit]');
  await admin.waitForSelector('#audit-rows tr[data-kind=login_locked]');
  await admin.selectOption('#audit-kind', 'two_factor_enrolled');
  await admin.click('#audit-form button[type=submit]');
  await admin.waitForFunction(() => [...document.querySelectorAll('#audit-rows tr')].every((r) => r.dataset.kind === 'two_factor_enrolled'));
  assert.equal(await admin.locator('#audit-rows tr').count(), 1);

  // How long ended sessions are kept: 365 days until the admin chooses; the choice is
  // saved with the other settings and shown again after a reload.
  await admin.click('[data-nav=account]');
  await admin.waitForFunction(() => document.querySelector('#pol-retention').value !== '');
  assert.equal(await admin.inputValue('#pol-retention'), '365');
  await admin.fill('#pol-retention', '90');
  await admin.click('#policy-form button[type=submit]');
  await admin.waitForFunction(() => document.querySelector('#account-saved').textContent !== '');
  await admin.reload();
  await admin.waitForSelector('#dashboard:not([hidden])');
  await admin.click('[data-nav=account]');
  await admin.waitForFunction(() => document.querySelector('#pol-retention').value === '90');
  const policy = await admin.evaluate(async () => (await (await fetch('/api/account')).json()).policy);
  assert.equal(policy.session_retention_days, 90);
  assert.equal(policy.idle_timeout_mins, 30, 'the other settings are kept as they were');
  await adminContext.close();
  await techContext.close();
  await otherContext.close();
});

test('the console shows errors in the chosen language, by their code', async () => {
  const context = await newContext(browser, { locale: 'de-DE' });
  const page = await context.newPage();
  await page.goto(appliance.url);
  await page.waitForSelector('#login:not([hidden])');
  await page.fill('#login-email', 'ada@example.com');
  await page.fill('#login-password', 'Not the password 1');
  await page.click('#login-form button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#login-error').textContent !== '');
  assert.equal(await page.textContent('#login-error'), 'E-Mail-Adresse oder Passwort ist falsch.');

  await page.fill('#login-password', 'Camera4support');
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#dashboard:not([hidden])');
  await page.click('[data-nav=users]');
  await page.fill('#nu-email', 'short@example.com');
  await page.fill('#nu-name', 'Kurt Kurz');
  await page.fill('#nu-password', 'short1');
  await page.click('#user-form button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#users-error').textContent !== '');
  assert.equal(await page.textContent('#users-error'), 'Das Passwort muss mindestens 8 Zeichen haben.');
  await page.fill('#nu-password', 'Kurtkurz2024');
  await page.click('#user-form button[type=submit]');
  await page.waitForFunction(() => /eigenen Angaben/.test(document.querySelector('#users-error').textContent));
  await context.close();
});
