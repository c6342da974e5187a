// The technician's console: setup, sign-in, sessions, and the live view of one session.
import { $, show, api, negotiate, signaling, showChat, chatForm, keepConnected, digest } from '/assets/common.js';
import { t, translate, languagePicker, onLanguageChange, errorText, when, time } from '/assets/i18n.js';
import { render, normalised } from '/assets/draw.js';

let current = null; // { id, signal, pc, resource, session, ... }

// Exposed for diagnostics and the browser tests.
window.sightline = {
  get pc() { return current?.pc ?? null; },
  get sessionId() { return current?.id ?? null; },
  get session() { return current?.session ?? null; },
  get frozenDigest() { return current?.frozenDigest ?? null; },
  get shapes() { return shapes; },
};

let me = null;

onLanguageChange(() => {
  if (current?.session) setStatus(current.session);
  if (!$('#dashboard').hidden) dashboard();
});

async function start() {
  languagePicker($('#language'));
  translate();
  const setup = await api('/setup');
  if (setup.needed) return show('setup');
  try {
    proceed(await api('/me'));
  } catch {
    show('login');
  }
}

// Takes the user to whatever their sign-in still needs, or into the console.
async function proceed(user) {
  me = user;
  if (user.stage === 'second_factor') return show('second-factor');
  if (user.stage === 'change_password') {
    $('#change-password-why').hidden = false;
    return show('change-password');
  }
  if (user.stage === 'enrol_two_factor') {
    $('#enrol-why').textContent = t('js.enrol-required');
    return startEnrolment();
  }
  $('#who').hidden = false;
  $('#nav').hidden = false;
  $('#admin-nav').hidden = user.role !== 'account_admin';
  $('#who-name').textContent = user.display_name;
  $('#who-org').textContent = user.organisation;
  dashboard();
}

function lockoutText(e) {
  if (e.code !== 'locked' || !e.body?.locked_until_ms) return errorText(e);
  const until = time(e.body.locked_until_ms);
  return t('js.locked', { until });
}

async function dashboard() {
  show('dashboard');
  const list = $('#session-list');
  list.replaceChildren();
  const params = new URLSearchParams();
  if ($('#history-state').value) params.set('state', $('#history-state').value);
  if ($('#history-since').value) params.set('since_ms', String(Date.parse(`${$('#history-since').value}T00:00:00`)));
  if ($('#history-technician').value) params.set('technician_id', $('#history-technician').value);
  const technicians = $('#history-technician');
  if (technicians.dataset.for !== me.user_id) {
    // Whose sessions one may filter by: oneself and the colleagues of the account.
    technicians.dataset.for = me.user_id;
    technicians.length = 1;
    const people = [{ id: me.user_id, display_name: me.display_name }, ...await api('/colleagues').catch(() => [])];
    technicians.append(...people.map((p) => new Option(p.display_name, p.id)));
  }
  $('#history-csv').href = `/api/sessions.csv?${params}`;
  const sessions = await api(`/sessions?${params}`).catch(() => []);
  for (const s of sessions) {
    const item = document.createElement('li');
    item.dataset.session = s.id;
    const created = when(s.created_ms);
    const invited = s.technician_id !== me?.user_id ? ` · ${s.technician_name}` : '';
    const label = document.createElement('span');
    label.textContent = (s.customer_reference ? `${created} · ${s.customer_reference}` : created) + invited;
    const state = document.createElement('span');
    state.className = 'status';
    state.dataset.state = s.state;
    state.textContent = t(`status.${s.state}`);
    const buttons = document.createElement('span');
    if (s.state !== 'ended') {
      const join = document.createElement('button');
      join.className = 'open-session';
      join.textContent = t('dashboard.open');
      join.addEventListener('click', () => openSession({ session: s }));
      buttons.append(join);
    }
    const record = document.createElement('button');
    record.className = 'show-record';
    record.textContent = t('dashboard.record');
    record.addEventListener('click', () => showRecord(s.id));
    buttons.append(record);
    item.append(label, state, buttons);
    list.append(item);
  }
  if (!sessions.length) list.append(emptyNote('li', params.toString() ? 'empty.history-filtered' : 'empty.history'));
}

$('#history-filter').addEventListener('submit', (event) => {
  event.preventDefault();
  dashboard();
});

$('#setup-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('#setup-error').textContent = '';
  try {
    const user = await api('/setup', {
      method: 'POST',
      body: {
        code: $('#setup-code').value,
        organisation: $('#setup-org').value,
        display_name: $('#setup-name').value,
        email: $('#setup-email').value,
        password: $('#setup-password').value,
      },
    });
    proceed(user);
  } catch (e) {
    $('#setup-error').textContent = errorText(e);
  }
});

$('#login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('#login-error').textContent = '';
  try {
    const user = await api('/login', {
      method: 'POST',
      body: { email: $('#login-email').value, password: $('#login-password').value },
    });
    $('#cp-current').value = $('#login-password').value;
    proceed(user);
  } catch (e) {
    $('#login-error').textContent = lockoutText(e);
  }
});

