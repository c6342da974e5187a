// The dashboard: starting a session, and the history of sessions with its filters.
import { $, show, api } from '/assets/common.js';
import { t, errorText, when } from '/assets/i18n.js';
import { state } from '/assets/console/state.js';
import { go, register } from '/assets/console/nav.js';
import { emptyNote } from '/assets/console/ui.js';

// Account admins are told a month ahead that the served certificate (or the appliance CA
// behind it) ends, while there is time to import a renewed one.
async function certificateWarning(me) {
  const banner = $('#cert-warning');
  if (me.role !== 'account_admin') {
    banner.hidden = true;
    return;
  }
  const cert = await api('/certificate').catch(() => null);
  banner.hidden = !cert?.expires_soon;
  if (cert?.expires_soon) {
    banner.textContent = t(cert.source === 'imported' ? 'dashboard.cert-expires' : 'dashboard.ca-expires', { when: when(cert.not_after_ms), days: cert.days_left });
  }
}

export async function dashboard() {
  const { me } = state;
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
  certificateWarning(me);
  const sessions = await api(`/sessions?${params}`).catch(() => []);
  for (const s of sessions) {
    const item = document.createElement('li');
    item.dataset.session = s.id;
    const created = when(s.created_ms);
    const invited = s.technician_id !== me?.user_id ? ` · ${s.technician_name}` : '';
    const label = document.createElement('span');
    label.textContent = (s.customer_reference ? `${created} · ${s.customer_reference}` : created) + invited;
    const status = document.createElement('span');
    status.className = 'status';
    status.dataset.state = s.state;
    status.textContent = t(`status.${s.state}`);
    const buttons = document.createElement('span');
    if (s.state !== 'ended') {
      const join = document.createElement('button');
      join.className = 'open-session';
      join.textContent = t('dashboard.open');
      join.addEventListener('click', () => go('session', { session: s }));
      buttons.append(join);
    }
    const record = document.createElement('button');
    record.className = 'show-record';
    record.textContent = t('dashboard.record');
    record.addEventListener('click', () => go('record', s.id));
    buttons.append(record);
    item.append(label, status, buttons);
    list.append(item);
  }
  if (!sessions.length) list.append(emptyNote('li', params.toString() ? 'empty.history-filtered' : 'empty.history'));
}
register('dashboard', dashboard);

$('#history-filter').addEventListener('submit', (event) => {
  event.preventDefault();
  dashboard();
});

$('#new-session').addEventListener('click', async () => {
  $('#dashboard-error').textContent = '';
  try {
    const reference = $('#customer-ref').value.trim();
    const created = await api('/sessions', { method: 'POST', body: reference ? { customer_reference: reference } : {} });
    $('#customer-ref').value = '';
    go('session', created);
  } catch (e) {
    $('#dashboard-error').textContent = errorText(e);
  }
});
