// /share — the student's page: capture the screen, join the room, ask the teacher, and share
// once allowed (protocol §6.8, §8.6). The student is the polite peer and makes the offer.

import { PerfectPeer, RelaySession, explain, showConnection } from './rtc.js';

const $ = (selector) => document.querySelector(selector);
const body = document.body;
const ui = {
  form: $('#join'),
  room: $('#room'),
  name: $('#name'),
  share: $('#share'),
  stop: $('#stop'),
  status: $('#status'),
  detail: $('#detail'),
  steps: $('#steps'),
  preview: $('#preview'),
  previewEmpty: $('#preview-empty'),
  conn: $('#conn'),
};
const relayUrl = body.dataset.relay;
const loopback = body.dataset.loopback === '1';

const STATUS_TEXT = {
  idle: 'not sharing',
  starting: 'starting',
  waiting: 'waiting',
  sharing: 'sharing',
  stopped: 'stopped',
};
const STEP_OF = { idle: -1, starting: 0, waiting: 2, sharing: 3, stopped: -1, error: -1 };
const STEP_NAMES = ['capture', 'join', 'allow', 'live'];

let state = 'idle';
let session = null; // RelaySession once joined
let joined = null; // {room_id, user_id, token, name}
let config = null; // latest rtc/config
let configAt = 0;
let stream = null; // the captured screen
let peer = null; // PerfectPeer while sharing
let clickedAt = 0;
let busy = false;

// -------------------------------------------------------------------------------------------
// Presentation

function setState(next, detail, errorText = '') {
  state = next;
  ui.status.dataset.state = next;
  ui.status.textContent = next === 'error' ? errorText : STATUS_TEXT[next];
  if (detail !== undefined) ui.detail.textContent = detail;
  const active = next === 'starting' || next === 'waiting' || next === 'sharing';
  ui.stop.hidden = !(next === 'waiting' || next === 'sharing');
  ui.share.disabled = active;
  ui.share.textContent = next === 'stopped' ? 'Share again' : 'Share screen';
  ui.room.disabled = active;
  ui.name.disabled = active;
  body.dataset.state = next;
  const current = STEP_OF[next] ?? -1;
  STEP_NAMES.forEach((name, index) => {
    const item = ui.steps.querySelector(`[data-step="${name}"]`);
    item.classList.toggle('done', current >= 0 && index < current);
    item.classList.toggle('current', index === current);
  });
}

function setDetail(text) {
  ui.detail.textContent = text;
}

function fail(text) {
  releaseCapture();
  setState('error', 'Fix the problem above and press “Share screen” again.', text);
}

function log(text) {
  console.info(`[share] ${text}`);
}

// -------------------------------------------------------------------------------------------
// Capture

async function capture() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
    throw new Error('This browser cannot share the screen (no getDisplayMedia). Use a recent Chrome, Edge or Firefox.');
  }
  try {
    return await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
  } catch (error) {
    if (error.name === 'NotAllowedError') throw new Error('Screen sharing was cancelled or not allowed.');
    throw new Error(`Could not capture the screen: ${error.message || error.name}`);
  }
}

function releaseCapture() {
  if (peer) {
    peer.close();
    peer = null;
  }
  if (stream) {
    for (const track of stream.getTracks()) {
      track.onended = null;
      track.stop();
    }
    stream = null;
  }
  ui.preview.srcObject = null;
  ui.previewEmpty.hidden = false;
}

// -------------------------------------------------------------------------------------------
// Relay

function handleState(connState, detail) {
  showConnection(ui.conn, connState, detail);
  if (connState === 'offline' && session && session.ended && joined) {
    // The relay ended the session for good (room closed, kicked, replaced, gave up).
    session = null;
    joined = null;
    if (state === 'waiting' || state === 'sharing') fail(detail);
  }
}

async function join(roomId, name) {
  session = new RelaySession(relayUrl, { onEvent: handleEvent, onState: handleState });
  try {
    const frames = await session.attach('room/join', { room_id: roomId, name }, () => [
      'room/rejoin', { room_id: joined.room_id, user_id: joined.user_id, token: joined.token },
    ]);
    const reply = frames.find((f) => f.event === 'room/join');
    joined = { ...(reply ? reply.data : { room_id: roomId }), name };
  } catch (error) {
    session = null;
    throw error;
  }
}

async function leave() {
  if (!session) return;
  const old = session;
  session = null;
  joined = null;
  try {
    await old.call('room/leave', {}, 2000);
  } catch (_) {
    /* leaving is best effort */
  }
  old.close();
}

async function request() {
  try {
    await session.call('rtc/request', {});
    setDetail('Waiting for the teacher to accept your request…');
  } catch (error) {
    if (error.code === 'peer_offline') {
      setDetail('The teacher is offline. Your request is sent again when the teacher is back.');
      return;
    }
    throw error;
  }
}

async function freshConfig() {
  // TURN credentials expire (rtc/config ttl): ask for new ones when half the lifetime is gone.
  if (!config || !config.ttl || performance.now() - configAt < (config.ttl * 1000) / 2) return;
  try {
    await session.call('rtc/config', {}, 3000);
  } catch (_) {
    /* keep the old configuration */
  }
}

async function startPeer() {
  if (peer) peer.close();
  await freshConfig();
  if (!stream || !session) return;
  peer = new PerfectPeer({
    config,
    polite: config && typeof config.polite === 'boolean' ? config.polite : true,
    loopback,
    signal: (event, data) => session && session.send(event, data),
    onState: peerState,
    log,
  });
  for (const track of stream.getTracks()) peer.pc.addTrack(track, stream); // → negotiationneeded
  setState('sharing', 'Connecting to the teacher…');
}

