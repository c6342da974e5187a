// The API description at /api/openapi.json passes a real OpenAPI 3.1 validator
// (@apidevtools/swagger-parser), and the README's API script, run as it stands with curl
// against a running appliance, opens a session and gets the customer's link.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import SwaggerParser from '@apidevtools/swagger-parser';
import { startAppliance, ADMIN, isFirefox } from './appliance.mjs';

const readme = resolve(dirname(fileURLToPath(import.meta.url)), '../../README.md');
let appliance;
let ca;
let origin;

function request(method, path, body) {
  return new Promise((resolvePromise, reject) => {
    const req = https.request(new URL(path, origin), {
      method,
      ca,
      headers: body ? { 'content-type': 'application/json' } : {},
    }, (res) => {
      let data = '';
      res.on('data', (chunk) => { data += chunk; });
      res.on('end', () => resolvePromise({ status: res.statusCode, headers: res.headers, body: data }));
    });
    req.on('error', reject);
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

// No browser here: the Chromium pass runs it; the Firefox pass (in a namespace, on an
// address the appliance CA's certificate does not name for this client) skips it.
const skip = isFirefox && 'browser-independent; runs in the Chromium pass';

before(async () => {
  if (skip) return;
  appliance = await startAppliance();
  ca = readFileSync(join(appliance.dataDir, 'tls', 'ca.pem'));
  origin = new URL(appliance.url).origin;
});

after(async () => {
  await appliance?.stop();
});

test('the API description is valid OpenAPI 3.1', { skip }, async () => {
  const answer = await request('GET', '/api/openapi.json');
  assert.equal(answer.status, 200);
  assert.match(answer.headers['content-type'], /^application\/json/);
  const doc = JSON.parse(answer.body);
  // The validator dereferences in place; keep the original for the negative check.
  const api = await SwaggerParser.validate(structuredClone(doc));
  assert.equal(api.openapi, '3.1.0');
  assert.ok(api.paths['/api/sessions'].post.responses['201']);

  // The validator is not a rubber stamp: a broken reference and a missing answer list
  // are refused.
  const dangling = structuredClone(doc);
  dangling.paths['/api/login'].post.requestBody.content['application/json'].schema.$ref = '#/components/schemas/Nothing';
  await assert.rejects(SwaggerParser.validate(dangling));
  const unanswered = structuredClone(doc);
  unanswered.paths['/api/me'].get.responses = 'none';
  await assert.rejects(SwaggerParser.validate(unanswered));
});

test("the README's API script opens a session and prints the customer's link", { skip }, async () => {
  const setup = await request('POST', '/api/setup', {
    code: appliance.setupCode,
    email: ADMIN.email,
    password: ADMIN.password,
    display_name: ADMIN.name,
    organisation: ADMIN.org,
  });
  assert.equal(setup.status, 200, setup.body);

  const text = readFileSync(readme, 'utf8');
  const block = text.match(/<!-- api-script -->\n```sh\n([\s\S]*?)```\n<!-- \/api-script -->/);
  assert.ok(block, 'the README has the API script');
  const dir = mkdtempSync(join(tmpdir(), 'sightline-api-script-'));
  try {
    const passwordFile = join(dir, 'password');
    writeFileSync(passwordFile, `${ADMIN.password}\n`, { mode: 0o600 });
    const out = execFileSync('bash', ['-c', block[1]], {
      // Only what the README names, as a user's shell would have it.
      env: {
        PATH: process.env.PATH,
        HOME: dir,
        SIGHTLINE: origin,
        CA: join(appliance.dataDir, 'tls', 'ca.pem'),
        EMAIL: ADMIN.email,
        PASSWORD_FILE: passwordFile,
      },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const created = JSON.parse(out);
    assert.match(created.link, new RegExp(`^${origin}/c#[A-Za-z0-9_-]{20,}$`));
    assert.match(created.pin, /^\d{6}$/);
    assert.equal(created.session.customer_reference, 'TICKET-4711');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
