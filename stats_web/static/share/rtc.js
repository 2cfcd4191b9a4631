// Observer Relay screen sharing: pieces shared by /share (student) and /view (teacher).
//
//  * RelaySession: the plain JSON framing of protocol §3.1 over one WebSocket, with
//    acknowledgements (§3.3) and resume after a transient drop (room/rejoin or room/rehost
//    with last_seq, §5.2).
//  * PerfectPeer: one RTCPeerConnection negotiated with the "perfect negotiation" pattern; the
//    polite flag comes from rtc/config (§6.8): students are polite, the teacher is not.
//  * small DOM helpers that only ever create text nodes (names are user input).

/** Close codes after which reconnecting and resuming makes sense (protocol §2.5). */
const RETRYABLE = new Set([1001, 1005, 1006, 1011, 1012, 1013, 4002, 4004, 4008]);

/** Human texts for the closes that end a session for good. */
export const CLOSE_TEXT = {
  4000: 'The room was closed.',
  4001: 'You were removed from the room by the teacher.',
  4003: 'This room was opened in another window or tab.',
  1009: 'The relay refused a message that was too large.',
  1008: 'The relay closed the connection (policy).',
};

/** A failed relay request: `code` is one of the §3.4 error codes (or "closed"/"timeout"). */
export class RelayError extends Error {
  constructor(code, message, event = null) {
    super(message || code);
    this.code = code;
    this.event = event;
  }
}

/** Friendlier words for the error codes a person can run into on these pages. */
export function explain(error) {
  const code = error && error.code;
  const texts = {
    room_not_found: 'No room with this number. Check the number with your teacher.',
    name_taken: 'This name is already used in the room. Pick another one.',
    bad_token: 'The link is not valid for this room (wrong token).',
    user_not_found: 'The link is not valid for this room (unknown user).',
    forbidden: 'The relay did not allow this.',
    peer_offline: 'The other side is offline right now.',
    rate_limited: 'Too many attempts. Wait a minute and try again.',
    invalid_payload: 'The relay did not accept this input.',
    too_large: 'The input is too long.',
    closed: 'The connection to the relay was lost.',
    timeout: 'The relay did not answer in time.',
    unreachable: 'Cannot reach the relay. Is the address right and the relay running?',
  };
  return texts[code] || (error && error.message) || String(error);
}

