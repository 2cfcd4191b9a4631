// /view — the teacher's page: rehost the room, list screen-sharing requests, allow one and
// watch it (protocol §6.8, §8.6). The teacher is the impolite peer and answers the offer.

import { FrameMeter, PerfectPeer, RelaySession, clock, el, explain, showConnection } from './rtc.js';

const $ = (selector) => document.querySelector(selector);
const body = document.body;
const ui = {
  form: $('#creds'),
  room: $('#room'),
  userId: $('#user_id'),
  token: $('#token'),
  connect: $('#connect'),
  roomLabel: $('#room-label'),
  status: $('#status'),
  conn: $('#conn'),
  requests: $('#requests'),
  requestCount: $('#request-count'),
  students: $('#students'),
  studentCount: $('#student-count'),
  watching: $('#watching'),
  info: $('#stream-info'),
  stop: $('#stop'),
  fullscreen: $('#fullscreen'),
  screen: $('#screen'),
  remote: $('#remote'),
  remoteEmpty: $('#remote-empty'),
  log: $('#log'),
};
const relayUrl = body.dataset.relay;
const loopback = body.dataset.loopback === '1';
const baseTitle = document.title;

let session = null;
let config = null;
const students = new Map(); // user id -> {id, name, status}
const requests = new Map(); // user id -> Date of the request
const allowed = new Set(); // students we allowed and whose offer we accept
let active = null; // {userId, peer, allowedAt, firstFrameMs}

const meter = new FrameMeter(ui.remote, ({ frames, fps, width, height }) => {
  ui.remote.dataset.frames = String(frames);
  ui.info.textContent = `${width}×${height} · ${fps.toFixed(0)} fps`;
  if (active && active.firstFrameMs === null) {
    active.firstFrameMs = Math.round(performance.now() - active.allowedAt);
    ui.remote.dataset.firstFrameMs = String(active.firstFrameMs);
    note(`First frame from ${nameOf(active.userId)} ${active.firstFrameMs} ms after allowing.`);
  }
});

// -------------------------------------------------------------------------------------------
// Presentation

function nameOf(userId) {
  const student = students.get(userId);
  return student ? student.name : `Student #${userId}`;
}

function setStatus(kind, text) {
  ui.status.dataset.state = kind;
  ui.status.textContent = text;
}

function note(text, kind = 'info') {
  ui.log.prepend(el('li', { class: kind }, el('time', {}, clock()), ' ', text));
  while (ui.log.children.length > 30) ui.log.lastElementChild.remove();
  console.info(`[view] ${text}`);
}

function renderRequests() {
  const items = [...requests.entries()].sort((a, b) => a[1] - b[1]);
  ui.requestCount.textContent = String(items.length);
  ui.requestCount.dataset.count = String(items.length);
  document.title = items.length ? `(${items.length}) ${baseTitle}` : baseTitle;
  if (!items.length) {
    ui.requests.replaceChildren(el('li', { class: 'empty' }, 'No student is asking to share yet.'));
    return;
  }
  ui.requests.replaceChildren(...items.map(([userId, at]) => el(
    'li', { class: 'request', 'data-request': userId },
    el('div', { class: 'who' },
      el('span', { class: 'name' }, nameOf(userId)),
      el('span', { class: 'when' }, `asked at ${at.toLocaleTimeString()}`)),
    el('div', { class: 'request-actions' },
      el('button', { type: 'button', class: 'primary small', 'data-user-id': userId,
                     title: `Show ${nameOf(userId)}'s screen` }, 'Allow'),
      el('button', { type: 'button', class: 'ghost small', 'data-decline': userId }, 'Decline')),
  )));
}

function renderStudents() {
  const list = [...students.values()].sort((a, b) => a.id - b.id);
  ui.studentCount.textContent = String(list.length);
  if (!list.length) {
    ui.students.replaceChildren(el('li', { class: 'empty' }, 'Nobody has joined yet.'));
    return;
  }
  ui.students.replaceChildren(...list.map((s) => {
    const badges = [];
    if (active && active.userId === s.id) badges.push(el('span', { class: 'badge live' }, 'sharing'));
    else if (requests.has(s.id)) badges.push(el('span', { class: 'badge ask' }, 'asking'));
    return el('li', { class: 'student', 'data-student': s.id, 'data-status': s.status },
      el('span', { class: 'dot', title: s.status }), el('span', { class: 'name' }, s.name), ...badges);
  }));
}