$('#second-factor-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('#second-factor-error').textContent = '';
  try {
    proceed(await api('/login/second-factor', { method: 'POST', body: { code: $('#second-factor-code').value } }));
  } catch (e) {
    $('#second-factor-error').textContent = lockoutText(e);
    if (e.code === 'locked') show('login');
  }
});

$('#change-password-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('#change-password-error').textContent = '';
  try {
    const user = await api('/me/password', { method: 'POST', body: { current: $('#cp-current').value, new: $('#cp-new').value } });
    $('#cp-current').value = $('#cp-new').value = '';
    proceed(user);
  } catch (e) {
    $('#change-password-error').textContent = errorText(e);
  }
});

async function startEnrolment() {
  const enrolment = await api('/me/totp', { method: 'POST' });
  $('#enrol-qr').src = enrolment.qr_svg;
  $('#enrol-secret').textContent = enrolment.secret;
  $('#enrol-code').value = '';
  show('enrol');
}

$('#enrol-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('#enrol-error').textContent = '';
  try {
    const result = await api('/me/totp/confirm', { method: 'POST', body: { code: $('#enrol-code').value } });
    const list = $('#recovery-codes');
    list.replaceChildren(...result.recovery_codes.map((code) => {
      const item = document.createElement('li');
      item.innerHTML = '<code></code>';
      item.firstChild.textContent = code;
      return item;
    }));
    me = result.user;
    show('recovery');
  } catch (e) {
    $('#enrol-error').textContent = errorText(e);
  }
});

$('#recovery-done').addEventListener('click', () => proceed(me));

$('#logout').addEventListener('click', async () => {
  await api('/logout', { method: 'POST' }).catch(() => {});
  location.reload();
});

for (const button of document.querySelectorAll('[data-nav]')) {
  button.addEventListener('click', () => {
    closeSession();
    const view = button.dataset.nav;
    ({ dashboard, users, groups, account, audit, security })[view]();
  });
}

// ----- Administration -----

let groupCache = [];

async function loadGroups() {
  groupCache = await api('/groups');
  return groupCache;
}

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

function action(label, handler, className = '') {
  const button = document.createElement('button');
  button.textContent = label;
  button.className = className;
  button.addEventListener('click', async () => {
    $('#users-error').textContent = '';
    try { await handler(); } catch (e) { $('#users-error').textContent = errorText(e); }
  });
  return button;
}

async function users() {
  show('users');
  const [list] = await Promise.all([api('/users'), loadGroups()]);
  const groupName = (id) => groupCache.find((g) => g.id === id)?.name ?? id;
  $('#nu-groups').replaceChildren(...groupCache.map((g) => {
    const label = document.createElement('label');
    label.className = 'checkbox';
    label.innerHTML = '<input type="checkbox">';
    label.firstChild.value = g.id;
    label.append(g.name);
    return label;
  }));
  $('#user-rows').replaceChildren(...list.map((u) => {
    const row = document.createElement('tr');
    row.dataset.email = u.email;
    const locked = u.locked_until_ms && u.locked_until_ms > Date.now();
    const status = !u.active ? t('js.inactive') : locked ? t('js.locked-until', { time: time(u.locked_until_ms) }) : t('js.active');
    row.append(cell(u.email), cell(u.display_name), cell(t(u.role === 'account_admin' ? 'js.admin' : 'js.technician')),
      cell(u.group_ids.map(groupName).join(', ')), cell(t(u.two_factor_enabled ? 'js.on' : 'js.off')), cell(status));
    const actions = document.createElement('td');
    const patch = (body) => api(`/users/${u.id}`, { method: 'PATCH', body }).then(users);
    actions.append(
      action(t('js.rename'), async () => { const name = prompt(t('js.name'), u.display_name); if (name) await patch({ display_name: name }); }),
      action(t(u.role === 'account_admin' ? 'js.make-technician' : 'js.make-admin'), () => patch({ role: u.role === 'account_admin' ? 'technician' : 'account_admin' })),
      action(t('js.groups'), async () => {
        const names = prompt(t('js.groups-prompt'), u.group_ids.map(groupName).join(', '));
        if (names === null) return;
        const ids = names.split(',').map((n) => n.trim()).filter(Boolean)
          .map((n) => groupCache.find((g) => g.name === n)?.id ?? n);
        await patch({ group_ids: ids });
      }),
      action(t(u.active ? 'js.deactivate' : 'js.activate'), () => patch({ active: !u.active })),
      action(t('js.unlock'), () => api(`/users/${u.id}/unlock`, { method: 'POST' }).then(users)),
      action(t('js.reset-password'), async () => {
        const password = prompt(t('js.reset-password-prompt', { email: u.email }));
        if (password) await api(`/users/${u.id}/reset-password`, { method: 'POST', body: { password } }).then(users);
      }),
      action(t('js.reset-2fa'), () => api(`/users/${u.id}/reset-2fa`, { method: 'POST' }).then(users)),
      action(t('js.delete'), async () => { if (confirm(t('js.delete-confirm', { email: u.email }))) await api(`/users/${u.id}`, { method: 'DELETE' }).then(users); }, 'danger'),
    );
    row.append(actions);
    return row;
  }));
}

