// The customer's camera driven from the console (switch, torch, zoom), the technician's
// microphone, and recording.
import { $ } from '/assets/common.js';
import { t } from '/assets/i18n.js';
import { state, send } from '/assets/console/state.js';

export function showCapabilities(c) {
  const { current } = state;
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
  const facing = state.current?.capabilities?.facing === 'user' ? 'environment' : 'user';
  send({ type: 'camera', facing });
});
$('#cam-torch').addEventListener('click', () => {
  send({ type: 'camera', torch: $('#cam-torch').getAttribute('aria-pressed') !== 'true' });
});
$('#cam-zoom').addEventListener('change', () => {
  send({ type: 'camera', zoom: Number($('#cam-zoom').value) });
});

// The technician's own microphone.
$('#tech-mute').addEventListener('click', () => {
  const { current } = state;
  if (!current?.microphone) return;
  current.muted = !current.muted;
  for (const track of current.microphone.getAudioTracks()) track.enabled = !current.muted;
  $('#tech-mute').textContent = t(current.muted ? 'unmute' : 'mute');
  current.signal.send({ type: 'mute', muted: current.muted });
});

$('#record').addEventListener('click', () => {
  send({ type: 'record', on: !state.current?.session?.recording });
});
