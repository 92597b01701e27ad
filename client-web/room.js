// The conference client: the room protocol (signaling/PROTOCOL.md) over one
// WebSocket and one RTCPeerConnection. Only this side offers: it adds or
// reuses a recvonly transceiver for every track the server announces and
// re-offers with a {mid: trackSid} map.
//
// Test contract, window.room:
//   state        'idle' | 'joining' | 'joined' | 'reconnecting' | 'removed' | 'closed' | 'left' | 'error'
//   error        last error message from the server or the browser (string or null)
//   me           { sid, identity } once joined
//   participants { [sid]: { identity, name, metadata, quality, speaking, tracks: { [trackSid]: { kind, source, muted } } } }
//   messages     data messages received: [{ from, topic, payload }]
//   removedReason  why the server removed us / closed the room
//   pc, joins (count of 'joined' messages, resumes included)
//   sendChat(text, to?)  setMic(on)  setCamera(on)  leave()
//   stats()      Promise<{ [sid]: { identity, framesDecoded, frameWidth, audioSamples, audioBytes } }>
//   candidateType()  Promise<local candidate type of the selected pair: 'host' | 'srflx' | 'relay' | null>
//   candidateProtocol()  Promise<transport of the selected pair: 'udp' | 'tcp' | null>
// Query parameters: ?token= (else a development token), ?autojoin=1&name=,
// ?resolution=WxH, ?simulcast=0, ?audio=0, ?video=0, ?relay=1 (TURN only:
// iceTransportPolicy 'relay', with the TURN servers `joined` announced).

const params = new URLSearchParams(location.search);
const roomName = params.get('room') || decodeURIComponent(location.pathname.split('/').filter(Boolean)[1] || 'demo');
const $ = (id) => document.getElementById(id);

const room = window.room = {
  state: 'idle', error: null, me: null, participants: {}, messages: [], removedReason: null,
  pc: null, joins: 0,
  sendChat, setMic, setCamera, leave, stats, candidateType, candidateProtocol,
};

let ws = null;
let token = null;
let resumeToken = null;
let local = { stream: null, mic: null, cam: null, screen: null };
let senders = {}; // source -> RTCRtpTransceiver
const subscriptions = new Map(); // trackSid -> { sid (participant), kind, transceiver }
const free = { audio: [], video: [] };
const streams = new Map(); // participant sid -> MediaStream
let negotiating = false, renegotiate = false, iceRestart = false;
let channels = {};
let reconnectUntil = 0;
let disconnectedTimer = null;

function setState(s) { room.state = s; $('status').textContent = s; }
function showError(msg) {
  room.error = msg;
  const b = $('banner'); b.textContent = msg; b.className = msg ? 'show' : '';
}

// ---------- devices and joining ----------
async function listDevices() {
  try {
    const devices = await navigator.mediaDevices.enumerateDevices();
    for (const [sel, kind] of [[$('camera'), 'videoinput'], [$('mic'), 'audioinput']]) {
      sel.innerHTML = '';
      for (const d of devices.filter((d) => d.kind === kind)) {
        const o = document.createElement('option');
        o.value = d.deviceId; o.textContent = d.label || kind;
        sel.append(o);
      }
    }
  } catch (e) { showError(`cannot list devices: ${e.message}`); }
}

async function fetchToken(identity) {
  if (params.get('token')) return params.get('token');
  const q = new URLSearchParams({ room: roomName, identity, publish: '1', subscribe: '1' });
  const r = await fetch(`/dev/token?${q}`);
  if (!r.ok) throw new Error(`no token: ${r.status} ${await r.text()} (pass ?token=...)`);
  return (await r.json()).token;
}

async function join(name) {
  setState('joining');
  showError(null);
  const identity = `${name.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 40) || 'guest'}-${Math.random().toString(16).slice(2, 6)}`;
  try {
    token = await fetchToken(identity);
    const [w, h] = (params.get('resolution') || '640x360').split('x').map(Number);
    const wantAudio = params.get('audio') !== '0', wantVideo = params.get('video') !== '0';
    local.stream = await navigator.mediaDevices.getUserMedia({
      audio: wantAudio && ($('mic').value ? { deviceId: { exact: $('mic').value } } : true),
      video: wantVideo && { width: w, height: h, ...($('camera').value ? { deviceId: { exact: $('camera').value } } : {}) },
    });
    local.mic = local.stream.getAudioTracks()[0] || null;
    local.cam = local.stream.getVideoTracks()[0] || null;
  } catch (e) {
    setState('error'); showError(`cannot start: ${e.message}`); return;
  }
  room.myName = name;
  $('joinform').hidden = true; $('controls').hidden = false; $('chat').hidden = false;
  connect(false);
}

