// The account admin's data page: a customer's export, deletion on request (carried out
// after the appliance's delay), the deletions still waiting and the trail of past requests.
import { $, show, api, ApiError } from '/assets/common.js';
import { t, errorText, when } from '/assets/i18n.js';
import { register } from '/assets/console/nav.js';
import { reporting, cell, emptyRow } from '/assets/console/ui.js';

const DATA_KINDS = { data_exported: 'data.kind.exported', deletion_requested: 'data.kind.requested', content_deleted: 'data.kind.deleted' };

let userNames = {};

function scope() {
  const value = $('#data-value').value.trim();
  return value ? { [$('#data-by').value]: value } : null;
}

function describe(s) {
  return s.session_id ? t('data.scope-session', { id: s.session_id }) : t('data.scope-reference', { reference: s.customer_reference });
}

async function data() {
  show('data');
  const [pending, history, users] = await Promise.all([
    api('/deletions'),
    api('/audit?topic=data'),
    api('/users'),
  ]);
  userNames = Object.fromEntries(users.map((u) => [u.id, u.display_name]));
  $('#deletion-rows').replaceChildren(...pending.map((r) => {
    const row = document.createElement('tr');
    row.dataset.id = r.id;
    row.append(cell(describe(r.scope)), cell(userNames[r.requested_by] ?? r.requested_by), cell(when(r.requested_ms)), cell(when(r.due_ms)));
    return row;
  }));
  if (!pending.length) $('#deletion-rows').append(emptyRow(4, 'data.none-pending'));
  $('#data-history-rows').replaceChildren(...history.map((e) => {
    const row = document.createElement('tr');
    row.dataset.kind = e.kind;
    row.append(cell(when(e.at_ms)), cell(t(DATA_KINDS[e.kind] ?? e.kind)), cell(userNames[e.actor] ?? e.actor ?? ''), cell(e.detail));
    return row;
  }));
  if (!history.length) $('#data-history-rows').append(emptyRow(4, 'data.no-history'));
}

// The export is an archive download; fetched first so a refusal shows as a message on the
// page instead of a downloaded error.
async function exportData() {
  const s = scope();
  if (!s) return;
  const response = await fetch(`/api/export?${new URLSearchParams(s)}`, { credentials: 'same-origin' });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new ApiError(response.status, body.error ?? 'error', body.message ?? response.statusText, body);
  }
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement('a');
  link.href = url;
  link.download = 'sightline-export.tar';
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  $('#data-status').textContent = t('data.exported', { what: describe(s) });
  await data();
}

async function requestDeletion() {
  const s = scope();
  if (!s) {
    $('#data-value').reportValidity();
    return;
  }
  if (!confirm(t('data.delete-confirm', { what: describe(s) }))) return;
  const request = await api('/deletions', { method: 'POST', body: s });
  $('#data-status').textContent = request.due_ms <= request.requested_ms
    ? t('data.deleted-now', { what: describe(s) })
    : t('data.deletion-due', { what: describe(s), when: when(request.due_ms) });
  $('#data-value').value = '';
  await data();
}

$('#data-form').addEventListener('submit', (event) => {
  event.preventDefault();
  $('#data-status').textContent = '';
  reporting('#data-error', exportData, errorText);
});
$('#data-delete').addEventListener('click', () => {
  $('#data-status').textContent = '';
  reporting('#data-error', requestDeletion, errorText);
});

register('data', data);
