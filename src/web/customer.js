// The customer's page: join by link or PIN, consent, share the camera (and, if chosen,
// the microphone), follow the technician's drawings and camera requests, pause, end.
import { $, show, api, negotiate, signaling, showChat, chatForm, keepConnected, digest } from '/assets/common.js';
import { t, translate, languagePicker, onLanguageChange, errorText } from '/assets/i18n.js';
import { render, showFrozenStill } from '/assets/draw.js';

// Everything the page knows about its visit: the invitation and its token, the
// signaling socket and media connection, the camera and microphone, what the customer
// chose, and what the technician drew.
const state = {
  token: null,
  invitation: null,
  signal: null,
  pc: null,
  videoSender: null,
  resource: null,
  iceRestarts: 0,
  camera: null,
  microphone: null,
  paused: false,
  muted: false,
  // Resolves once the appliance confirms the consent just sent.
  waitingForConsent: null,
  resuming: false,
  ended: false,
  lastState: null,
  shapes: [],
  pointer: null,
  // The freeze still this page took, until it shows it.
  frozenBlob: null,
  frozenDigest: null,
};

// Exposed for diagnostics and the browser tests.
window.sightline = {
  get pc() { return state.pc; },
  get signal() { return state.signal; },
  get camera() { return state.camera; },
  get shapes() { return state.shapes; },
  get frozenDigest() { return state.frozenDigest; },
  get resource() { return state.resource; },
  get iceRestarts() { return state.iceRestarts; },
};

// The secret the appliance gave this browser when it first joined the session. With it
// a reload or a dropped connection takes its own place again; media and photos need it,
// so a forwarded link alone cannot take over the camera.
const deviceSlot = () => `sightline-device-${state.invitation?.session_id}`;
const deviceKey = () => localStorage.getItem(deviceSlot());

// The headers of every request the page makes once it has joined.
function customerAuth() {
  const headers = { authorization: `Bearer ${state.token}` };
  const key = deviceKey();
  if (key) headers['x-sightline-device'] = key;
  return headers;
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

function showConsentTitle() {
  if (!state.invitation) return;
  $('#consent-title').textContent = t('c.consent.title', { name: state.invitation.technician_name, org: state.invitation.organisation });
}

onLanguageChange(() => {
  showConsentTitle();
  if (state.lastState) showState(state.lastState);
});

async function start() {
  languagePicker($('#language'));
  translate();
  state.token = tokenFromPage();
  if (!state.token) return show('pin-entry');
  try {
    state.invitation = await api('/invitation', { token: state.token });
  } catch (e) {
    $('#problem-text').textContent = errorText(e);
    return show('problem');
  }
  showConsentTitle();
  $('#record-choice').hidden = !state.invitation.optional.includes('recording');
  await connect();
  show('consent');
}

// Opens the signaling socket and joins; after a dropped connection it is opened again,
// and the page takes its own place in the session without asking consent again.
async function connect() {
  state.signal = signaling(onMessage, () => {
    if (!state.ended) setTimeout(() => reconnect(), 1000);
  });
  await state.signal.opened;
  state.signal.send({ type: 'join', token: state.token, device: deviceKey() });
}

async function reconnect() {
  if (state.ended) return;
  try {
    await connect();
  } catch {
    setTimeout(() => reconnect(), 2000);
  }
}

function showState(s) {
  const status = $('#live-status');
  status.dataset.state = s.state;
  status.textContent = s.state === 'live' ? (state.paused ? t('c.live.paused') : t('c.live.sharing')) : t('c.live.connecting');
  $('#recording-badge').hidden = !s.recording;
  $('#stop-recording').hidden = !s.consent?.recording;
}

function onMessage(message) {
  if (message.type === 'device') {
    localStorage.setItem(deviceSlot(), message.key);
  } else if (message.type === 'state') {
    const s = message.session;
    state.lastState = s;
    if (state.waitingForConsent && s.consent?.camera) {
      state.waitingForConsent();
      state.waitingForConsent = null;
    } else if (s.consent?.camera && !state.camera && !state.resuming && s.state !== 'ended') {
      // Back after a reload or a dropped connection: the consent on record still holds,
      // so the camera resumes without asking again.
      state.resuming = true;
      resume(s.consent.microphone);
    }
    showState(s);
    showFrozen(s.frozen);
  } else if (message.type === 'chat') {
    showChat($('#chat-lines'), [message.line]);
  } else if (message.type === 'transcript') {
    $('#chat-lines').replaceChildren();
    showChat($('#chat-lines'), message.lines);
  } else if (message.type === 'drawing') {
    state.shapes = message.shapes;
    redraw();
  } else if (message.type === 'pointer') {
    state.pointer = message.at;
    redraw();
  } else if (message.type === 'camera') {
    applyCameraRequest(message);
  } else if (message.type === 'capture') {
    capture(message.request, message.purpose);
  } else if (message.type === 'muted' && message.from === 'technician') {
    $('#tech-muted').hidden = !message.muted;
  } else if (message.type === 'ended') {
    finish(message.reason);
  } else if (message.type === 'error') {
    if (['invitation_invalid', 'already_joined', 'ended'].includes(message.code)) {
      $('#problem-text').textContent = errorText(message);
      state.ended = true;
      show('problem');
    } else {
      $('#consent-error').textContent = errorText(message);
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
    $('#pin-error').textContent = errorText(e);
  }
});

async function videoDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
  return devices.filter((d) => d.kind === 'videoinput');
}