function connect(resume) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  let url = `${proto}//${location.host}/rtc?access_token=${encodeURIComponent(token)}`;
  if (resume && resumeToken) url += `&resume=${encodeURIComponent(resumeToken)}`;
  ws = new WebSocket(url);
  ws.onmessage = (e) => { try { onMessage(JSON.parse(e.data)); } catch (err) { console.error(err); } };
  ws.onclose = () => onSocketClosed();
}

function send(msg) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg)); }

function onSocketClosed() {
  if (['removed', 'closed', 'left', 'error', 'idle'].includes(room.state)) return;
  if (room.state !== 'reconnecting') { setState('reconnecting'); reconnectUntil = Date.now() + 20000; }
  if (Date.now() > reconnectUntil) { setState('error'); showError('lost the connection to the server'); return; }
  setTimeout(() => connect(true), 1000);
}

// ---------- peer connection ----------
function setupPeerConnection() {
  const pc = room.pc = new RTCPeerConnection({
    iceServers: room.iceServers || [],
    iceTransportPolicy: params.get('relay') === '1' ? 'relay' : 'all',
  });
  channels.reliable = pc.createDataChannel('reliable');
  channels.lossy = pc.createDataChannel('lossy', { ordered: false, maxRetransmits: 0 });
  for (const ch of Object.values(channels)) ch.onmessage = (e) => onData(e.data);
  pc.oniceconnectionstatechange = () => {
    const s = pc.iceConnectionState;
    clearTimeout(disconnectedTimer);
    if (s === 'failed') restartIce();
    if (s === 'disconnected') disconnectedTimer = setTimeout(restartIce, 3000);
  };
  if (local.mic) senders.microphone = pc.addTransceiver(local.mic, { direction: 'sendonly', streams: [local.stream] });
  if (local.cam) {
    const simulcast = params.get('simulcast') !== '0';
    senders.camera = pc.addTransceiver(local.cam, {
      direction: 'sendonly', streams: [local.stream],
      sendEncodings: simulcast
        ? [{ rid: 'f' }, { rid: 'h', scaleResolutionDownBy: 2 }, { rid: 'q', scaleResolutionDownBy: 4 }]
        : undefined,
    });
  }
  addTile(room.me.sid, `${room.myName} (you)`, true);
  streams.get(room.me.sid).video.srcObject = local.stream;
}

function restartIce() {
  if (room.pc && ['failed', 'disconnected'].includes(room.pc.iceConnectionState)) {
    iceRestart = true; negotiate();
  }
}

async function negotiate() {
  if (!room.pc) return;
  if (negotiating) { renegotiate = true; return; }
  negotiating = true; renegotiate = false;
  try {
    const offer = await room.pc.createOffer(iceRestart ? { iceRestart: true } : {});
    iceRestart = false;
    await room.pc.setLocalDescription(offer);
    const publish = {};
    for (const [source, t] of Object.entries(senders)) {
      if (t.mid && t.direction === 'sendonly') publish[t.mid] = { source, name: source };
    }
    const subscribe = {};
    for (const [trackSid, s] of subscriptions) if (s.transceiver.mid) subscribe[s.transceiver.mid] = trackSid;
    send({ type: 'offer', sdp: room.pc.localDescription.sdp, publish, subscribe });
  } catch (e) {
    negotiating = false; showError(`negotiation failed: ${e.message}`);
  }
}

async function onAnswer(sdp) {
  try { await room.pc.setRemoteDescription({ type: 'answer', sdp }); } catch (e) { showError(`bad answer: ${e.message}`); }
  negotiating = false;
  if (renegotiate) negotiate();
}