$('#user-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('#users-error').textContent = '';
  try {
    await api('/users', {
      method: 'POST',
      body: {
        email: $('#nu-email').value,
        display_name: $('#nu-name').value,
        role: $('#nu-role').value,
        password: $('#nu-password').value,
        group_ids: [...document.querySelectorAll('#nu-groups input:checked')].map((i) => i.value),
      },
    });
    event.target.reset();
    users();
  } catch (e) {
    $('#users-error').textContent = errorText(e);
  }
});

async function groups() {
  show('groups');
  await loadGroups();
  $('#group-rows').replaceChildren(...groupCache.map((g) => {
    const row = document.createElement('tr');
    row.dataset.name = g.name;
    row.append(cell(g.name));
    for (const key of ['require_2fa', 'see_group_history']) {
      const td = document.createElement('td');
      const box = document.createElement('input');
      box.type = 'checkbox';
      box.checked = g[key];
      box.dataset.setting = key;
      box.addEventListener('change', () => api(`/groups/${g.id}`, { method: 'PATCH', body: { [key]: box.checked } })
        .catch((e) => { $('#groups-error').textContent = errorText(e); }));
      td.append(box);
      row.append(td);
    }
    const td = document.createElement('td');
    const del = document.createElement('button');
    del.textContent = t('js.delete');
    del.className = 'danger';
    del.addEventListener('click', () => api(`/groups/${g.id}`, { method: 'DELETE' }).then(groups));
    td.append(del);
    row.append(td);
    return row;
  }));
  if (!groupCache.length) $('#group-rows').append(emptyRow(4, 'empty.groups'));
}

$('#group-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('#groups-error').textContent = '';
  try {
    await api('/groups', { method: 'POST', body: { name: $('#ng-name').value, require_2fa: $('#ng-2fa').checked, see_group_history: $('#ng-history').checked } });
    event.target.reset();
    groups();
  } catch (e) {
    $('#groups-error').textContent = errorText(e);
  }
});

async function account() {
  show('account');
  const a = await api('/account');
  $('#pol-min').value = a.policy.password_min_length;
  $('#pol-idle').value = a.policy.idle_timeout_mins;
  $('#pol-abs').value = a.policy.absolute_timeout_hours;
  $('#pol-recording').checked = a.policy.allow_recording;
  $('#pol-retention').value = a.policy.session_retention_days;
  $('#sub-seats').value = a.subscription.seats;
  $('#sub-end').value = a.subscription.ends_ms ? new Date(a.subscription.ends_ms).toISOString().slice(0, 10) : '';
}

async function saveAccount(body) {
  $('#account-error').textContent = '';
  $('#account-saved').textContent = '';
  try {
    await api('/account', { method: 'PATCH', body });
    $('#account-saved').textContent = t('js.saved');
  } catch (e) {
    $('#account-error').textContent = errorText(e);
  }
}

$('#policy-form').addEventListener('submit', (event) => {
  event.preventDefault();
  saveAccount({ policy: { password_min_length: Number($('#pol-min').value), idle_timeout_mins: Number($('#pol-idle').value), absolute_timeout_hours: Number($('#pol-abs').value), allow_recording: $('#pol-recording').checked, session_retention_days: Number($('#pol-retention').value) } });
});

$('#subscription-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const end = $('#sub-end').value;
  saveAccount({ subscription: { seats: Number($('#sub-seats').value), ends_ms: end ? Date.parse(`${end}T00:00:00Z`) : null } });
});

const AUDIT_KINDS = ['setup_completed', 'login_succeeded', 'login_failed', 'login_locked', 'lockout_ended', 'logout',
  'signed_out_everywhere', 'second_factor_failed', 'recovery_code_used', 'two_factor_enrolled', 'two_factor_reset',
  'password_changed', 'password_change_failed', 'password_reset', 'user_created', 'user_updated', 'user_deleted',
  'group_changed', 'account_settings_changed', 'access_denied'];

async function audit() {
  show('audit');
  if ($('#audit-kind').options.length === 1) {
    for (const kind of AUDIT_KINDS) $('#audit-kind').append(new Option(kind.replaceAll('_', ' '), kind));
    for (const u of await api('/users')) $('#audit-user').append(new Option(u.email, u.id));
  }
  const params = new URLSearchParams();
  if ($('#audit-kind').value) params.set('kind', $('#audit-kind').value);
  if ($('#audit-user').value) params.set('user_id', $('#audit-user').value);
  const entries = await api(`/audit?${params}`);
  const names = Object.fromEntries([...$('#audit-user').options].map((o) => [o.value, o.text]));
  $('#audit-rows').replaceChildren(...entries.map((e) => {
    const row = document.createElement('tr');
    row.dataset.kind = e.kind;
    row.append(cell(when(e.at_ms)), cell(e.kind.replaceAll('_', ' ')),
      cell(names[e.actor] ?? e.actor ?? ''), cell(e.source ?? ''), cell(e.detail));
    return row;
  }));
}

$('#audit-form').addEventListener('submit', (event) => { event.preventDefault(); audit(); });

