// The technician's console: setup, sign-in, sessions, and the live view of one session.
import { $, show, api, negotiate, signaling, showChat, chatForm } from '/assets/common.js';


const STATUS_TEXT = {
  waiting: 'Waiting for the customer',
  joined: 'The customer opened the invitation',
  consented: 'The customer is sharing — connecting…',
  live: 'Live',
  declined: 'The customer declined to share the camera',
  ended: 'Session ended',
};
const END_TEXT = {
  technician: 'ended by the technician',
  customer: 'ended by the customer',
  expired: 'expired',
  shutdown: 'the appliance was shut down',
};

let current = null; // { id, signal, pc, resource }

// Exposed for diagnostics and the browser tests.
window.sightline = {
  get pc() { return current?.pc ?? null; },
  get sessionId() { return current?.id ?? null; },
};

let me = null;

async function start() {
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
    $('#enrol-why').textContent = 'Your group requires two-factor sign-in. Scan the QR code with an authenticator app, or type the secret, then enter the 6-digit code it shows.';
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
  if (e.code !== 'locked' || !e.body?.locked_until_ms) return e.message;
  const until = new Date(e.body.locked_until_ms).toLocaleTimeString();
  return `Too many failed sign-ins. You can try again at ${until}.`;
}

async function dashboard() {
  show('dashboard');
  const list = $('#session-list');
  list.replaceChildren();
  const params = new URLSearchParams();
  if ($('#history-state').value) params.set('state', $('#history-state').value);
  if ($('#history-since').value) params.set('since_ms', String(Date.parse(`${$('#history-since').value}T00:00:00`)));
  $('#history-csv').href = `/api/sessions.csv?${params}`;
  const sessions = await api(`/sessions?${params}`).catch(() => []);
  for (const s of sessions) {
    const item = document.createElement('li');
    const when = new Date(s.created_ms).toLocaleString();
    item.textContent = s.customer_reference ? `${when} · ${s.customer_reference}` : when;
    const state = document.createElement('span');
    state.className = 'status';
    state.dataset.state = s.state;
    state.textContent = STATUS_TEXT[s.state] ?? s.state;
    item.append(state);
    list.append(item);
  }
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
    $('#setup-error').textContent = e.message;
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
    $('#change-password-error').textContent = e.message;
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
    $('#enrol-error').textContent = e.message;
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
    try { await handler(); } catch (e) { $('#users-error').textContent = e.message; }
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
    const status = !u.active ? 'inactive' : locked ? `locked until ${new Date(u.locked_until_ms).toLocaleTimeString()}` : 'active';
    row.append(cell(u.email), cell(u.display_name), cell(u.role === 'account_admin' ? 'Admin' : 'Technician'),
      cell(u.group_ids.map(groupName).join(', ')), cell(u.two_factor_enabled ? 'on' : 'off'), cell(status));
    const actions = document.createElement('td');
    const patch = (body) => api(`/users/${u.id}`, { method: 'PATCH', body }).then(users);
    actions.append(
      action('Rename', async () => { const name = prompt('Name', u.display_name); if (name) await patch({ display_name: name }); }),
      action(u.role === 'account_admin' ? 'Make technician' : 'Make admin', () => patch({ role: u.role === 'account_admin' ? 'technician' : 'account_admin' })),
      action('Groups', async () => {
        const names = prompt('Groups (comma-separated names)', u.group_ids.map(groupName).join(', '));
        if (names === null) return;
        const ids = names.split(',').map((n) => n.trim()).filter(Boolean)
          .map((n) => groupCache.find((g) => g.name === n)?.id ?? n);
        await patch({ group_ids: ids });
      }),
      action(u.active ? 'Deactivate' : 'Activate', () => patch({ active: !u.active })),
      action('Unlock', () => api(`/users/${u.id}/unlock`, { method: 'POST' }).then(users)),
      action('Reset password', async () => {
        const password = prompt(`New temporary password for ${u.email} (they must change it at next sign-in)`);
        if (password) await api(`/users/${u.id}/reset-password`, { method: 'POST', body: { password } }).then(users);
      }),
      action('Reset 2FA', () => api(`/users/${u.id}/reset-2fa`, { method: 'POST' }).then(users)),
      action('Delete', async () => { if (confirm(`Delete ${u.email}?`)) await api(`/users/${u.id}`, { method: 'DELETE' }).then(users); }, 'danger'),
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
    $('#users-error').textContent = e.message;
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
        .catch((e) => { $('#groups-error').textContent = e.message; }));
      td.append(box);
      row.append(td);
    }
    const td = document.createElement('td');
    const del = document.createElement('button');
    del.textContent = 'Delete';
    del.className = 'danger';
    del.addEventListener('click', () => api(`/groups/${g.id}`, { method: 'DELETE' }).then(groups));
    td.append(del);
    row.append(td);
    return row;
  }));
}

