// The live view of one session: the invitation, its state, the media from the customer,
// the chat, and whether the picture keeps coming.
import { $, api, show, negotiate, signaling, showChat, chatForm, keepConnected } from '/assets/common.js';
import { t, errorText, time } from '/assets/i18n.js';
import { state, send } from '/assets/console/state.js';
import { register } from '/assets/console/nav.js';
import { drawing, redraw, clearDrawing, putToolDown, showFrozen } from '/assets/console/drawing.js';
import { showCapabilities } from '/assets/console/camera.js';
import { showColleagues, loadColleagueChoices } from '/assets/console/colleagues.js';
import { stillFigure } from '/assets/console/stills.js';

chatForm($('#chat-form'), $('#chat-text'), send);

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

// Sending the link by e-mail or SMS, where the appliance is set up for it: the
// customer gets a link of their own, never the PIN with it.
const sendForm = $('#send-invitation');
function channelChosen() {
  const channel = sendForm.elements.channel.value;
  const input = $('#send-to');
  input.type = channel === 'email' ? 'email' : 'tel';
  const key = `session.send-to-${channel}`;
  $('#send-to-label').dataset.i18n = key;
  $('#send-to-label').textContent = t(key);
}
for (const radio of sendForm.elements.channel) radio.addEventListener('change', channelChosen);
sendForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const note = $('#send-note');
  const button = $('#send-link');
  button.disabled = true;
  note.textContent = t('session.sending');
  try {
    const body = {
      channel: sendForm.elements.channel.value,
      to: $('#send-to').value,
      language: $('#send-language').value,
    };
    const sent = await api(`/sessions/${state.current.id}/invitations`, { method: 'POST', body });
    note.textContent = t('session.sent', { to: sent.to });
    $('#send-to').value = '';
  } catch (e) {
    note.textContent = errorText(e);
  } finally {
    button.disabled = false;
  }
});

function offerSending(channels = []) {
  sendForm.hidden = channels.length === 0;
  $('#send-by-email-choice').hidden = !channels.includes('email');
  $('#send-by-sms-choice').hidden = !channels.includes('sms');
  if (channels.length) sendForm.elements.channel.value = channels[0];
  $('#send-language').value = document.documentElement.lang === 'de' ? 'de' : 'en';
  $('#send-note').textContent = '';
  channelChosen();
}

$('#end-session').addEventListener('click', () => send({ type: 'end' }));