function security() {
  show('security');
  $('#security-2fa').textContent = t(me.two_factor_enabled ? 'js.2fa-on' : 'js.2fa-off');
  $('#security-enrol').hidden = me.two_factor_enabled;
}

$('#security-enrol').addEventListener('click', startEnrolment);
$('#security-password').addEventListener('click', () => {
  $('#change-password-why').hidden = true;
  show('change-password');
});
$('#security-everywhere').addEventListener('click', async () => {
  await api('/logout/everywhere', { method: 'POST' }).catch(() => {});
  location.reload();
});

$('#new-session').addEventListener('click', async () => {
  $('#dashboard-error').textContent = '';
  try {
    const reference = $('#customer-ref').value.trim();
    const created = await api('/sessions', { method: 'POST', body: reference ? { customer_reference: reference } : {} });
    $('#customer-ref').value = '';
    openSession(created);
  } catch (e) {
    $('#dashboard-error').textContent = errorText(e);
  }
});

chatForm($('#chat-form'), $('#chat-text'), (message) => current?.signal.send(message));

$('#copy-link').addEventListener('click', async () => {
  const note = $('#copy-note');
  try {
    await navigator.clipboard.writeText($('#invite-link').textContent);
    note.textContent = t('session.copied');
  } catch {
    // No clipboard access (an http page, a denied permission): select it for the user.
    getSelection().selectAllChildren($('#invite-link'));
    note.textContent = t('session.copy-by-hand');
  }
  clearTimeout(note.timer);
  note.timer = setTimeout(() => { note.textContent = ''; }, 4000);
});

$('#end-session').addEventListener('click', async () => {
  if (!current) return;
  current.signal.send({ type: 'end' });
});

$('#back').addEventListener('click', () => {
  closeSession();
  dashboard();
});

function setStatus(session, reason) {
  const status = $('#session-status');
  status.dataset.state = session.state;
  let text = t(`status.${session.state}`);
  if (session.state === 'ended' && (reason ?? session.end_reason)) {
    text += ` (${t(`end.${reason ?? session.end_reason}`)})`;
  } else if (session.paused && session.state !== 'declined') {
    text = t('status.paused');
  } else if (session.customer_connected === false && ['consented', 'live'].includes(session.state)) {
    text = t('status.disconnected');
  }
  status.textContent = text;
  $('#invite').hidden = session.state !== 'waiting' || !current?.invitation;
  $('#end-session').disabled = session.state === 'ended';
  if (!session.id || !current) return;
  current.session = session;
  $('#recording-badge').hidden = !session.recording;
  const observer = session.colleagues?.some((c) => c.user_id === me?.user_id && c.role === 'observer');
  current.observer = observer;
  showToolsFor(session, observer);
  $('#tools').hidden = observer;
  $('#camera-tools').hidden = observer;
  const canRecord = session.recording_allowed && !observer;
  $('#record').hidden = !canRecord;
  $('#record').disabled = !session.consent?.recording || session.state === 'ended';
  $('#record').setAttribute('aria-pressed', String(session.recording));
  $('#record').textContent = t(session.recording ? 'session.record-stop' : 'session.record-start');
  $('#record-note').textContent = canRecord && !session.consent?.recording && session.state !== 'ended' ? t('session.record-no-consent') : '';
  $('#colleague-tools').hidden = !(session.technician_id === me?.user_id || me?.role === 'account_admin') || session.state === 'ended';
  showColleagues(session.colleagues ?? []);
  showFrozen(session.frozen);
  showCustomer(session);
}

// The picture tools work on a picture; the chat while someone can read it. After the
// end (or a decline) they are off, and the page says why instead of letting a message
// or a drawing vanish.
function showToolsFor(session, observer) {
  const state = session.state;
  const placeholder = { waiting: 'session.placeholder', joined: 'session.placeholder', declined: 'session.placeholder-declined' }[state];
  $('#stage-placeholder').hidden = !placeholder;
  $('#stage-placeholder').textContent = placeholder ? t(placeholder) : '';
  const picture = ['consented', 'live'].includes(state) && !observer;
  current.pictureTools = picture;
  for (const el of document.querySelectorAll('#tools button, #draw-color')) el.disabled = !picture;
  showCapabilities(current.capabilities ?? { cameras: 0, torch: null, zoom: null });
  if (!picture && tool) {
    tool = null;
    for (const b of document.querySelectorAll('#tools [data-tool]')) b.setAttribute('aria-pressed', 'false');
    $('#stage').classList.remove('drawing');
  }
  const chat = !['declined', 'ended'].includes(state);
  $('#chat-text').disabled = !chat;
  $('#chat-form button').disabled = !chat;
  const why = {
    ended: 'session.tools-ended',
    declined: 'session.tools-declined',
    waiting: 'session.tools-waiting',
    joined: 'session.tools-waiting',
  }[state];
  $('#tools-note').textContent = why && !observer ? t(why) : '';
}