function renderStage() {
  const watching = active !== null;
  ui.stop.hidden = !watching;
  ui.fullscreen.disabled = !watching;
  ui.screen.dataset.state = watching ? (active.peer.state || 'new') : 'idle';
  if (!watching) {
    ui.watching.textContent = 'No screen shared';
    ui.info.textContent = '';
    ui.remoteEmpty.hidden = false;
    return;
  }
  const who = nameOf(active.userId);
  const state = active.peer.state;
  ui.watching.textContent = state === 'connected' ? `${who}'s screen` : `Connecting to ${who}…`;
}

// -------------------------------------------------------------------------------------------
// Viewing one student

function startViewing(userId) {
  endViewing(null, true);
  const peer = new PerfectPeer({
    config,
    polite: config && typeof config.polite === 'boolean' ? config.polite : false,
    loopback,
    signal: (event, data) => session && session.send(event, { ...data, user_id: userId }),
    onTrack: (event) => showTrack(userId, event),
    onState: (state) => {
      if (!active || active.userId !== userId) return;
      ui.screen.dataset.state = state;
      if (state === 'connected') {
        note(`Connected to ${nameOf(userId)}.`);
        setStatus('viewing', 'viewing');
      }
      if (state === 'failed') note(`The connection to ${nameOf(userId)} failed.`, 'warn');
      renderStage();
    },
    log: (text) => console.info(`[view] peer ${userId}: ${text}`),
  });
  active = { userId, peer, allowedAt: performance.now(), firstFrameMs: null };
  allowed.add(userId);
  renderStage();
  renderStudents();
}

function showTrack(userId, event) {
  if (!active || active.userId !== userId || event.track.kind !== 'video') return;
  const stream = event.streams[0] || new MediaStream([event.track]);
  ui.remote.srcObject = stream;
  ui.remote.play().catch(() => { /* autoplay of a muted video is allowed; ignore races */ });
  ui.remoteEmpty.hidden = true;
  meter.start();
  event.track.addEventListener('ended', () => {
    if (active && active.userId === userId) endViewing(`${nameOf(userId)}'s screen ended.`, false);
  });
}

/** Stop watching the current student; `notify` sends rtc/stop to them. */
function endViewing(reason, notify) {
  if (!active) return;
  const { userId, peer } = active;
  active = null;
  allowed.delete(userId);
  if (notify && session) session.send('rtc/stop', { user_id: userId });
  peer.close();
  meter.stop();
  ui.remote.srcObject = null;
  delete ui.remote.dataset.frames;
  delete ui.remote.dataset.firstFrameMs;
  if (session && session.open) setStatus('online', 'connected');
  if (reason) note(reason);
  renderStage();
  renderStudents();
}

async function allow(userId) {
  if (!session) return;
  requests.delete(userId);
  renderRequests();
  startViewing(userId);
  note(`Allowed ${nameOf(userId)} to share.`);
  try {
    await session.call('rtc/allow', { user_id: userId });
  } catch (error) {
    note(`Could not allow ${nameOf(userId)}: ${explain(error)}`, 'warn');
    if (active && active.userId === userId) endViewing(null, false);
  }
}

function decline(userId) {
  requests.delete(userId);
  if (session) session.send('rtc/stop', { user_id: userId });
  note(`Declined ${nameOf(userId)}'s request.`);
  renderRequests();
  renderStudents();
}

// -------------------------------------------------------------------------------------------
// Relay events

async function handleEvent(name, data) {
  try {
    await dispatch(name, data);
  } catch (error) {
    console.warn(`[view] ${name}: ${error.message}`);
  }
}

