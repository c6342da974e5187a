// Shared helpers for the console and the customer page. Plain ES module, no build step.
import { t } from '/assets/i18n.js';

export const $ = (selector) => document.querySelector(selector);

export function show(id) {
  for (const section of document.querySelectorAll('[data-view]')) {
    section.hidden = section.id !== id;
  }
}

export class ApiError extends Error {
  constructor(status, code, message, body = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

// JSON API call. State-changing requests carry the CSRF header the appliance requires.
export async function api(path, { method = 'GET', body, token, headers = {} } = {}) {
  const init = { method, headers: { ...headers }, credentials: 'same-origin' };
  if (method !== 'GET') init.headers['x-sightline-csrf'] = '1';
  if (token) init.headers.authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/api${path}`, init);
  } catch (e) {
    // A connection the browser opened ahead of time may have been closed by the
    // appliance as idle; a read is safe to send once more.
    if (method !== 'GET') throw e;
    await new Promise((r) => setTimeout(r, 300));
    response = await fetch(`/api${path}`, init);
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { message: text }; }
  if (!response.ok) {
    throw new ApiError(response.status, data?.error ?? 'error', data?.message ?? response.statusText, data);
  }
  return data;
}

// WHIP/WHEP: POST the SDP offer, apply the answer, remember the resource for DELETE.
// `auth` gives the customer page's credentials (invitation token and device secret).
export async function negotiate(pc, url, { auth = () => ({}) } = {}) {
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  const headers = { 'content-type': 'application/sdp', 'x-sightline-csrf': '1', ...auth() };
  const response = await fetch(url, { method: 'POST', headers, body: pc.localDescription.sdp, credentials: 'same-origin' });
  const text = await response.text();
  if (response.status !== 201) {
    let body = { error: 'media', message: text };
    try { body = JSON.parse(text); } catch { /* not the appliance answering */ }
    throw new ApiError(response.status, body.error, body.message, body);
  }
  await pc.setRemoteDescription({ type: 'answer', sdp: text });
  return response.headers.get('location');
}

// Keeps a media connection through network changes: when ICE loses its path, an ICE
// restart (a new offer PATCHed to the connection's WHIP/WHEP resource) finds a new one
// without the other side doing anything. If the relay no longer knows the connection
// (it was away too long), `fallback` starts a new one.
export function keepConnected(pc, { resource, auth = () => ({}), fallback, isCurrent, onRestart }) {
  let timer = null;
  let restarting = false;
  const restart = async () => {
    if (!isCurrent() || restarting || !resource()) return;
    restarting = true;
    onRestart?.();
    try {
      const offer = await pc.createOffer({ iceRestart: true });
      await pc.setLocalDescription(offer);
      const headers = { 'content-type': 'application/sdp', 'x-sightline-csrf': '1', ...auth() };
      const response = await fetch(resource(), { method: 'PATCH', headers, body: pc.localDescription.sdp, credentials: 'same-origin' });
      if (!response.ok) throw new ApiError(response.status, 'media', await response.text());
      await pc.setRemoteDescription({ type: 'answer', sdp: await response.text() });
    } catch {
      if (isCurrent()) fallback?.();
    } finally {
      restarting = false;
    }
  };
  pc.addEventListener('iceconnectionstatechange', () => {
    clearTimeout(timer);
    const state = pc.iceConnectionState;
    if (state === 'failed') restart();
    else if (state === 'disconnected') {
      timer = setTimeout(() => { if (pc.iceConnectionState === 'disconnected') restart(); }, 1000);
    }
  });
}

export function signaling(onMessage, onClose) {
  const ws = new WebSocket(`wss://${location.host}/api/ws`);
  ws.addEventListener('message', (event) => {
    let message;
    try { message = JSON.parse(event.data); } catch { return; }
    onMessage(message);
  });
  ws.addEventListener('close', () => onClose?.());
  return {
    ws,
    opened: new Promise((resolve, reject) => {
      ws.addEventListener('open', resolve, { once: true });
      ws.addEventListener('error', reject, { once: true });
    }),
    send(message) {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
    },
    close() { ws.close(); },
  };
}

// Appends chat lines to a list; text is set as text, never as HTML.
export function showChat(list, lines) {
  for (const line of lines) {
    const item = document.createElement('li');
    item.dataset.from = line.from;
    const who = document.createElement('strong');
    who.textContent = `${line.from === 'customer' ? t('customer') : line.author}: `;
    item.append(who, line.text);
    list.append(item);
  }
  list.scrollTop = list.scrollHeight;
}

export function chatForm(form, input, send) {
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    send({ type: 'chat', text });
    input.value = '';
  });
}

// SHA-256 of a blob, in hex: lets both sides show that they display the same still.
export async function digest(blob) {
  const bytes = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, '0')).join('');
}