// Who the customer is, as far as the technician noted it and the browser said; and, if
// another device took over the invitation, that it did and had to agree again.
function showCustomer(session) {
  const parts = [];
  if (session.customer_reference) parts.push(t('session.customer-reference', { reference: session.customer_reference }));
  if (session.customer_device) parts.push(t('session.customer-device', { device: session.customer_device }));
  $('#session-customer').textContent = parts.join(' · ');
  const note = $('#device-note');
  note.hidden = !(session.customer_devices > 1);
  if (!note.hidden) note.textContent = t('session.new-device', { n: session.customer_devices });
}

// ---------------------------------------------------------------------------------------
// Drawing on the picture

let tool = null;
let shapes = [];
let pointer = null;
let sketch = null; // the shape being drawn

function stageMedia() {
  return $('#frozen').hidden ? $('#remote-video') : $('#frozen');
}

function redraw() {
  const all = sketch ? [...shapes, sketch] : shapes;
  render($('#overlay'), stageMedia(), all, pointer);
}
window.addEventListener('resize', redraw);
$('#remote-video').addEventListener('resize', redraw);

for (const button of document.querySelectorAll('#tools [data-tool]')) {
  button.addEventListener('click', () => {
    tool = tool === button.dataset.tool ? null : button.dataset.tool;
    for (const b of document.querySelectorAll('#tools [data-tool]')) b.setAttribute('aria-pressed', String(b.dataset.tool === tool));
    $('#stage').classList.toggle('drawing', tool !== null);
    if (tool !== 'pointer' && pointer) current?.signal.send({ type: 'pointer', at: null });
  });
}

const overlay = $('#overlay');
overlay.addEventListener('pointerdown', (event) => {
  const at = normalised(event, overlay, stageMedia());
  if (!at || !tool || !current) return;
  const color = $('#draw-color').value;
  if (tool === 'text') {
    const text = prompt(t('session.label-prompt'));
    if (text?.trim()) current.signal.send({ type: 'draw', shape: { kind: 'text', color, at, text: text.trim() } });
    return;
  }
  if (tool === 'pointer') {
    current.signal.send({ type: 'pointer', at });
    return;
  }
  overlay.setPointerCapture(event.pointerId);
  sketch = tool === 'pen' ? { kind: 'pen', color, points: [at] } : { kind: tool, color, from: at, to: at };
  redraw();
});
overlay.addEventListener('pointermove', (event) => {
  const at = normalised(event, overlay, stageMedia());
  if (!at || !current) return;
  if (tool === 'pointer' && event.buttons === 0) {
    current.signal.send({ type: 'pointer', at });
    return;
  }
  if (!sketch) return;
  if (sketch.kind === 'pen') {
    if (sketch.points.length < 2000) sketch.points.push(at);
  } else {
    sketch.to = at;
  }
  redraw();
});
overlay.addEventListener('pointerup', () => {
  if (sketch && current) current.signal.send({ type: 'draw', shape: sketch });
  sketch = null;
});
overlay.addEventListener('pointerleave', () => {
  if (tool === 'pointer') current?.signal.send({ type: 'pointer', at: null });
});
$('#undo').addEventListener('click', () => current?.signal.send({ type: 'undo' }));
$('#clear-drawing').addEventListener('click', () => current?.signal.send({ type: 'clear_drawing' }));
$('#freeze').addEventListener('click', () => {
  const frozen = $('#freeze').getAttribute('aria-pressed') !== 'true';
  current?.signal.send({ type: 'freeze', frozen });
});
$('#snapshot').addEventListener('click', () => current?.signal.send({ type: 'snapshot' }));

async function showFrozen(stillId) {
  const img = $('#frozen');
  $('#freeze').setAttribute('aria-pressed', String(Boolean(stillId)));
  $('#freeze').textContent = t(stillId ? 'session.unfreeze' : 'session.freeze');
  if (!stillId) {
    img.hidden = true;
    $('#remote-video').hidden = false;
    current && (current.frozenDigest = null);
    redraw();
    return;
  }
  if (img.dataset.still !== stillId) {
    img.dataset.still = stillId;
    const blob = await fetch(`/api/sessions/${current.id}/stills/${stillId}`).then((r) => r.blob());
    current.frozenDigest = await digest(blob);
    img.src = URL.createObjectURL(blob);
    await img.decode().catch(() => {});
  }
  img.hidden = false;
  $('#remote-video').hidden = true;
  redraw();
}

// A still with its annotations drawn over it.
function stillFigure(sessionId, still) {
  const figure = document.createElement('figure');
  figure.dataset.still = still.id;
  const stage = document.createElement('div');
  stage.className = 'stage';
  const img = document.createElement('img');
  img.alt = t('session.snapshot-alt');
  const canvas = document.createElement('canvas');
  stage.append(img, canvas);
  img.addEventListener('load', () => render(canvas, img, still.annotations ?? []));
  img.src = `/api/sessions/${sessionId}/stills/${still.id}`;
  const caption = document.createElement('figcaption');
  caption.textContent = `${time(still.at_ms)} · ${still.width}×${still.height}`;
  const open = document.createElement('button');
  open.className = 'still-open';
  open.textContent = t('ui.view-full-size');
  open.addEventListener('click', () => openStill(sessionId, still));
  stage.addEventListener('click', () => openStill(sessionId, still));
  figure.append(stage, caption, open);
  return figure;
}

