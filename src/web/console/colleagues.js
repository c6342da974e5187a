// Colleagues in a session: who is in it and in which role, and inviting one.
import { $, api } from '/assets/common.js';
import { t, errorText } from '/assets/i18n.js';
import { state } from '/assets/console/state.js';
import { onSubmit } from '/assets/console/ui.js';

export function showColleagues(colleagues) {
  const { current, me } = state;
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

export async function loadColleagueChoices() {
  const select = $('#colleague-user');
  const people = await api('/colleagues').catch(() => []);
  select.replaceChildren(...people.map((p) => new Option(p.display_name, p.id)));
}

onSubmit('#invite-form', '#session-error', async () => {
  await api(`/sessions/${state.current.id}/colleagues`, { method: 'POST', body: { user_id: $('#colleague-user').value, role: $('#colleague-role').value } });
});