async function dispatch(name, data) {
  const userId = Number.isInteger(data.user_id) ? data.user_id : null;
  switch (name) {
    case 'rtc/config':
      config = data;
      break;
    case 'room/update':
      students.clear();
      for (const user of Array.isArray(data.users) ? data.users : []) {
        if (user && user.role === 'client' && Number.isInteger(user.id)) {
          students.set(user.id, { id: user.id, name: String(user.name), status: String(user.status) });
        }
      }
      for (const id of [...requests.keys()]) if (!students.has(id)) requests.delete(id);
      renderStudents();
      renderRequests();
      renderStage();
      break;
    case 'rtc/request':
      if (userId === null) return;
      if (active && active.userId === userId) endViewing(null, false); // asked again: start over
      allowed.delete(userId);
      requests.set(userId, new Date());
      note(`${nameOf(userId)} wants to share their screen.`, 'ask');
      renderRequests();
      renderStudents();
      break;
    case 'rtc/offer':
      if (userId === null) return;
      if (!allowed.has(userId) || !active || active.userId !== userId) {
        console.info(`[view] ignoring an offer from ${userId}: not allowed`);
        return;
      }
      await active.peer.description('offer', data.sdp);
      break;
    case 'rtc/answer':
      if (active && active.userId === userId) await active.peer.description('answer', data.sdp);
      break;
    case 'rtc/ice':
      if (active && active.userId === userId) await active.peer.candidate(data.candidate);
      break;
    case 'rtc/stop':
      if (userId === null) return;
      if (requests.delete(userId)) {
        note(`${nameOf(userId)} withdrew the request.`);
        renderRequests();
      }
      if (active && active.userId === userId) endViewing(`${nameOf(userId)} stopped sharing.`, false);
      allowed.delete(userId);
      renderStudents();
      break;
    case 'room/resync':
      requests.clear();
      renderRequests();
      break;
    case 'error':
      if (data.code === 'peer_offline' && data.event === 'rtc/allow') break; // reported by allow()
      note(`Relay error ${data.code} on ${data.event}: ${data.message}`, 'warn');
      break;
    default:
      break;
  }
}

function handleState(state, detail) {
  showConnection(ui.conn, state, detail);
  if (state === 'online') setStatus(active ? 'viewing' : 'online', active ? 'viewing' : 'connected');
  else if (state === 'reconnecting') setStatus('reconnecting', 'reconnecting');
  else if (state === 'offline' && session && session.ended) {
    session = null;
    endViewing(null, false);
    setStatus('error', detail);
    ui.form.hidden = false;
    ui.connect.disabled = false;
    note(detail, 'warn');
  }
}

// -------------------------------------------------------------------------------------------
// Opening the room

async function connect(event) {
  if (event) event.preventDefault();
  if (session) return;
  const roomText = ui.room.value.trim();
  const userText = ui.userId.value.trim();
  const token = ui.token.value.trim();
  if (!/^\d{1,12}$/.test(roomText) || !/^\d{1,6}$/.test(userText) || !token) {
    setStatus('error', 'Enter the room number, your teacher id and your token.');
    return;
  }
  const creds = { room_id: Number(roomText), user_id: Number(userText), token };
  ui.connect.disabled = true;
  setStatus('connecting', 'connecting');
  const current = new RelaySession(relayUrl, { onEvent: handleEvent, onState: handleState });
  session = current;
  try {
    await current.attach('room/rehost', creds, () => ['room/rehost', creds]);
  } catch (error) {
    if (session === current) session = null;
    ui.connect.disabled = false;
    setStatus('error', explain(error));
    note(explain(error), 'warn');
    return;
  }
  ui.form.hidden = true;
  ui.roomLabel.textContent = roomText;
  body.dataset.connected = 'yes';
  setStatus('online', 'connected');
  note(`Room ${roomText} is open. Students can share from /share?room=${roomText}.`);
}

ui.form.addEventListener('submit', connect);
ui.requests.addEventListener('click', (event) => {
  const button = event.target.closest('button');
  if (!button) return;
  if (button.dataset.userId) allow(Number(button.dataset.userId));
  else if (button.dataset.decline) decline(Number(button.dataset.decline));
});
ui.stop.addEventListener('click', () => {
  if (active) endViewing(`You stopped viewing ${nameOf(active.userId)}'s screen.`, true);
});
ui.fullscreen.addEventListener('click', () => {
  if (ui.screen.requestFullscreen) ui.screen.requestFullscreen().catch(() => {});
});
window.addEventListener('pagehide', () => {
  if (active && session) session.send('rtc/stop', { user_id: active.userId });
});

renderStage();
if (ui.room.value && ui.userId.value && ui.token.value) connect();
else ui.room.focus();
