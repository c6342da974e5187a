// The record of a session: facts, consent, chat, snapshots and recordings.
import { $, show, api, showChat } from '/assets/common.js';
import { t, when } from '/assets/i18n.js';
import { go, register } from '/assets/console/nav.js';
import { cell, emptyNote } from '/assets/console/ui.js';
import { stillFigure } from '/assets/console/stills.js';

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
register('record', showRecord);

$('#record-back').addEventListener('click', () => {
  for (const video of document.querySelectorAll('#record-recordings video')) video.removeAttribute('src');
  go('dashboard');
});