function subscribe(participantSid, track) {
  if (subscriptions.has(track.sid) || participantSid === room.me.sid) return;
  let transceiver = free[track.kind].pop();
  if (transceiver) transceiver.direction = 'recvonly';
  else transceiver = room.pc.addTransceiver(track.kind, { direction: 'recvonly' });
  subscriptions.set(track.sid, { sid: participantSid, kind: track.kind, transceiver });
  const tile = streams.get(participantSid);
  if (tile) {
    for (const old of tile.stream.getTracks().filter((t) => t.kind === track.kind)) tile.stream.removeTrack(old);
    tile.stream.addTrack(transceiver.receiver.track);
    tile.video.srcObject = tile.stream;
    tile.video.play().catch(() => {});
  }
}

function release(trackSid) {
  const s = subscriptions.get(trackSid);
  if (!s) return;
  subscriptions.delete(trackSid);
  s.transceiver.direction = 'inactive';
  free[s.kind].push(s.transceiver);
  const tile = streams.get(s.sid);
  if (tile) tile.stream.removeTrack(s.transceiver.receiver.track);
}

// ---------- room state and tiles ----------
function addTile(sid, label, mine = false) {
  if (streams.has(sid)) return streams.get(sid);
  const el = document.createElement('div');
  el.className = 'tile'; el.id = `tile-${sid}`;
  const video = document.createElement('video');
  video.autoplay = true; video.playsInline = true; video.muted = mine;
  const lab = document.createElement('div'); lab.className = 'label'; lab.textContent = label;
  const q = document.createElement('div'); q.className = 'quality';
  const off = document.createElement('div'); off.className = 'off'; off.textContent = '📷✕';
  el.append(video, off, lab, q);
  $('grid').append(el);
  const tile = { el, video, label: lab, quality: q, stream: new MediaStream() };
  streams.set(sid, tile);
  return tile;
}

function renderParticipant(sid) {
  const p = room.participants[sid];
  const tile = streams.get(sid);
  if (!p || !tile) return;
  const tracks = Object.values(p.tracks);
  const mic = tracks.find((t) => t.kind === 'audio');
  const cam = tracks.find((t) => t.kind === 'video' && t.source !== 'screen');
  p.micMuted = !mic || mic.muted;
  tile.label.textContent = `${p.name || p.identity}${p.micMuted ? ' 🔇' : ''}`;
  tile.el.classList.toggle('camera-off', !cam || cam.muted);
  tile.el.classList.toggle('speaking', !!p.speaking);
  tile.quality.className = `quality ${p.quality || 'excellent'}`;
}

function addParticipant(info) {
  const p = room.participants[info.sid] = {
    identity: info.identity, name: info.name, metadata: info.metadata,
    quality: info.quality, speaking: false, tracks: {},
  };
  addTile(info.sid, info.name || info.identity);
  for (const t of info.tracks) {
    p.tracks[t.sid] = { kind: t.kind, source: t.source, muted: t.muted };
    subscribe(info.sid, t);
  }
  renderParticipant(info.sid);
}

function removeParticipant(sid) {
  const p = room.participants[sid];
  if (p) for (const trackSid of Object.keys(p.tracks)) release(trackSid);
  delete room.participants[sid];
  const tile = streams.get(sid);
  if (tile) { tile.el.remove(); streams.delete(sid); }
}

function onJoined(msg) {
  room.joins += 1;
  resumeToken = msg.resumeToken;
  room.me = { sid: msg.participant.sid, identity: msg.participant.identity };
  room.iceServers = msg.iceServers;
  room.limits = msg.limits;
  setState('joined');
  showError(null);
  if (!room.pc) {
    setupPeerConnection();
    if (room.myName) send({ type: 'metadata', name: room.myName });
  }
  // (Re)build others from the authoritative list; keep live subscriptions.
  const present = new Set(msg.participants.map((p) => p.sid));
  for (const sid of Object.keys(room.participants)) if (!present.has(sid)) removeParticipant(sid);
  for (const info of msg.participants) {
    if (!room.participants[info.sid]) { addParticipant(info); continue; }
    const p = room.participants[info.sid];
    const live = new Set(info.tracks.map((t) => t.sid));
    for (const sid of Object.keys(p.tracks)) if (!live.has(sid)) { release(sid); delete p.tracks[sid]; }
    for (const t of info.tracks) {
      p.tracks[t.sid] = { kind: t.kind, source: t.source, muted: t.muted };
      subscribe(info.sid, t);
    }
    renderParticipant(info.sid);
  }
  if (msg.resumed && room.pc && room.pc.iceConnectionState !== 'connected') iceRestart = true;
  negotiate();
}

