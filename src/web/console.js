// The technician's console: setup, sign-in, sessions, and the live view of one session.
import { $, show, api, negotiate, signaling } from '/assets/common.js';

const STATUS_TEXT = {
  waiting: 'Waiting for the customer',
  joined: 'The customer opened the invitation',
  consented: 'The customer is sharing — connecting…',
  live: 'Live',
  declined: 'The customer declined to share the camera',
  ended: 'Session ended',
};
const END_TEXT = {
  technician: 'ended by the technician',
  customer: 'ended by the customer',
  expired: 'expired',
  shutdown: 'the appliance was shut down',
};

let current = null; // { id, signal, pc, resource }

// Exposed for diagnostics and the browser tests.
window.sightline = { get pc() { return current?.pc ?? null; } };

async function start() {
  const setup = await api('/setup');
  if (setup.needed) return show('setup');
  try {
    signedIn(await api('/me'));
  } catch {
    show('login');
  }
}

function signedIn(user) {
  $('#who').hidden = false;
  $('#who-name').textContent = user.display_name;
  $('#who-org').textContent = user.organisation;
  dashboard();
}

async function dashboard() {
  show('dashboard');
  const list = $('#session-list');
  list.replaceChildren();
  const sessions = await api('/sessions').catch(() => []);
  for (const s of sessions) {
    const item = document.createElement('li');
    const when = new Date(s.created_ms).toLocaleString();
    item.textContent = when;
    const state = document.createElement('span');
    state.className = 'status';
    state.dataset.state = s.state;
    state.textContent = STATUS_TEXT[s.state] ?? s.state;
    item.append(state);
    list.append(item);
  }
}

$('#setup-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('#setup-error').textContent = '';
  try {
    const user = await api('/setup', {
      method: 'POST',
      body: {
        code: $('#setup-code').value,
        organisation: $('#setup-org').value,
        display_name: $('#setup-name').value,
        email: $('#setup-email').value,
        password: $('#setup-password').value,
      },
    });
    signedIn(user);
  } catch (e) {
    $('#setup-error').textContent = e.message;
  }
});

$('#login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('#login-error').textContent = '';
  try {
    signedIn(await api('/login', {
      method: 'POST',
      body: { email: $('#login-email').value, password: $('#login-password').value },
    }));
  } catch (e) {
    $('#login-error').textContent = e.message;
  }
});

$('#logout').addEventListener('click', async () => {
  await api('/logout', { method: 'POST' }).catch(() => {});
  location.reload();
});

$('#new-session').addEventListener('click', async () => {
  $('#dashboard-error').textContent = '';
  try {
    const created = await api('/sessions', { method: 'POST' });
    openSession(created);
  } catch (e) {
    $('#dashboard-error').textContent = e.message;
  }
});

$('#copy-link').addEventListener('click', () => {
  navigator.clipboard?.writeText($('#invite-link').textContent).catch(() => {});
});

$('#end-session').addEventListener('click', async () => {
  if (!current) return;
  current.signal.send({ type: 'end' });
});

$('#back').addEventListener('click', () => {
  closeSession();
  dashboard();
});

function setStatus(session, reason) {
  const status = $('#session-status');
  status.dataset.state = session.state;
  let text = STATUS_TEXT[session.state] ?? session.state;
  if (session.state === 'ended' && (reason ?? session.end_reason)) {
    text += ` (${END_TEXT[reason ?? session.end_reason]})`;
  } else if (session.paused && session.state !== 'declined') {
    text = 'The customer paused the camera';
  } else if (!session.customer_connected && ['consented', 'live'].includes(session.state)) {
    text = 'The customer is disconnected';
  }
  status.textContent = text;
  $('#invite').hidden = session.state !== 'waiting';
  $('#end-session').disabled = session.state === 'ended';
}

async function openSession(created) {
  closeSession();
  show('session');
  const { session } = created;
  $('#invite-link').textContent = created.link;
  $('#invite-pin').textContent = created.pin;
  $('#join-url').textContent = created.join_url;
  $('#invite-qr').src = created.qr_svg;
  $('#invite-expiry').textContent = `Valid until ${new Date(session.invitation_expires_ms).toLocaleTimeString()}`;
  setStatus(session);

  const signal = signaling((message) => {
    if (message.type === 'state') setStatus(message.session);
    if (message.type === 'ended') {
      setStatus({ state: 'ended' }, message.reason);
      current?.pc?.close();
    }
  });
  const pc = new RTCPeerConnection();
  current = { id: session.id, signal, pc, resource: null };
  await signal.opened;
  signal.send({ type: 'watch', session_id: session.id });

  // Receive the customer's media (WHEP). The relay forwards it once the customer shares.
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const stream = new MediaStream();
  $('#remote-video').srcObject = stream;
  pc.addEventListener('track', (event) => stream.addTrack(event.track));
  current.resource = await negotiate(pc, `/api/sessions/${session.id}/whep`);
}

function closeSession() {
  if (!current) return;
  current.signal.close();
  current.pc.close();
  if (current.resource) {
    fetch(current.resource, { method: 'DELETE', headers: { 'x-sightline-csrf': '1' } }).catch(() => {});
  }
  current = null;
  $('#remote-video').srcObject = null;
}

start();