export class RelaySession {
  /**
   * @param {string} url ws:// URL of the relay's /observer endpoint
   * @param {{onEvent: Function, onState: Function}} handlers
   *   onEvent(name, data, frame) for every server frame except acks;
   *   onState(state, detail) with state in connecting | online | reconnecting | offline.
   */
  constructor(url, handlers) {
    this.url = url;
    this.onEvent = handlers.onEvent;
    this.onState = handlers.onState;
    this.ws = null;
    this.nextRef = 1;
    this.pending = new Map(); // ref -> {resolve, reject, frames, timer}
    this.lastSeq = null;
    this.resume = null; // () => [event, data] for room/rejoin or room/rehost
    this.ended = false;
    this.attempt = 0;
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Connect and attach with `event` (room/join, room/rehost); returns the reply frames. */
  async attach(event, data, resume) {
    this.onState('connecting', 'Connecting to the relay…');
    try {
      await this._connect();
    } catch (error) {
      this.ended = true;
      this.onState('offline', explain(error));
      throw error;
    }
    try {
      const frames = await this.call(event, data);
      this.resume = resume;
      this.onState('online', 'Connected');
      return frames;
    } catch (error) {
      this.close();
      throw error;
    }
  }

  /** Send a frame without waiting; false when the socket is not open. */
  send(event, data = {}) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify({ event, data }));
    return true;
  }

  /** Send with a `ref`; resolves with the frames received before the ack, rejects on failure. */
  call(event, data = {}, timeoutMs = 10000) {
    if (!this.open) return Promise.reject(new RelayError('closed', 'not connected', event));
    const ref = this.nextRef++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(ref);
        reject(new RelayError('timeout', `no answer to ${event}`, event));
      }, timeoutMs);
      this.pending.set(ref, { resolve, reject, frames: [], timer, event });
      this.ws.send(JSON.stringify({ event, data, ref }));
    });
  }

  /** Close for good (no reconnect). */
  close() {
    this.ended = true;
    if (this.ws) {
      try { this.ws.close(1000, 'bye'); } catch (_) { /* already closing */ }
    }
  }

  _connect() {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (error) {
        reject(new RelayError('unreachable', String(error)));
        return;
      }
      this.ws = ws;
      let opened = false;
      ws.onopen = () => { opened = true; resolve(); };
      ws.onmessage = (message) => this._receive(message.data);
      ws.onclose = (close) => {
        if (this.ws === ws) this.ws = null;
        if (!opened) {
          reject(new RelayError('unreachable', `WebSocket closed (${close.code})`));
          return;
        }
        this._closed(close.code, close.reason);
      };
    });
  }

  _receive(raw) {
    let frame;
    try {
      frame = JSON.parse(raw);
    } catch (_) {
      return;
    }
    if (!frame || typeof frame !== 'object' || typeof frame.event !== 'string') return;
    if (Number.isInteger(frame.seq)) this.lastSeq = frame.seq;
    const data = frame.data === undefined || frame.data === null ? {} : frame.data;
    if (frame.event === 'ack') {
      const waiter = this.pending.get(frame.ref);
      if (!waiter) return;
      this.pending.delete(frame.ref);
      clearTimeout(waiter.timer);
      if (data.ok) {
        waiter.resolve(waiter.frames);
      } else {
        const err = data.error || {};
        waiter.reject(new RelayError(err.code || 'internal', err.message, waiter.event));
      }
      return;
    }
    for (const waiter of this.pending.values()) waiter.frames.push(frame);
    this.onEvent(frame.event, data, frame);
  }

  _closed(code, reason) {
    for (const [ref, waiter] of this.pending) {
      clearTimeout(waiter.timer);
      waiter.reject(new RelayError('closed', `connection closed (${code})`, waiter.event));
      this.pending.delete(ref);
    }
    if (this.ended) {
      this.onState('offline', 'Disconnected');
      return;
    }
    if (this.resume && RETRYABLE.has(code)) {
      this._reconnect(code);
      return;
    }
    this.ended = true;
    this.onState('offline', CLOSE_TEXT[code] || `Disconnected (${code}${reason ? `: ${reason}` : ''})`);
  }

  async _reconnect(code) {
    while (!this.ended && this.attempt < 8) {
      this.attempt += 1;
      const delay = Math.min(8000, (code === 4008 ? 4000 : 400) * 2 ** (this.attempt - 1));
      this.onState('reconnecting', `Connection lost, reconnecting (attempt ${this.attempt})…`);
      await new Promise((done) => setTimeout(done, delay));
      if (this.ended) return;
      try {
        await this._connect();
      } catch (_) {
        continue;
      }
      const [event, data] = this.resume();
      try {
        await this.call(event, { ...data, last_seq: this.lastSeq ?? 0 });
        this.attempt = 0;
        this.onState('online', 'Reconnected');
        this.onEvent('session/resumed', {}, null);
        return;
      } catch (error) {
        if (error.code === 'closed' || error.code === 'timeout') continue;
        this.ended = true;
        if (this.ws) this.ws.close(1000, 'resume failed');
        this.onState('offline', explain(error));
        return;
      }
    }
    if (!this.ended) {
      this.ended = true;
      this.onState('offline', 'Could not reconnect to the relay.');
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ICE candidates and SDP

/** Connection address of a candidate line (`candidate:…` or `a=candidate:…`). */
export function candidateAddress(line) {
  const parts = String(line).trim().replace(/^a=/, '').split(/\s+/);
  return parts.length >= 8 ? parts[4] : null;
}

/** Drop every `a=candidate` line that is not on 127.0.0.1. */
export function loopbackSdp(sdp) {
  return sdp
    .split(/\r?\n/)
    .filter((line) => !line.startsWith('a=candidate:') || candidateAddress(line) === '127.0.0.1')
    .join('\r\n');
}

/** A relayed candidate (object from toJSON(), or a bare string) as an RTCIceCandidateInit. */
export function candidateInit(raw) {
  if (raw === null || raw === undefined) return null;
  if (typeof raw === 'string') {
    return { candidate: raw.trim().replace(/^a=/, ''), sdpMLineIndex: 0 };
  }
  if (typeof raw !== 'object') return null;
  const init = { candidate: typeof raw.candidate === 'string' ? raw.candidate : '' };
  if (typeof raw.sdpMid === 'string') init.sdpMid = raw.sdpMid;
  if (Number.isInteger(raw.sdpMLineIndex)) init.sdpMLineIndex = raw.sdpMLineIndex;
  if (typeof raw.usernameFragment === 'string') init.usernameFragment = raw.usernameFragment;
  if (init.sdpMid === undefined && init.sdpMLineIndex === undefined) init.sdpMLineIndex = 0;
  return init;
}

/** RTCIceServer list from rtc/config, keeping only well-formed entries. */
export function iceServers(config) {
  const list = config && Array.isArray(config.ice_servers) ? config.ice_servers : [];
  return list.filter((s) => s && (typeof s.urls === 'string' || Array.isArray(s.urls)));
}

export class PerfectPeer {
  /**
   * @param {object} o
   * @param {object} o.config   the latest rtc/config payload
   * @param {boolean} o.polite  from rtc/config
   * @param {boolean} o.loopback keep only 127.0.0.1 candidates (tests)
   * @param {Function} o.signal (event, data) → sends rtc/offer | rtc/answer | rtc/ice
   * @param {Function} [o.onTrack] RTCTrackEvent handler
   * @param {Function} [o.onState] (connectionState) handler
   * @param {Function} [o.log] (text) diagnostic sink
   */
  constructor(o) {
    this.polite = Boolean(o.polite);
    this.loopback = Boolean(o.loopback);
    this.signal = o.signal;
    this.log = o.log || (() => {});
    this.onState = o.onState || (() => {});
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.answerPending = false;
    this.closed = false;
    this.restarts = 0;
    this.remoteQueue = [];
    this.localQueue = [];
    this.createdAt = performance.now();
    let pc;
    try {
      pc = new RTCPeerConnection({ iceServers: iceServers(o.config) });
    } catch (error) {
      this.log(`ICE servers refused (${error.message}); continuing without them`);
      pc = new RTCPeerConnection({ iceServers: [] });
    }
    this.pc = pc;
    pc.onnegotiationneeded = () => this._negotiate();
    pc.onicecandidate = ({ candidate }) => this._localCandidate(candidate);
    pc.onconnectionstatechange = () => this._stateChanged();
    if (o.onTrack) pc.ontrack = o.onTrack;
  }

  get state() {
    return this.pc.connectionState;
  }

  _outgoing(sdp) {
    return this.loopback ? loopbackSdp(sdp) : sdp;
  }

  async _negotiate() {
    if (this.closed) return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      if (this.closed) return;
      this.signal('rtc/offer', { sdp: this._outgoing(this.pc.localDescription.sdp) });
    } catch (error) {
      this.log(`could not make an offer: ${error.message}`);
    } finally {
      this.makingOffer = false;
      this._flushLocal();
    }
  }

  _localCandidate(candidate) {
    if (this.closed || !candidate || !candidate.candidate) return; // end-of-candidates: nothing
    if (this.loopback && candidateAddress(candidate.candidate) !== '127.0.0.1') return;
    const json = candidate.toJSON();
    if (this.makingOffer) {
      this.localQueue.push(json); // keep the description ahead of its candidates
      return;
    }
    this.signal('rtc/ice', { candidate: json });
  }

  _flushLocal() {
    const queued = this.localQueue;
    this.localQueue = [];
    for (const json of queued) this.signal('rtc/ice', { candidate: json });
  }

  _stateChanged() {
    if (this.closed) return;
    const state = this.pc.connectionState;
    this.onState(state);
    if (state === 'failed' && this.restarts < 1) {
      this.restarts += 1;
      this.log('connection failed; restarting ICE');
      this.pc.restartIce();
    }
  }

  /** Apply a remote rtc/offer or rtc/answer following the perfect-negotiation rules. */
  async description(type, sdp) {
    if (this.closed || typeof sdp !== 'string' || !sdp) return;
    const pc = this.pc;
    const readyForOffer = !this.makingOffer && (pc.signalingState === 'stable' || this.answerPending);
    const collision = type === 'offer' && !readyForOffer;
    this.ignoreOffer = !this.polite && collision;
    if (this.ignoreOffer) {
      this.log('ignored a colliding offer (impolite side)');
      return;
    }
    if (type === 'answer' && pc.signalingState !== 'have-local-offer') {
      this.log(`ignored an answer in state ${pc.signalingState}`);
      return;
    }
    const remote = this.loopback ? loopbackSdp(sdp) : sdp;
    this.answerPending = type === 'answer';
    try {
      await pc.setRemoteDescription({ type, sdp: remote }); // rolls back a local offer if polite
    } finally {
      this.answerPending = false;
    }
    await this._flushRemote();
    if (type === 'offer' && !this.closed) {
      await pc.setLocalDescription();
      this.signal('rtc/answer', { sdp: this._outgoing(pc.localDescription.sdp) });
    }
  }

  /** Apply a remote rtc/ice candidate (queued until a remote description exists). */
  async candidate(raw) {
    if (this.closed) return;
    const init = candidateInit(raw);
    if (!init) return;
    if (this.loopback && init.candidate && candidateAddress(init.candidate) !== '127.0.0.1') return;
    if (!this.pc.remoteDescription) {
      this.remoteQueue.push(init);
      return;
    }
    await this._add(init);
  }

  async _add(init) {
    try {
      await this.pc.addIceCandidate(init);
    } catch (error) {
      if (!this.ignoreOffer) this.log(`candidate not added: ${error.message}`);
    }
  }

  async _flushRemote() {
    const queued = this.remoteQueue;
    this.remoteQueue = [];
    for (const init of queued) await this._add(init);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.pc.onnegotiationneeded = null;
    this.pc.onicecandidate = null;
    this.pc.onconnectionstatechange = null;
    this.pc.ontrack = null;
    this.pc.close();
  }
}

// ---------------------------------------------------------------------------------------------
// DOM helpers (text nodes only)

/** Create an element; `attrs` are set as attributes, children are nodes or text. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Show the relay connection state in the top bar pill. */
export function showConnection(pill, state, detail) {
  const words = {
    connecting: 'connecting…',
    online: 'connected',
    reconnecting: 'reconnecting…',
    offline: 'not connected',
  };
  pill.dataset.state = state;
  pill.textContent = words[state] || state;
  pill.title = detail || '';
}

/** "12:04:31" for log lines. */
export function clock() {
  return new Date().toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** Frames-per-second and frame counter for a <video>, via requestVideoFrameCallback. */
export class FrameMeter {
  constructor(video, onUpdate) {
    this.video = video;
    this.onUpdate = onUpdate;
    this.frames = 0;
    this.window = [];
    this.active = false;
    this.firstFrameAt = null;
  }

  start() {
    if (this.active) return;
    this.active = true;
    this.frames = 0;
    this.window = [];
    this.firstFrameAt = null;
    const tick = (now) => {
      if (!this.active) return;
      this.frames += 1;
      if (this.firstFrameAt === null) this.firstFrameAt = now;
      this.window.push(now);
      while (this.window.length && now - this.window[0] > 2000) this.window.shift();
      const span = this.window.length > 1 ? (now - this.window[0]) / 1000 : 0;
      const fps = span > 0 ? (this.window.length - 1) / span : 0;
      this.onUpdate({ frames: this.frames, fps, width: this.video.videoWidth, height: this.video.videoHeight });
      this.video.requestVideoFrameCallback(tick);
    };
    this.video.requestVideoFrameCallback(tick);
  }

  stop() {
    this.active = false;
  }
}