// The full-resolution still, to read a serial number off it: fit to the window, zoom in
// steps or with the wheel, pan by dragging, download the original file.
const viewer = { scale: 1, fit: 1 };

function openStill(sessionId, still) {
  const img = $('#still-full');
  const url = `/api/sessions/${sessionId}/stills/${still.id}`;
  $('#still-viewer-info').textContent = `${time(still.at_ms)} · ${still.width}×${still.height}`;
  const download = $('#still-download');
  download.href = url;
  download.download = `sightline-${sessionId.slice(0, 8)}-${still.id.slice(0, 8)}.${still.content_type.split('/')[1] ?? 'jpg'}`;
  img.onload = () => {
    const pane = $('#still-pane');
    viewer.fit = Math.min(1, pane.clientWidth / img.naturalWidth, pane.clientHeight / img.naturalHeight) || 1;
    zoomTo(viewer.fit);
  };
  img.src = url;
  $('#still-viewer').showModal();
}

function zoomTo(scale, around) {
  const img = $('#still-full');
  const pane = $('#still-pane');
  const before = viewer.scale;
  viewer.scale = Math.min(8, Math.max(viewer.fit, scale));
  img.style.width = `${Math.round(img.naturalWidth * viewer.scale)}px`;
  $('#still-scale').textContent = `${Math.round(viewer.scale * 100)} %`;
  // Keep the point under the cursor (or the centre) where it was.
  const [x, y] = around ?? [pane.clientWidth / 2, pane.clientHeight / 2];
  const ratio = viewer.scale / before;
  pane.scrollLeft = (pane.scrollLeft + x) * ratio - x;
  pane.scrollTop = (pane.scrollTop + y) * ratio - y;
}

$('#still-fit').addEventListener('click', () => zoomTo(viewer.fit));
$('#still-actual').addEventListener('click', () => zoomTo(1));
$('#still-zoom-in').addEventListener('click', () => zoomTo(viewer.scale * 1.5));
$('#still-zoom-out').addEventListener('click', () => zoomTo(viewer.scale / 1.5));
$('#still-close').addEventListener('click', () => $('#still-viewer').close());
$('#still-pane').addEventListener('wheel', (event) => {
  event.preventDefault();
  const box = $('#still-pane').getBoundingClientRect();
  zoomTo(viewer.scale * (event.deltaY < 0 ? 1.25 : 0.8), [event.clientX - box.left, event.clientY - box.top]);
}, { passive: false });
{
  let drag = null;
  const pane = $('#still-pane');
  pane.addEventListener('pointerdown', (event) => {
    drag = { x: event.clientX, y: event.clientY, left: pane.scrollLeft, top: pane.scrollTop };
    pane.setPointerCapture(event.pointerId);
  });
  pane.addEventListener('pointermove', (event) => {
    if (!drag) return;
    pane.scrollLeft = drag.left - (event.clientX - drag.x);
    pane.scrollTop = drag.top - (event.clientY - drag.y);
  });
  pane.addEventListener('pointerup', () => { drag = null; });
}

// ---------------------------------------------------------------------------------------
// The customer's camera, driven from here

function showCapabilities(c) {
  current.capabilities = c;
  const off = !current.pictureTools;
  $('#cam-switch').disabled = off || c.cameras < 2;
  $('#cam-switch').classList.toggle('unavailable', c.cameras < 2);
  const torch = $('#cam-torch');
  torch.disabled = off || c.torch === null;
  torch.classList.toggle('unavailable', c.torch === null);
  torch.title = c.torch === null ? t('session.unavailable') : '';
  torch.setAttribute('aria-pressed', String(Boolean(c.torch)));
  const zoom = $('#cam-zoom');
  zoom.disabled = off || !c.zoom;
  zoom.title = c.zoom ? '' : t('session.unavailable');
  if (c.zoom) Object.assign(zoom, { min: c.zoom.min, max: c.zoom.max, step: c.zoom.step, value: c.zoom.value });
  $('#cam-info').textContent = [c.label, c.width && `${c.width}×${c.height}`].filter(Boolean).join(' · ');
}

$('#cam-switch').addEventListener('click', () => {
  const facing = current?.capabilities?.facing === 'user' ? 'environment' : 'user';
  current?.signal.send({ type: 'camera', facing });
});
$('#cam-torch').addEventListener('click', () => {
  current?.signal.send({ type: 'camera', torch: $('#cam-torch').getAttribute('aria-pressed') !== 'true' });
});
$('#cam-zoom').addEventListener('change', () => {
  current?.signal.send({ type: 'camera', zoom: Number($('#cam-zoom').value) });
});

$('#tech-mute').addEventListener('click', () => {
  if (!current?.microphone) return;
  current.muted = !current.muted;
  for (const track of current.microphone.getAudioTracks()) track.enabled = !current.muted;
  $('#tech-mute').textContent = t(current.muted ? 'unmute' : 'mute');
  current.signal.send({ type: 'mute', muted: current.muted });
});