$('#group-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('#groups-error').textContent = '';
  try {
    await api('/groups', { method: 'POST', body: { name: $('#ng-name').value, require_2fa: $('#ng-2fa').checked, see_group_history: $('#ng-history').checked } });
    event.target.reset();
    groups();
  } catch (e) {
    $('#groups-error').textContent = e.message;
  }
});

async function account() {
  show('account');
  const a = await api('/account');
  $('#pol-min').value = a.policy.password_min_length;
  $('#pol-idle').value = a.policy.idle_timeout_mins;
  $('#pol-abs').value = a.policy.absolute_timeout_hours;
  $('#sub-seats').value = a.subscription.seats;
  $('#sub-end').value = a.subscription.ends_ms ? new Date(a.subscription.ends_ms).toISOString().slice(0, 10) : '';
}

async function saveAccount(body) {
  $('#account-error').textContent = '';
  $('#account-saved').textContent = '';
  try {
    await api('/account', { method: 'PATCH', body });
    $('#account-saved').textContent = 'Saved.';
  } catch (e) {
    $('#account-error').textContent = e.message;
  }
}

$('#policy-form').addEventListener('submit', (event) => {
  event.preventDefault();
  saveAccount({ policy: { password_min_length: Number($('#pol-min').value), idle_timeout_mins: Number($('#pol-idle').value), absolute_timeout_hours: Number($('#pol-abs').value) } });
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
    row.append(cell(new Date(e.at_ms).toLocaleString()), cell(e.kind.replaceAll('_', ' ')),
      cell(names[e.actor] ?? e.actor ?? ''), cell(e.source ?? ''), cell(e.detail));
    return row;
  }));
}

$('#audit-form').addEventListener('submit', (event) => { event.preventDefault(); audit(); });

function security() {
  show('security');
  $('#security-2fa').textContent = me.two_factor_enabled ? 'Two-factor sign-in is on.' : 'Two-factor sign-in is off.';
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
    $('#dashboard-error').textContent = e.message;
  }
});

chatForm($('#chat-form'), $('#chat-text'), (message) => current?.signal.send(message));

$('#copy-link').addEventListener('click', () => {
  navigator.clipboard?.writeText($('#invite-link').textContent).catch(() => {});
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
  let text = STATUS_TEXT[session.state] ?? session.state;
  if (session.state === 'ended' && (reason ?? session.end_reason)) {
    text += ` (${END_TEXT[reason ?? session.end_reason]})`;
  } else if (session.paused && session.state !== 'declined') {
    text = 'The customer paused the camera';
  } else if (!session.customer_connected && ['consented', 'live'].includes(session.state)) {
    text = 'The customer is disconnected';
  }
  status.textContent = text;
  $('#invite').hidden = session.state !== 'waiting';
  $('#end-session').disabled = session.state === 'ended';
}

async function openSession(created) {
  closeSession();
  show('session');
  const { session } = created;
  $('#invite-link').textContent = created.link;
  $('#invite-pin').textContent = created.pin;
  $('#join-url').textContent = created.join_url;
  $('#invite-qr').src = created.qr_svg;
  $('#invite-expiry').textContent = `Valid until ${new Date(session.invitation_expires_ms).toLocaleTimeString()}`;
  setStatus(session);

  $('#chat-lines').replaceChildren();
  const signal = signaling((message) => {
    if (message.type === 'state') setStatus(message.session);
    if (message.type === 'chat') showChat($('#chat-lines'), [message.line]);
    if (message.type === 'transcript') showChat($('#chat-lines'), message.lines);
    if (message.type === 'ended') {
      setStatus({ state: 'ended' }, message.reason);
      current?.pc?.close();
    }
  });
  const pc = new RTCPeerConnection();
  current = { id: session.id, signal, pc, resource: null };
  await signal.opened;
  signal.send({ type: 'watch', session_id: session.id });

  // Receive the customer's media (WHEP). The relay forwards it once the customer shares.
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const stream = new MediaStream();
  $('#remote-video').srcObject = stream;
  pc.addEventListener('track', (event) => stream.addTrack(event.track));
  current.resource = await negotiate(pc, `/api/sessions/${session.id}/whep`);
}

function closeSession() {
  if (!current) return;
  current.signal.close();
  current.pc.close();
  if (current.resource) {
    fetch(current.resource, { method: 'DELETE', headers: { 'x-sightline-csrf': '1' } }).catch(() => {});
  }
  current = null;
  $('#remote-video').srcObject = null;
}

start();
