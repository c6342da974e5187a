// The account admin's views: users, groups, the account's settings and the security log;
// and every user's own security settings.
import { $, show, api } from '/assets/common.js';
import { t, errorText, when, time } from '/assets/i18n.js';
import { state } from '/assets/console/state.js';
import { register } from '/assets/console/nav.js';
import { onSubmit, reporting, cell, emptyRow } from '/assets/console/ui.js';
import { startEnrolment } from '/assets/console/signin.js';

let groupCache = [];

async function loadGroups() {
  groupCache = await api('/groups');
  return groupCache;
}

function action(label, handler, className = '') {
  const button = document.createElement('button');
  button.textContent = label;
  button.className = className;
  button.addEventListener('click', () => reporting('#users-error', handler));
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
    const status = !u.active ? t('users.inactive') : locked ? t('users.locked-until', { time: time(u.locked_until_ms) }) : t('users.active');
    row.append(cell(u.email), cell(u.display_name), cell(t(u.role === 'account_admin' ? 'users.admin' : 'users.technician')),
      cell(u.group_ids.map(groupName).join(', ')), cell(t(u.two_factor_enabled ? 'users.on' : 'users.off')), cell(status));
    const actions = document.createElement('td');
    const patch = (body) => api(`/users/${u.id}`, { method: 'PATCH', body }).then(users);
    actions.append(
      action(t('users.rename'), async () => { const name = prompt(t('users.name'), u.display_name); if (name) await patch({ display_name: name }); }),
      action(t(u.role === 'account_admin' ? 'users.make-technician' : 'users.make-admin'), () => patch({ role: u.role === 'account_admin' ? 'technician' : 'account_admin' })),
      action(t('users.groups'), async () => {
        const names = prompt(t('users.groups-prompt'), u.group_ids.map(groupName).join(', '));
        if (names === null) return;
        const ids = names.split(',').map((n) => n.trim()).filter(Boolean)
          .map((n) => groupCache.find((g) => g.name === n)?.id ?? n);
        await patch({ group_ids: ids });
      }),
      action(t(u.active ? 'users.deactivate' : 'users.activate'), () => patch({ active: !u.active })),
      action(t('users.unlock'), () => api(`/users/${u.id}/unlock`, { method: 'POST' }).then(users)),
      action(t('users.reset-password'), async () => {
        const password = prompt(t('users.reset-password-prompt', { email: u.email }));
        if (password) await api(`/users/${u.id}/reset-password`, { method: 'POST', body: { password } }).then(users);
      }),
      action(t('users.reset-2fa'), () => api(`/users/${u.id}/reset-2fa`, { method: 'POST' }).then(users)),
      action(t('common.delete'), async () => { if (confirm(t('users.delete-confirm', { email: u.email }))) await api(`/users/${u.id}`, { method: 'DELETE' }).then(users); }, 'danger'),
    );
    row.append(actions);
    return row;
  }));
}

onSubmit('#user-form', '#users-error', async (event) => {
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
    del.textContent = t('common.delete');
    del.className = 'danger';
    del.addEventListener('click', () => api(`/groups/${g.id}`, { method: 'DELETE' }).then(groups));
    td.append(del);
    row.append(td);
    return row;
  }));
  if (!groupCache.length) $('#group-rows').append(emptyRow(4, 'empty.groups'));
}

onSubmit('#group-form', '#groups-error', async (event) => {
  await api('/groups', { method: 'POST', body: { name: $('#ng-name').value, require_2fa: $('#ng-2fa').checked, see_group_history: $('#ng-history').checked } });
  event.target.reset();
  groups();
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
  $('#account-saved').textContent = '';
  await api('/account', { method: 'PATCH', body });
  $('#account-saved').textContent = t('account.saved');
}

onSubmit('#policy-form', '#account-error', () => saveAccount({ policy: { password_min_length: Number($('#pol-min').value), idle_timeout_mins: Number($('#pol-idle').value), absolute_timeout_hours: Number($('#pol-abs').value), allow_recording: $('#pol-recording').checked, session_retention_days: Number($('#pol-retention').value) } }));

onSubmit('#subscription-form', '#account-error', () => {
  const end = $('#sub-end').value;
  return saveAccount({ subscription: { seats: Number($('#sub-seats').value), ends_ms: end ? Date.parse(`${end}T00:00:00Z`) : null } });
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
  const { me } = state;
  show('security');
  $('#security-2fa').textContent = t(me.two_factor_enabled ? 'security.2fa-on' : 'security.2fa-off');
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

register('users', users);
register('groups', groups);
register('account', account);
register('audit', audit);
register('security', security);