async function startCamera(constraints = { facingMode: { ideal: 'environment' } }) {
  return navigator.mediaDevices.getUserMedia({
    video: { ...constraints, width: { ideal: 1280 }, height: { ideal: 720 } },
  });
}

// What the camera in use can do, for the technician's controls.
async function reportCapabilities() {
  const track = state.camera?.getVideoTracks()[0];
  if (!track) return;
  const caps = track.getCapabilities?.() ?? {};
  const settings = track.getSettings();
  const cameras = (await videoDevices()).length;
  const capabilities = {
    cameras: Math.min(cameras, 255),
    facing: ['user', 'environment'].includes(settings.facingMode) ? settings.facingMode : null,
    label: track.label.slice(0, 200) || null,
    torch: 'torch' in caps ? Boolean(settings.torch) : null,
    zoom: caps.zoom ? { min: caps.zoom.min, max: caps.zoom.max, step: caps.zoom.step ?? 0.1, value: settings.zoom ?? caps.zoom.min } : null,
    width: settings.width ?? null,
    height: settings.height ?? null,
  };
  state.signal?.send({ type: 'capabilities', capabilities });
}

// Changes the camera without renegotiating: the new track replaces the old one in the
// same sender, so the technician's picture simply switches.
async function useCamera(next) {
  const old = state.camera;
  state.camera = next;
  $('#preview').srcObject = state.camera;
  const track = state.camera.getVideoTracks()[0];
  track.enabled = !state.paused;
  if (state.videoSender) await state.videoSender.replaceTrack(track);
  for (const t of old?.getTracks() ?? []) t.stop();
  await reportCapabilities();
}

// Phones cannot open two cameras at once, so the one in use is released first; if the
// other cannot be opened, the first comes back.
async function switchCamera(facing) {
  const devices = await videoDevices();
  const currentId = state.camera?.getVideoTracks()[0]?.getSettings().deviceId;
  if (devices.length < 2 || !currentId) return;
  for (const track of state.camera.getVideoTracks()) track.stop();
  let stream = null;
  if (facing) {
    stream = await startCamera({ facingMode: { exact: facing } }).catch(() => null);
    if (stream && stream.getVideoTracks()[0].getSettings().deviceId === currentId) {
      for (const track of stream.getTracks()) track.stop();
      stream = null;
    }
  }
  if (!stream) {
    const at = devices.findIndex((d) => d.deviceId === currentId);
    const next = devices[(at + 1) % devices.length];
    stream = await startCamera({ deviceId: { exact: next.deviceId } }).catch(() => null);
  }
  stream ??= await startCamera({ deviceId: { exact: currentId } }).catch(() => null);
  if (stream) await useCamera(stream);
}

async function applyCameraRequest(request) {
  const track = state.camera?.getVideoTracks()[0];
  if (!track) return;
  if (request.facing) await switchCamera(request.facing);
  const live = state.camera.getVideoTracks()[0];
  const caps = live.getCapabilities?.() ?? {};
  const advanced = {};
  if (request.torch !== null && request.torch !== undefined && 'torch' in caps) advanced.torch = request.torch;
  if (request.zoom !== null && request.zoom !== undefined && caps.zoom) {
    advanced.zoom = Math.min(caps.zoom.max, Math.max(caps.zoom.min, request.zoom));
  }
  if (Object.keys(advanced).length) await live.applyConstraints({ advanced: [advanced] }).catch(() => {});
  await reportCapabilities();
}