function peerState(connectionState) {
  if (state !== 'sharing') return;
  if (connectionState === 'connected') {
    const seconds = ((performance.now() - clickedAt) / 1000).toFixed(1);
    setDetail(`The teacher can see your screen (connected in ${seconds} s). Press “Stop sharing” to end.`);
    body.dataset.connection = 'connected';
  } else if (connectionState === 'disconnected') {
    setDetail('The connection is unstable, trying to recover…');
    body.dataset.connection = connectionState;
  } else if (connectionState === 'failed') {
    setDetail('Could not connect to the teacher’s browser. Retrying…');
    body.dataset.connection = connectionState;
  } else {
    body.dataset.connection = connectionState;
  }
}

async function handleEvent(name, data) {
  try {
    await dispatch(name, data);
  } catch (error) {
    log(`${name}: ${error.message}`);
  }
}

async function dispatch(name, data) {
  switch (name) {
    case 'rtc/config':
      config = data;
      configAt = performance.now();
      break;
    case 'rtc/allow':
      if (!stream) {
        session.send('rtc/stop', {}); // we are no longer sharing; tell the teacher
        return;
      }
      await startPeer();
      break;
    case 'rtc/offer':
      // The teacher (re)negotiates, e.g. an ICE restart: accept as the polite side.
      if (!stream) return;
      if (!peer) await startPeer();
      if (peer) await peer.description('offer', data.sdp);
      break;
    case 'rtc/answer':
      if (peer) await peer.description('answer', data.sdp);
      break;
    case 'rtc/ice':
      if (peer) await peer.candidate(data.candidate);
      break;
    case 'rtc/stop':
      if (state === 'waiting') stopSharing('The teacher did not accept the request.', false);
      else if (state === 'sharing') stopSharing('The teacher stopped viewing your screen.', false);
      break;
    case 'message':
      if (typeof data.message !== 'string') return;
      if (/offline/i.test(data.message)) {
        if (state === 'waiting' || state === 'sharing') setDetail(`${data.message} Waiting for them to come back…`);
      } else if (/reconnected/i.test(data.message) && (state === 'waiting' || state === 'sharing')) {
        // A reloaded teacher page knows nothing of us: ask again.
        if (peer) peer.close();
        peer = null;
        setState('waiting');
        await request();
      }
      break;
    case 'session/resumed':
      // rtc/* frames are never buffered by the relay: a request or allow may have been lost.
      if (state === 'waiting' || (state === 'sharing' && (!peer || peer.state !== 'connected'))) {
        if (peer) peer.close();
        peer = null;
        setState('waiting');
        await request();
      }
      break;
    case 'room/kicked':
    case 'room/closed':
      fail(typeof data.message === 'string' ? data.message : 'The room was closed.');
      break;
    case 'alerts':
      if (data.type === 'ERROR' && typeof data.message === 'string') setDetail(data.message);
      break;
    case 'error':
      log(`relay error ${data.code} on ${data.event}: ${data.message}`);
      break;
    default:
      break;
  }
}

// -------------------------------------------------------------------------------------------
// Start and stop

function stopSharing(reason, notify) {
  if (notify && session && (state === 'waiting' || state === 'sharing')) session.send('rtc/stop', {});
  releaseCapture();
  delete body.dataset.connection;
  setState('stopped', `${reason} Press “Share again” to share once more.`);
}

async function start(event) {
  event.preventDefault();
  if (busy || state === 'waiting' || state === 'sharing') return;
  const roomText = ui.room.value.trim();
  const name = ui.name.value.trim();
  if (!/^\d{1,12}$/.test(roomText)) {
    fail('Enter the room number (digits only).');
    ui.room.focus();
    return;
  }
  if (!name) {
    fail('Enter your name.');
    ui.name.focus();
    return;
  }
  if (name.length > 32) {
    fail('The name can have at most 32 characters.');
    ui.name.focus();
    return;
  }
  busy = true;
  clickedAt = performance.now();
  try {
    setState('starting', 'Choose the screen or window to share…');
    stream = await capture();
    const track = stream.getVideoTracks()[0];
    if (track) {
      if ('contentHint' in track) track.contentHint = 'detail'; // code and text stay sharp
      track.onended = () => stopSharing('You stopped sharing.', true);
    }
    ui.preview.srcObject = stream;
    ui.previewEmpty.hidden = true;
    const roomId = Number(roomText);
    if (session && joined && (joined.room_id !== roomId || joined.name !== name)) await leave();
    if (!session) {
      setDetail('Joining the room…');
      await join(roomId, name);
    }
    setState('waiting', 'Asking the teacher…');
    await request();
  } catch (error) {
    log(`start failed: ${error.message}`);
    if (error.code === 'name_taken' || error.code === 'room_not_found') await leave();
    fail(error.code ? explain(error) : error.message);
  } finally {
    busy = false;
  }
}

ui.form.addEventListener('submit', start);
ui.stop.addEventListener('click', () => stopSharing('You stopped sharing.', true));
window.addEventListener('pagehide', () => {
  if (session && (state === 'waiting' || state === 'sharing')) session.send('rtc/stop', {});
});
setState('idle');
if (!ui.room.value) ui.room.focus();
else if (!ui.name.value) ui.name.focus();