function onMessage(msg) {
  switch (msg.type) {
    case 'joined': onJoined(msg); break;
    case 'answer': onAnswer(msg.sdp); break;
    case 'participantJoined': addParticipant(msg.participant); break;
    case 'participantUpdated': {
      const info = msg.participant;
      if (info.sid === room.me?.sid) break;
      const p = room.participants[info.sid];
      if (p) { p.name = info.name; p.metadata = info.metadata; renderParticipant(info.sid); }
      break;
    }
    case 'participantLeft': removeParticipant(msg.sid); break;
    case 'trackPublished': {
      if (msg.participant === room.me?.sid) {
        if (msg.track.source !== 'screen') ownTracks[msg.track.kind] = msg.track.sid;
        break;
      }
      const p = room.participants[msg.participant];
      if (!p) break;
      p.tracks[msg.track.sid] = { kind: msg.track.kind, source: msg.track.source, muted: msg.track.muted };
      subscribe(msg.participant, msg.track);
      renderParticipant(msg.participant);
      negotiate();
      break;
    }
    case 'trackUnpublished': {
      release(msg.track);
      const p = room.participants[msg.participant];
      if (p) { delete p.tracks[msg.track]; renderParticipant(msg.participant); }
      negotiate();
      break;
    }
    case 'trackMuted': {
      if (msg.participant === room.me?.sid) {
        // An administrator (or another tab of ours) muted one of our tracks.
        if (msg.muted && local.mic && senders.microphone) { local.mic.enabled = false; updateButtons(); }
        break;
      }
      const t = room.participants[msg.participant]?.tracks[msg.track];
      if (t) { t.muted = msg.muted; renderParticipant(msg.participant); }
      break;
    }
    case 'speakers': {
      const speaking = new Set(msg.speakers.map((s) => s.sid));
      for (const [sid, p] of Object.entries(room.participants)) { p.speaking = speaking.has(sid); renderParticipant(sid); }
      const mine = streams.get(room.me?.sid);
      if (mine) mine.el.classList.toggle('speaking', speaking.has(room.me.sid));
      break;
    }
    case 'connectionQuality':
      for (const u of msg.updates) {
        const p = room.participants[u.sid];
        if (p) { p.quality = u.quality; renderParticipant(u.sid); }
      }
      break;
    case 'layers': applyLayers(msg.active); break;
    case 'removed': case 'roomClosed':
      room.removedReason = msg.reason;
      stopEverything(msg.type === 'removed' ? 'removed' : 'closed');
      showError(msg.type === 'removed' ? `You were removed: ${msg.reason}` : `The meeting ended: ${msg.reason}`);
      break;
    case 'error':
      if (msg.code === 'resume_failed') { resumeToken = null; stopPeer(); connect(false); break; }
      showError(`${msg.code}: ${msg.message}`);
      break;
    default: break;
  }
}

async function applyLayers(active) {
  const t = senders.camera;
  if (!t) return;
  const p = t.sender.getParameters();
  if (!p.encodings) return;
  let changed = false;
  for (const e of p.encodings) {
    if (e.rid && e.rid in active && e.active !== active[e.rid]) { e.active = active[e.rid]; changed = true; }
  }
  if (changed) { try { await t.sender.setParameters(p); } catch (e) { console.warn('setParameters', e); } }
}

// ---------- data ----------
function onData(data) {
  let msg;
  try { msg = JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data)); } catch { return; }
  room.messages.push(msg);
  if (msg.topic === 'chat') appendChat(msg.from || 'server', String(msg.payload));
}

function appendChat(from, text) {
  const line = document.createElement('div');
  line.textContent = `${from}: ${text}`;
  $('chatlog').append(line);
  $('chatlog').scrollTop = $('chatlog').scrollHeight;
}

function sendChat(text, to) {
  const ch = channels.reliable;
  if (!ch || ch.readyState !== 'open') return false;
  ch.send(JSON.stringify({ topic: 'chat', payload: text, ...(to ? { to } : {}) }));
  appendChat('me', text);
  return true;
}

// ---------- controls ----------
function setMic(on) {
  if (!local.mic) return;
  local.mic.enabled = on;
  const sid = ownTrackSid('audio');
  if (sid) send({ type: 'mute', track: sid, muted: !on });
  updateButtons();
}