$('#record').addEventListener('click', () => {
  current?.signal.send({ type: 'record', on: !current.session?.recording });
});

// ---------------------------------------------------------------------------------------
// Colleagues

function showColleagues(colleagues) {
  const list = $('#colleague-list');
  list.replaceChildren();
  for (const c of colleagues) {
    const item = document.createElement('li');
    item.dataset.user = c.user_id;
    item.textContent = `${c.name} · ${t(`role.${c.role}`)}`;
    if (current?.session?.technician_id === me?.user_id || me?.role === 'account_admin') {
      const remove = document.createElement('button');
      remove.textContent = t('remove');
      remove.addEventListener('click', () => api(`/sessions/${current.id}/colleagues/${c.user_id}`, { method: 'DELETE' }).catch((e) => { $('#session-error').textContent = errorText(e); }));
      item.append(remove);
    }
    list.append(item);
  }
}

async function loadColleagueChoices() {
  const select = $('#colleague-user');
  const people = await api('/colleagues').catch(() => []);
  select.replaceChildren(...people.map((p) => new Option(p.display_name, p.id)));
}

$('#invite-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('#session-error').textContent = '';
  try {
    await api(`/sessions/${current.id}/colleagues`, { method: 'POST', body: { user_id: $('#colleague-user').value, role: $('#colleague-role').value } });
  } catch (e) {
    $('#session-error').textContent = errorText(e);
  }
});

// ---------------------------------------------------------------------------------------
// The live view of one session

async function openSession(created) {
  closeSession();
  show('session');
  const { session } = created;
  current = { id: session.id, invitation: Boolean(created.link), signal: null, pc: null, resource: null, session };
  if (created.link) {
    $('#invite-link').textContent = created.link;
    $('#invite-pin').textContent = created.pin;
    $('#join-url').textContent = created.join_url;
    $('#invite-qr').src = created.qr_svg;
    $('#invite-expiry').textContent = t('session.valid-until', { time: time(session.invitation_expires_ms) });
  }
  shapes = [];
  pointer = null;
  $('#session-error').textContent = '';
  $('#snapshots').replaceChildren();
  $('#chat-lines').replaceChildren();
  $('#customer-muted').hidden = true;
  $('#bandwidth-note').hidden = true;
  current.capabilities = { cameras: 0, torch: null, zoom: null };
  setStatus(session);
  loadColleagueChoices();

  const signal = signaling((message) => {
    if (message.type === 'state') setStatus(message.session);
    if (message.type === 'chat') showChat($('#chat-lines'), [message.line]);
    if (message.type === 'transcript') showChat($('#chat-lines'), message.lines);
    if (message.type === 'drawing') { shapes = message.shapes; redraw(); }
    if (message.type === 'pointer') { pointer = message.at; redraw(); }
    if (message.type === 'capabilities') showCapabilities(message.capabilities);
    if (message.type === 'still' && message.still.purpose === 'snapshot') $('#snapshots').append(stillFigure(current.id, message.still));
    if (message.type === 'muted' && message.from === 'customer') $('#customer-muted').hidden = !message.muted;
    if (message.type === 'bandwidth') $('#bandwidth-note').hidden = message.video;
    if (message.type === 'error') $('#session-error').textContent = errorText(message);
    if (message.type === 'ended') {
      setStatus({ ...current.session, state: 'ended' }, message.reason);
      current?.pc?.close();
    }
  });
  current.signal = signal;
  watchVideo(current);
  await signal.opened;
  signal.send({ type: 'watch', session_id: session.id });

  await receiveMedia(session);
}

// Receives the customer's media (WHEP) and sends the technician's voice back on the
// audio line; a mere observer only listens.
async function receiveMedia(session) {
  const pc = new RTCPeerConnection();
  const previous = current.pc;
  current.pc = pc;
  previous?.close();
  pc.addTransceiver('video', { direction: 'recvonly' });
  const observer = session.colleagues?.some((c) => c.user_id === me?.user_id && c.role === 'observer');
  const microphone = observer ? null : current.microphone ?? await navigator.mediaDevices.getUserMedia({ audio: true }).catch(() => null);
  if (current?.pc !== pc) {
    for (const track of microphone?.getTracks() ?? []) track.stop();
    return;
  }
  current.microphone = microphone;
  $('#tech-mute').hidden = !microphone;
  $('#tech-mute').textContent = t(current.muted ? 'unmute' : 'mute');
  if (microphone) pc.addTransceiver(microphone.getAudioTracks()[0], { direction: 'sendrecv', streams: [microphone] });
  else pc.addTransceiver('audio', { direction: 'recvonly' });
  const video = new MediaStream();
  const audio = new MediaStream();
  $('#remote-video').srcObject = video;
  $('#remote-audio').srcObject = audio;
  pc.addEventListener('track', (event) => (event.track.kind === 'video' ? video : audio).addTrack(event.track));
  const mine = current;
  keepConnected(pc, {
    resource: () => mine.resource,
    fallback: () => receiveMedia(session),
    isCurrent: () => current === mine && mine.pc === pc,
  });
  current.resource = await negotiate(pc, `/api/sessions/${session.id}/whep`);
}