// A still from the camera: snapshots at the camera's full resolution (a photo, not a
// frame of the compressed video); freeze frames as the preview shows the picture.
async function capture(request, purpose) {
  const track = state.camera?.getVideoTracks()[0];
  if (!track) return;
  $('#capture-note').textContent = purpose === 'snapshot' ? t('c.live.photo') : '';
  let blob = null;
  if (purpose === 'snapshot' && 'ImageCapture' in window) {
    try {
      const imageCapture = new ImageCapture(track);
      const photo = await imageCapture.getPhotoCapabilities().catch(() => null);
      const options = photo?.imageWidth?.max ? { imageWidth: photo.imageWidth.max, imageHeight: photo.imageHeight.max } : {};
      blob = await imageCapture.takePhoto(options);
    } catch { blob = null; }
  }
  if (!blob) blob = await grabFrame(track);
  if (purpose === 'freeze') {
    state.frozenDigest = await digest(blob);
    state.frozenBlob = blob;
  }
  const response = await fetch(`/api/invitation/stills/${encodeURIComponent(request)}`, {
    method: 'POST',
    headers: { ...customerAuth(), 'content-type': blob.type || 'image/jpeg', 'x-sightline-csrf': '1' },
    body: blob,
  }).catch(() => null);
  if (!response?.ok) $('#capture-note').textContent = t('c.live.photo-failed');
}

async function grabFrame(track) {
  const settings = track.getSettings();
  const video = $('#preview');
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth || settings.width;
  canvas.height = video.videoHeight || settings.height;
  canvas.getContext('2d').drawImage(video, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob(resolve, 'image/jpeg', 0.92));
}

async function showFrozen(stillId) {
  const shown = await showFrozenStill($('#frozen'), $('#preview'), stillId, async () => {
    const own = state.frozenBlob;
    state.frozenBlob = null;
    // Back after a reload while frozen: fetch the still both sides look at.
    return own ?? (await fetch(`/api/invitation/stills/${stillId}`, { headers: customerAuth() })).blob();
  });
  $('#frozen-note').hidden = !stillId;
  if (!stillId) state.frozenDigest = null;
  else if (shown) state.frozenDigest = await digest(shown);
  redraw();
}

function redraw() {
  const media = $('#frozen').hidden ? $('#preview') : $('#frozen');
  render($('#overlay'), media, state.shapes, state.pointer);
}
window.addEventListener('resize', redraw);
$('#preview').addEventListener('resize', redraw);
$('#preview').addEventListener('loadedmetadata', redraw);