async function setCamera(on) {
  const t = senders.camera;
  if (!t || !local.cam) return;
  await t.sender.replaceTrack(on ? local.cam : null);
  local.cam.enabled = on;
  const sid = ownTrackSid('video');
  if (sid) send({ type: 'mute', track: sid, muted: !on });
  streams.get(room.me.sid)?.el.classList.toggle('camera-off', !on);
  updateButtons();
}

// Our own track sids arrive in trackPublished messages about us.
const ownTracks = {};
function ownTrackSid(kind) { return ownTracks[kind]; }

async function toggleShare() {
  if (senders.screen && senders.screen.direction === 'sendonly') {
    local.screen?.stop();
    senders.screen.direction = 'inactive';
    negotiate();
    $('share').textContent = 'Share screen';
    return;
  }
  try {
    const s = await navigator.mediaDevices.getDisplayMedia({ video: true });
    local.screen = s.getVideoTracks()[0];
    if (senders.screen) { await senders.screen.sender.replaceTrack(local.screen); senders.screen.direction = 'sendonly'; }
    else senders.screen = room.pc.addTransceiver(local.screen, { direction: 'sendonly' });
    local.screen.onended = () => { if (senders.screen.direction === 'sendonly') toggleShare(); };
    negotiate();
    $('share').textContent = 'Stop sharing';
  } catch (e) { showError(`screen share: ${e.message}`); }
}

function updateButtons() {
  $('mute').textContent = local.mic && local.mic.enabled ? 'Mute' : 'Unmute';
  $('camtoggle').textContent = local.cam && local.cam.enabled ? 'Camera off' : 'Camera on';
}

function stopPeer() {
  if (room.pc) { room.pc.close(); room.pc = null; }
  subscriptions.clear(); free.audio = []; free.video = []; senders = {}; channels = {};
  negotiating = false; renegotiate = false;
  for (const sid of [...streams.keys()]) { streams.get(sid).el.remove(); streams.delete(sid); }
  room.participants = {};
}

function stopEverything(state) {
  setState(state);
  stopPeer();
  if (local.stream) for (const t of local.stream.getTracks()) t.stop();
  if (ws) ws.close();
}

function leave() {
  send({ type: 'leave' });
  stopEverything('left');
}

// ---------- stats for tests and the curious ----------
async function stats() {
  const out = {};
  for (const s of subscriptions.values()) {
    const p = room.participants[s.sid];
    const entry = out[s.sid] ||= { identity: p?.identity, framesDecoded: 0, frameWidth: 0, audioSamples: 0, audioBytes: 0 };
    const report = await s.transceiver.receiver.getStats();
    report.forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      if (r.kind === 'video') { entry.framesDecoded += r.framesDecoded || 0; entry.frameWidth = Math.max(entry.frameWidth, r.frameWidth || 0); }
      if (r.kind === 'audio') { entry.audioSamples += r.totalSamplesReceived || 0; entry.audioBytes += r.bytesReceived || 0; }
    });
  }
  return out;
}

/** The local candidate of the selected candidate pair (Chromium's stats). */
async function selectedLocalCandidate() {
  if (!room.pc) return null;
  const report = await room.pc.getStats();
  let local = null;
  report.forEach((r) => {
    if (r.type !== 'transport' || !r.selectedCandidatePairId) return;
    const pair = report.get(r.selectedCandidatePairId);
    local = report.get(pair?.localCandidateId) ?? null;
  });
  return local;
}
async function candidateType() { return (await selectedLocalCandidate())?.candidateType ?? null; }
async function candidateProtocol() { return (await selectedLocalCandidate())?.protocol ?? null; }

// ---------- page wiring ----------
$('roomname').textContent = roomName;
$('name').value = params.get('name') || localStorage.getItem('sfu-name') || '';
$('joinform').onsubmit = (e) => {
  e.preventDefault();
  localStorage.setItem('sfu-name', $('name').value);
  join($('name').value);
};
$('mute').onclick = () => setMic(!(local.mic && local.mic.enabled));
$('camtoggle').onclick = () => setCamera(!(local.cam && local.cam.enabled));
$('share').onclick = toggleShare;
$('leave').onclick = leave;
$('chatform').onsubmit = (e) => { e.preventDefault(); if (sendChat($('chatinput').value)) $('chatinput').value = ''; };
listDevices();
if (params.get('autojoin') === '1') join(params.get('name') || 'guest');