// A live picture counts as stopped when fewer than two frames were decoded in the last
// 1.5 s (a browser whose camera is gone may still send a keep-alive frame a second);
// checked every 250 ms, so the console says so within 2 s.
const STALL_MS = 1500;
const STALL_FRAMES = 2;

// Whether frames keep arriving: a live session whose picture stopped (the customer's
// network, a frozen camera) must not keep showing its last frame as "Live".
function watchVideo(mine) {
  const samples = [];
  mine.stallTimer = setInterval(async () => {
    const stats = await mine.pc?.getStats().catch(() => null);
    let frames = 0;
    stats?.forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') frames += r.framesDecoded ?? 0; });
    const now = performance.now();
    samples.push([now, frames]);
    while (samples.length > 1 && now - samples[1][0] >= STALL_MS) samples.shift();
    const [since, before] = samples[0];
    const s = mine.session ?? {};
    const expected = s.state === 'live' && !s.paused && !s.frozen && s.customer_connected !== false
      && $('#bandwidth-note').hidden;
    const stalled = expected && now - since >= STALL_MS - 300 && frames - before < STALL_FRAMES;
    if (current !== mine || stalled === Boolean(mine.stalled)) return;
    mine.stalled = stalled;
    $('#video-stalled').hidden = !stalled;
    $('#stage').classList.toggle('stalled', stalled);
    if (stalled) $('#session-status').textContent = t('status.stalled');
    else setStatus(mine.session);
  }, 250);
}

function closeSession() {
  if (!current) return;
  clearInterval(current.stallTimer);
  $('#video-stalled').hidden = true;
  $('#stage').classList.remove('stalled');
  current.signal?.close();
  current.pc?.close();
  for (const track of current.microphone?.getTracks() ?? []) track.stop();
  if (current.resource) {
    fetch(current.resource, { method: 'DELETE', headers: { 'x-sightline-csrf': '1' } }).catch(() => {});
  }
  current = null;
  $('#remote-video').srcObject = null;
  $('#remote-audio').srcObject = null;
  $('#frozen').hidden = true;
  $('#frozen').dataset.still = '';
  $('#remote-video').hidden = false;
}

// ---------------------------------------------------------------------------------------
// The record of a session

async function showRecord(id) {
  const r = await api(`/sessions/${id}/record`);
  show('record-view');
  const facts = $('#record-facts');
  facts.replaceChildren();
  const technicians = [r.technician_name, ...r.colleagues.map((c) => `${c.name} (${t(`role.${c.role}`)})`)].join(', ');
  for (const [key, value] of [
    ['record.technicians', technicians],
    ['record.reference', r.customer_reference ?? '—'],
    ['record.created', when(r.created_ms)],
    ['record.joined', when(r.joined_ms)],
    ['record.ended', when(r.ended_ms)],
    ['record.duration', r.duration_secs === null ? '—' : t('record.seconds', { n: r.duration_secs })],
    ['record.status', t(`status.${r.state}`)],
    ['record.device', r.customer_device ?? '—'],
  ]) {
    const dt = document.createElement('dt');
    dt.textContent = t(key);
    const dd = document.createElement('dd');
    dd.dataset.field = key;
    dd.textContent = value;
    facts.append(dt, dd);
  }
  const consent = $('#record-consent');
  consent.replaceChildren();
  for (const e of r.consent_log) {
    const row = document.createElement('tr');
    for (const text of [when(e.at_ms), t(`consent.${e.event}`), t(e.camera ? 'yes' : 'no'), t(e.microphone ? 'yes' : 'no'), t(e.recording ? 'yes' : 'no')]) {
      row.append(cell(text));
    }
    consent.append(row);
  }
  $('#record-chat').replaceChildren();
  showChat($('#record-chat'), r.transcript);
  $('#record-stills').replaceChildren(...r.stills.filter((s) => s.purpose === 'snapshot').map((s) => stillFigure(r.id, s)));
  $('#record-recordings').replaceChildren(...r.recordings.map((rec) => {
    const video = document.createElement('video');
    video.controls = true;
    video.preload = 'metadata';
    video.dataset.recording = rec.id;
    video.src = `/api/sessions/${r.id}/recordings/${rec.id}`;
    return video;
  }));
  if (!r.recordings.length) $('#record-recordings').append(emptyNote('p', 'empty.recordings'));
  if (!$('#record-stills').children.length) $('#record-stills').append(emptyNote('p', 'empty.snapshots'));
}

// What an empty list says instead of nothing.
function emptyNote(tag, key) {
  const note = document.createElement(tag);
  note.className = 'empty muted';
  note.textContent = t(key);
  return note;
}

function emptyRow(columns, key) {
  const row = document.createElement('tr');
  const td = document.createElement('td');
  td.colSpan = columns;
  td.className = 'empty muted';
  td.textContent = t(key);
  row.append(td);
  return row;
}

$('#record-back').addEventListener('click', () => {
  for (const video of document.querySelectorAll('#record-recordings video')) video.removeAttribute('src');
  dashboard();
});

start();