async function publish() {
  if (state.pc) state.pc.close();
  state.pc = new RTCPeerConnection();
  const video = state.camera.getVideoTracks()[0];
  // Simulcast: a small layer and the full picture; the relay gives each technician the
  // one their connection carries.
  state.videoSender = state.pc.addTransceiver(video, {
    direction: 'sendonly',
    streams: [state.camera],
    sendEncodings: [
      { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
      { rid: 'h', maxBitrate: 900_000 },
    ],
  }).sender;
  // The technician's voice comes back on the audio line; the customer's microphone goes
  // out on it only if they chose to share it.
  const mic = state.microphone?.getAudioTracks()[0];
  if (mic) state.pc.addTransceiver(mic, { direction: 'sendrecv', streams: [state.microphone] });
  else state.pc.addTransceiver('audio', { direction: 'recvonly' });
  const heard = new MediaStream();
  $('#technician-audio').srcObject = heard;
  state.pc.addEventListener('track', (event) => heard.addTrack(event.track));
  const mine = state.pc;
  keepConnected(state.pc, {
    resource: () => state.resource,
    auth: customerAuth,
    fallback: republish,
    isCurrent: () => mine === state.pc && !state.ended,
    onRestart: () => { state.iceRestarts += 1; },
  });
  try {
    state.resource = await negotiate(state.pc, '/api/invitation/whip', { auth: customerAuth });
  } catch (e) {
    $('#live-status').textContent = t('c.live.failed', { error: errorText(e) });
  }
  await reportCapabilities();
}

function republish() {
  if (state.ended || !state.camera) return;
  publish();
}

async function resume(withMicrophone) {
  try {
    state.camera = await startCamera();
    if (withMicrophone) state.microphone = await navigator.mediaDevices.getUserMedia({ audio: true }).catch(() => null);
  } catch (e) {
    $('#consent-error').textContent = t('c.consent.camera-failed', { error: e.message });
    state.resuming = false;
    return;
  }
  $('#preview').srcObject = state.camera;
  $('#mute').hidden = !state.microphone;
  show('live');
  await publish();
}

async function share() {
  $('#consent-error').textContent = '';
  $('#share').disabled = true;
  try {
    // The camera and the microphone are asked for separately, so the customer (and the
    // browser's own prompt) can refuse the microphone and still share the camera.
    state.camera = await startCamera();
  } catch (e) {
    $('#consent-error').textContent = t('c.consent.camera-failed', { error: e.message });
    $('#share').disabled = false;
    return;
  }
  if ($('#share-mic').checked) {
    state.microphone = await navigator.mediaDevices.getUserMedia({ audio: true }).catch(() => null);
  }
  const consented = new Promise((resolve) => { state.waitingForConsent = resolve; });
  state.signal.send({
    type: 'consent',
    camera: true,
    microphone: state.microphone !== null,
    recording: !$('#record-choice').hidden && $('#share-recording').checked,
  });
  $('#preview').srcObject = state.camera;
  $('#mute').hidden = !state.microphone;
  show('live');
  await consented;

  await publish();
  $('#share').disabled = false;
}

$('#share').addEventListener('click', share);
chatForm($('#chat-form'), $('#chat-text'), (message) => state.signal?.send(message));
$('#reconsider').addEventListener('click', () => show('consent'));

$('#decline').addEventListener('click', () => {
  state.signal.send({ type: 'consent', camera: false, microphone: false });
  show('declined');
});

$('#switch-camera').addEventListener('click', () => switchCamera(null));

$('#mute').addEventListener('click', () => {
  state.muted = !state.muted;
  for (const track of state.microphone?.getAudioTracks() ?? []) track.enabled = !state.muted;
  $('#mute').textContent = t(state.muted ? 'unmute' : 'mute');
  $('#mute').dataset.i18n = state.muted ? 'unmute' : 'mute';
  state.signal.send({ type: 'mute', muted: state.muted });
});

$('#stop-recording').addEventListener('click', () => {
  state.signal.send({ type: 'consent', camera: true, microphone: state.microphone !== null, recording: false });
});

$('#pause').addEventListener('click', () => {
  state.paused = !state.paused;
  // Only the picture pauses; the conversation goes on.
  for (const track of state.camera?.getVideoTracks() ?? []) track.enabled = !state.paused;
  $('#pause').dataset.i18n = state.paused ? 'c.live.resume' : 'c.live.pause';
  $('#pause').textContent = t($('#pause').dataset.i18n);
  state.signal.send({ type: 'pause', paused: state.paused });
});

// Ending sits near "Pause camera"; a slip of the thumb must not end the call.
$('#end').addEventListener('click', () => $('#end-confirm').showModal());
$('#end-no').addEventListener('click', () => $('#end-confirm').close());
$('#end-yes').addEventListener('click', () => {
  $('#end-confirm').close();
  state.signal.send({ type: 'end' });
  finish('customer');
});

function finish(reason) {
  state.ended = true;
  for (const stream of [state.camera, state.microphone]) {
    for (const track of stream?.getTracks() ?? []) track.stop();
  }
  state.camera = state.microphone = null;
  if (state.pc) state.pc.close();
  state.pc = null;
  if (state.resource && state.token) {
    fetch(state.resource, { method: 'DELETE', headers: { ...customerAuth(), 'x-sightline-csrf': '1' } }).catch(() => {});
  }
  sessionStorage.removeItem('sightline-invitation');
  localStorage.removeItem(deviceSlot());
  $('#ended-reason').dataset.i18n = `c.end.${reason}`;
  $('#ended-reason').textContent = t(`c.end.${reason}`);
  show('ended');
  state.signal?.close();
}

start();