export function setStatus(session, reason) {
  const { current, me } = state;
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
  // A state update during a stall (the customer's page reporting in) must not claim the
  // picture is live again; the stall watch says when it is.
  if (current?.stalled && session.state === 'live' && !session.paused && session.customer_connected !== false) text = t('status.stalled');
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
  const { current } = state;
  const phase = session.state;
  const placeholder = { waiting: 'session.placeholder', joined: 'session.placeholder', declined: 'session.placeholder-declined' }[phase];
  $('#stage-placeholder').hidden = !placeholder;
  $('#stage-placeholder').textContent = placeholder ? t(placeholder) : '';
  const picture = ['consented', 'live'].includes(phase) && !observer;
  current.pictureTools = picture;
  for (const el of document.querySelectorAll('#tools button, #draw-color')) el.disabled = !picture;
  showCapabilities(current.capabilities ?? { cameras: 0, torch: null, zoom: null });
  if (!picture) putToolDown();
  const chat = !['declined', 'ended'].includes(phase);
  $('#chat-text').disabled = !chat;
  $('#chat-form button').disabled = !chat;
  const why = {
    ended: 'session.tools-ended',
    declined: 'session.tools-declined',
    waiting: 'session.tools-waiting',
    joined: 'session.tools-waiting',
  }[phase];
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

async function openSession(created) {
  closeSession();
  show('session');
  const { session } = created;
  const current = { id: session.id, invitation: Boolean(created.link), signal: null, pc: null, resource: null, session };
  state.current = current;
  if (created.link) {
    $('#invite-link').textContent = created.link;
    $('#invite-pin').textContent = created.pin;
    $('#join-url').textContent = created.join_url;
    $('#invite-qr').src = created.qr_svg;
    $('#invite-expiry').textContent = t('session.valid-until', { time: time(session.invitation_expires_ms) });
    offerSending(created.send_by);
  }
  clearDrawing();
  $('#session-error').textContent = '';
  $('#snapshots').replaceChildren();
  $('#chat-lines').replaceChildren();
  $('#customer-muted').hidden = true;
  $('#bandwidth-note').hidden = true;
  current.capabilities = { cameras: 0, torch: null, zoom: null };
  setStatus(session);
  loadColleagueChoices();

  const signal = signaling((message) => {
    if (message.type === 'state') {
      setStatus(message.session);
      receiveOnceLive(current, message.session);
    }
    if (message.type === 'chat') showChat($('#chat-lines'), [message.line]);
    if (message.type === 'transcript') showChat($('#chat-lines'), message.lines);
    if (message.type === 'drawing') { drawing.shapes = message.shapes; redraw(); }
    if (message.type === 'pointer') { drawing.pointer = message.at; redraw(); }
    if (message.type === 'capabilities') showCapabilities(message.capabilities);
    if (message.type === 'still' && message.still.purpose === 'snapshot') $('#snapshots').append(stillFigure(current.id, message.still));
    if (message.type === 'muted' && message.from === 'customer') $('#customer-muted').hidden = !message.muted;
    if (message.type === 'bandwidth') $('#bandwidth-note').hidden = message.video;
    if (message.type === 'error') $('#session-error').textContent = errorText(message);
    if (message.type === 'ended') {
      setStatus({ ...current.session, state: 'ended' }, message.reason);
      state.current?.pc?.close();
    }
  });
  current.signal = signal;
  watchVideo(current);
  await signal.opened;
  signal.send({ type: 'watch', session_id: session.id });
  receiveOnceLive(current, session);
}

// The media connection opens once the customer's video reaches the relay, and then stays
// (through pauses and the customer's reconnects). A technician connection is padded by
// the relay's bandwidth estimation to at least 50 kbit/s (~160 packets/s) whenever it has
// nothing to send, so one opened while the session waits for its customer would cost the
// relay about as much as forwarding video. Opening it at the consent instead, in parallel
// with the customer's, did not bring the first picture sooner (e2e: 555-1293 ms from the
// consent tap, against 406-572 ms this way, three runs each).
function receiveOnceLive(current, session) {
  if (session.state !== 'live' || current.pc || state.current !== current) return;
  receiveMedia(session).catch((e) => {
    if (state.current !== current) return;
    $('#session-error').textContent = errorText(e);
    // The next state update tries again.
    current.pc?.close();
    current.pc = null;
  });
}

// Receives the customer's media (WHEP) and sends the technician's voice back on the
// audio line; a mere observer only listens.
async function receiveMedia(session) {
  const { current, me } = state;
  const pc = new RTCPeerConnection();
  const previous = current.pc;
  current.pc = pc;
  current.mediaSince = performance.now();
  previous?.close();
  pc.addTransceiver('video', { direction: 'recvonly' });
  const observer = session.colleagues?.some((c) => c.user_id === me?.user_id && c.role === 'observer');
  const microphone = observer ? null : current.microphone ?? await navigator.mediaDevices.getUserMedia({ audio: true }).catch(() => null);
  if (state.current !== current || current.pc !== pc) {
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
  keepConnected(pc, {
    resource: () => current.resource,
    fallback: () => receiveMedia(session),
    isCurrent: () => state.current === current && current.pc === pc,
  });
  current.resource = await negotiate(pc, `/api/sessions/${session.id}/whep`);
}

// A live picture counts as stopped when fewer than two frames were decoded in the last
// 1.5 s (a browser whose camera is gone may still send a keep-alive frame a second);
// checked every 250 ms, so the console says so within 2 s. It counts as moving again
// only from three: a window of 1.5 s holds one or two keep-alive frames depending on
// where it falls, and with one threshold the view flipped between "Video stopped" and
// "Live" every few checks (seen with Firefox).
const STALL_MS = 1500;
const STALL_FRAMES = 2;
const RESUME_FRAMES = 3;

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
    // A connection just opened (once the session went live, or again after a loss) has
    // had no time to bring frames yet.
    const expected = s.state === 'live' && !s.paused && !s.frozen && s.customer_connected !== false
      && $('#bandwidth-note').hidden && now - (mine.mediaSince ?? now) >= STALL_MS;
    const needed = mine.stalled ? RESUME_FRAMES : STALL_FRAMES;
    const stalled = expected && now - since >= STALL_MS - 300 && frames - before < needed;
    if (state.current !== mine || stalled === Boolean(mine.stalled)) return;
    mine.stalled = stalled;
    $('#video-stalled').hidden = !stalled;
    $('#stage').classList.toggle('stalled', stalled);
    if (stalled) $('#session-status').textContent = t('status.stalled');
    else setStatus(mine.session);
  }, 250);
}

export function closeSession() {
  const { current } = state;
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
  state.current = null;
  $('#remote-video').srcObject = null;
  $('#remote-audio').srcObject = null;
  $('#frozen').hidden = true;
  $('#frozen').dataset.still = '';
  $('#remote-video').hidden = false;
}
register('session', openSession);
