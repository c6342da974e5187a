// Setup, sign-in, the second factor, changing the password and enrolling in two-factor
// sign-in: everything before the console proper.
import { $, show, api } from '/assets/common.js';
import { t, errorText, time } from '/assets/i18n.js';
import { state } from '/assets/console/state.js';
import { go } from '/assets/console/nav.js';
import { onSubmit } from '/assets/console/ui.js';

// Takes the user to whatever their sign-in still needs, or into the console.
export function proceed(user) {
  state.me = user;
  if (user.stage === 'second_factor') return show('second-factor');
  if (user.stage === 'change_password') {
    $('#change-password-why').hidden = false;
    return show('change-password');
  }
  if (user.stage === 'enrol_two_factor') {
    $('#enrol-why').textContent = t('enrol.enrol-required');
    return startEnrolment();
  }
  $('#who').hidden = false;
  $('#nav').hidden = false;
  $('#admin-nav').hidden = user.role !== 'account_admin';
  $('#who-name').textContent = user.display_name;
  $('#who-org').textContent = user.organisation;
  return go('dashboard');
}

function lockoutText(e) {
  if (e.code !== 'locked' || !e.body?.locked_until_ms) return errorText(e);
  const until = time(e.body.locked_until_ms);
  return t('login.locked', { until });
}

onSubmit('#setup-form', '#setup-error', async () => {
  proceed(await api('/setup', {
    method: 'POST',
    body: {
      code: $('#setup-code').value,
      organisation: $('#setup-org').value,
      display_name: $('#setup-name').value,
      email: $('#setup-email').value,
      password: $('#setup-password').value,
    },
  }));
});

onSubmit('#login-form', '#login-error', async () => {
  const user = await api('/login', {
    method: 'POST',
    body: { email: $('#login-email').value, password: $('#login-password').value },
  });
  $('#cp-current').value = $('#login-password').value;
  proceed(user);
}, lockoutText);

onSubmit('#second-factor-form', '#second-factor-error', async () => {
  proceed(await api('/login/second-factor', { method: 'POST', body: { code: $('#second-factor-code').value } }));
}, (e) => {
  if (e.code === 'locked') show('login');
  return lockoutText(e);
});

onSubmit('#change-password-form', '#change-password-error', async () => {
  const user = await api('/me/password', { method: 'POST', body: { current: $('#cp-current').value, new: $('#cp-new').value } });
  $('#cp-current').value = $('#cp-new').value = '';
  proceed(user);
});

export async function startEnrolment() {
  const enrolment = await api('/me/totp', { method: 'POST' });
  $('#enrol-qr').src = enrolment.qr_svg;
  $('#enrol-secret').textContent = enrolment.secret;
  $('#enrol-code').value = '';
  show('enrol');
}

onSubmit('#enrol-form', '#enrol-error', async () => {
  const result = await api('/me/totp/confirm', { method: 'POST', body: { code: $('#enrol-code').value } });
  const list = $('#recovery-codes');
  list.replaceChildren(...result.recovery_codes.map((code) => {
    const item = document.createElement('li');
    item.innerHTML = '<code></code>';
    item.firstChild.textContent = code;
    return item;
  }));
  state.me = result.user;
  show('recovery');
});

$('#recovery-done').addEventListener('click', () => proceed(state.me));

$('#logout').addEventListener('click', async () => {
  await api('/logout', { method: 'POST' }).catch(() => {});
  location.reload();
});
