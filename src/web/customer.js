// The customer's page: join by link or PIN, consent, share the camera, pause, end.
import { $, show, api, negotiate, signaling, showChat, chatForm } from '/assets/common.js';

const END_TEXT = {
  technician: 'The technician ended the session.',
  customer: 'You ended the session.',
  expired: 'The session expired.',
  shutdown: 'The support appliance was shut down.',
};

let token = null;
let signal = null;
let pc = null;
let camera = null;
let microphone = null;
let resource = null;
let paused = false;
let waitingForConsent = null;
let resuming = false;

// A random id for this browser tab, so that after a reload it takes its own place in
// the session again (another device is refused).
function deviceId() {
  let id = sessionStorage.getItem('sightline-device');
  if (!id) {
    id = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
    sessionStorage.setItem('sightline-device', id);
  }
  return id;
}

function tokenFromPage() {
  const fromHash = location.hash.slice(1);
  if (fromHash) {
    sessionStorage.setItem('sightline-invitation', fromHash);
    return fromHash;
  }
  if (location.pathname === '/c') return sessionStorage.getItem('sightline-invitation');
  return null;
}

async function start() {
  token = tokenFromPage();
  if (!token) return show('pin-entry');
  let invitation;
  try {
    invitation = await api('/invitation', { token });
  } catch (e) {
    $('#problem-text').textContent = e.message;
    return show('problem');
  }
  $('#tech-name').textContent = invitation.technician_name;
  $('#tech-org').textContent = invitation.organisation;
  signal = signaling(onMessage, () => {});
  await signal.opened;
  signal.send({ type: 'join', token, device: deviceId() });
  show('consent');
}

function onMessage(message) {
  if (message.type === 'state') {
    const s = message.session;
    if (waitingForConsent && s.consent?.camera) {
      waitingForConsent();
      waitingForConsent = null;
    } else if (s.consent?.camera && !camera && !resuming && s.state !== 'ended') {
      // Back after a reload or a dropped connection: the consent on record still holds,
      // so the camera resumes without asking again.
      resuming = true;
      resume(s.consent.microphone);
    }
    const status = $('#live-status');
    status.dataset.state = s.state;
    status.textContent = s.state === 'live' ? (paused ? 'Paused' : 'Sharing with the technician') : 'Connecting…';
  } else if (message.type === 'chat') {
    showChat($('#chat-lines'), [message.line]);
  } else if (message.type === 'transcript') {
    $('#chat-lines').replaceChildren();
    showChat($('#chat-lines'), message.lines);
  } else if (message.type === 'ended') {
    finish(message.reason);
  } else if (message.type === 'error') {
    if (message.code === 'invitation_invalid' || message.code === 'already_joined') {
      $('#problem-text').textContent = message.message;
      show('problem');
    } else {
      $('#consent-error').textContent = message.message;
    }
  }
}

$('#pin-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('#pin-error').textContent = '';
  try {
    const answer = await api('/join/pin', { method: 'POST', body: { pin: $('#pin').value } });
    location.replace(`/c#${answer.token}`);
    if (location.pathname === '/c') location.reload();
  } catch (e) {
    $('#pin-error').textContent = e.message;
  }
});

async function startCamera() {
  return navigator.mediaDevices.getUserMedia({
    video: { facingMode: { ideal: 'environment' }, width: { ideal: 1280 }, height: { ideal: 720 } },
  });
}

async function publish() {
  pc = new RTCPeerConnection();
  for (const track of camera.getTracks()) pc.addTransceiver(track, { direction: 'sendonly' });
  if (microphone) {
    for (const track of microphone.getTracks()) pc.addTransceiver(track, { direction: 'sendonly' });
  }
  try {
    resource = await negotiate(pc, '/api/invitation/whip', { token });
  } catch (e) {
    $('#live-status').textContent = `Could not connect: ${e.message}`;
  }
}

async function resume(withMicrophone) {
  try {
    camera = await startCamera();
    if (withMicrophone) microphone = await navigator.mediaDevices.getUserMedia({ audio: true }).catch(() => null);
  } catch (e) {
    $('#consent-error').textContent = `The camera could not be started: ${e.message}`;
    resuming = false;
    return;
  }
  $('#preview').srcObject = camera;
  show('live');
  await publish();
}

async function share() {
  $('#consent-error').textContent = '';
  $('#share').disabled = true;
  try {
    // The camera and the microphone are asked for separately, so the customer (and the
    // browser's own prompt) can refuse the microphone and still share the camera.
    camera = await startCamera();
  } catch (e) {
    $('#consent-error').textContent = `The camera could not be started: ${e.message}`;
    $('#share').disabled = false;
    return;
  }
  if ($('#share-mic').checked) {
    microphone = await navigator.mediaDevices.getUserMedia({ audio: true }).catch(() => null);
  }
  const consented = new Promise((resolve) => { waitingForConsent = resolve; });
  signal.send({ type: 'consent', camera: true, microphone: microphone !== null });
  $('#preview').srcObject = camera;
  show('live');
  await consented;

  await publish();
  $('#share').disabled = false;
}

$('#share').addEventListener('click', share);
chatForm($('#chat-form'), $('#chat-text'), (message) => signal?.send(message));
$('#reconsider').addEventListener('click', () => show('consent'));

$('#decline').addEventListener('click', () => {
  signal.send({ type: 'consent', camera: false, microphone: false });
  show('declined');
});

$('#pause').addEventListener('click', () => {
  paused = !paused;
  for (const track of camera?.getVideoTracks() ?? []) track.enabled = !paused;
  $('#pause').textContent = paused ? 'Resume camera' : 'Pause camera';
  signal.send({ type: 'pause', paused });
});

$('#end').addEventListener('click', () => {
  signal.send({ type: 'end' });
  finish('customer');
});

function finish(reason) {
  for (const stream of [camera, microphone]) {
    for (const track of stream?.getTracks() ?? []) track.stop();
  }
  camera = microphone = null;
  if (pc) pc.close();
  pc = null;
  if (resource && token) {
    fetch(resource, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } }).catch(() => {});
  }
  sessionStorage.removeItem('sightline-invitation');
  $('#ended-reason').textContent = END_TEXT[reason] ?? '';
  show('ended');
  signal?.close();
}

start();
