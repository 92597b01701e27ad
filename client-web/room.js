// The meeting page: LiveKit's browser SDK (livekit-client, fetched at build
// time from client-web/package-lock.json and served as
// /js/livekit-client.umd.js) speaking LiveKit's client signalling to this
// server (signaling/PROTOCOL.md). The SDK owns the connection: one peer
// connection, simulcast publishing, dynacast, adaptive stream (a small tile
// asks for a narrower layer), resume and reconnection. This file owns the
// page: the join form and device pick, a grid of tiles, active speaker,
// mute, camera, screen share, chat over data packets, connection quality.
//
// Test contract, window.room:
//   state        'idle' | 'joining' | 'joined' | 'reconnecting' | 'removed' | 'closed' | 'left' | 'error'
//   error        last error message (string or null)
//   me           { sid, identity } once joined
//   participants { [sid]: { identity, name, metadata, quality, speaking, micMuted, tracks: { [trackSid]: { kind, source, muted } } } }
//   messages     data messages received: [{ from, topic, payload }]
//   removedReason  why the server removed us / closed the room
//   pc           the peer connection that publishes (and, in the single mode, receives)
//   iceServers   the ICE servers the server announced at the join
//   lk           the livekit-client Room
//   sendChat(text, to?)  setMic(on)  setCamera(on)  leave()
//   stats()      Promise<{ [sid]: { identity, framesDecoded, frameWidth, videoCodec, audioSamples, audioBytes } }>
//   candidateType()  Promise<local candidate type of the selected pair: 'host' | 'srflx' | 'relay' | null>
//   candidateProtocol()  Promise<transport of the selected pair: 'udp' | 'tcp' | null>
// Query parameters: ?token= (else a development token), ?autojoin=1&name=,
// ?resolution=WxH, ?simulcast=0, ?audio=0, ?video=0, ?adaptive=0 (every
// tile gets full layers whatever its size), ?relay=1 (TURN only),
// ?codec=vp8|vp9|av1|h264 (the camera's codec; VP9 and AV1 with spatial
// layers, L3T3_KEY, instead of simulcast).

const L = window.LivekitClient;
const E = L.RoomEvent;
const params = new URLSearchParams(location.search);
const roomName = params.get('room') || decodeURIComponent(location.pathname.split('/').filter(Boolean)[1] || 'demo');
const $ = (id) => document.getElementById(id);

const room = window.room = {
  state: 'idle', error: null, me: null, participants: {}, messages: [], removedReason: null,
  iceServers: [], lk: null,
  // The SDK replaces its peer connection on a full reconnect; read it each time.
  get pc() { return room.lk?.engine?.pcManager?.publisher?._pc ?? null; },
  sendChat, setMic, setCamera, leave, stats, candidateType, candidateProtocol,
};
const tiles = new Map(); // participant sid -> { el, video, label, quality }

function setState(s) { room.state = s; $('status').textContent = s; }
function showError(msg) {
  room.error = msg;
  const b = $('banner'); b.textContent = msg || ''; b.className = msg ? 'show' : '';
}

// ---------- devices and joining ----------
async function listDevices() {
  for (const [sel, kind] of [[$('camera'), 'videoinput'], [$('mic'), 'audioinput']]) {
    try {
      const devices = await L.Room.getLocalDevices(kind, false);
      sel.innerHTML = '';
      for (const d of devices) {
        const o = document.createElement('option');
        o.value = d.deviceId; o.textContent = d.label || kind;
        sel.append(o);
      }
    } catch (e) { showError(`cannot list devices: ${e.message}`); }
  }
}

async function switchDevice(kind, deviceId) {
  if (room.lk && deviceId) await room.lk.switchActiveDevice(kind, deviceId).catch((e) => showError(`${kind}: ${e.message}`));
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
  const [width, height] = (params.get('resolution') || '640x360').split('x').map(Number);
  const lk = room.lk = new L.Room({
    adaptiveStream: params.get('adaptive') !== '0',
    dynacast: true,
    videoCaptureDefaults: { resolution: { width, height }, deviceId: $('camera').value || undefined },
    audioCaptureDefaults: { deviceId: $('mic').value || undefined },
    publishDefaults: {
      simulcast: params.get('simulcast') !== '0',
      ...(params.get('codec') ? { videoCodec: params.get('codec'), backupCodec: false } : {}),
    },
  });
  wire(lk);
  try {
    const token = await fetchToken(identity);
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    await lk.connect(`${proto}//${location.host}`, token, {
      rtcConfig: params.get('relay') === '1' ? { iceTransportPolicy: 'relay' } : undefined,
    });
  } catch (e) {
    setState('error'); showError(`cannot join: ${e.message}`); return;
  }
  room.me = { sid: lk.localParticipant.sid, identity: lk.localParticipant.identity };
  room.iceServers = lk.engine.latestJoinResponse?.iceServers ?? [];
  if (name && lk.localParticipant.name !== name) lk.localParticipant.setName(name).catch(() => {});
  $('joinform').hidden = true; $('controls').hidden = false; $('chat').hidden = false;
  addTile(lk.localParticipant.sid, `${name} (you)`, true);
  for (const p of lk.remoteParticipants.values()) addParticipant(p);
  setState('joined');
  try {
    await lk.localParticipant.enableCameraAndMicrophone().catch(async () => {
      // No camera or no microphone: publish what there is.
      if (params.get('audio') !== '0') await lk.localParticipant.setMicrophoneEnabled(true).catch(() => {});
      if (params.get('video') !== '0') await lk.localParticipant.setCameraEnabled(true).catch(() => {});
    });
    if (params.get('audio') === '0') await lk.localParticipant.setMicrophoneEnabled(false);
    if (params.get('video') === '0') await lk.localParticipant.setCameraEnabled(false);
  } catch (e) { showError(`cannot publish: ${e.message}`); }
  updateButtons();
}

function wire(lk) {
  lk.on(E.ParticipantConnected, addParticipant)
    .on(E.ParticipantDisconnected, (p) => removeParticipant(p.sid))
    .on(E.TrackSubscribed, (track, _pub, p) => { attach(p, track); render(p); })
    .on(E.TrackUnsubscribed, (track, _pub, p) => {
      for (const el of track.detach()) if (el.tagName === 'AUDIO') el.remove();
      render(p);
    })
    .on(E.TrackPublished, (_pub, p) => render(p))
    .on(E.TrackUnpublished, (_pub, p) => render(p))
    .on(E.TrackMuted, (_pub, p) => render(p))
    .on(E.TrackUnmuted, (_pub, p) => render(p))
    .on(E.ParticipantNameChanged, (_n, p) => render(p))
    .on(E.ParticipantMetadataChanged, (_m, p) => render(p))
    .on(E.ConnectionQualityChanged, (_q, p) => render(p))
    .on(E.ActiveSpeakersChanged, () => { for (const p of everyone()) render(p); })
    .on(E.LocalTrackPublished, (pub) => {
      const tile = tiles.get(lk.localParticipant.sid);
      if (tile && pub.kind === 'video' && pub.source === L.Track.Source.Camera) pub.track.attach(tile.video);
      updateButtons();
    })
    .on(E.LocalTrackUnpublished, () => updateButtons())
    .on(E.DataReceived, (payload, p, _kind, topic) => {
      const text = new TextDecoder().decode(payload);
      room.messages.push({ from: p?.identity ?? null, topic: topic ?? null, payload: text });
      if (topic === 'chat') appendChat(p?.name || p?.identity || 'server', text);
    })
    .on(E.SignalReconnecting, () => setState('reconnecting'))
    .on(E.Reconnecting, () => setState('reconnecting'))
    .on(E.Reconnected, () => { setState('joined'); showError(null); })
    .on(E.MediaDevicesError, (e) => showError(`devices: ${e.message}`))
    .on(E.Disconnected, disconnected);
}

const REASONS = {
  [L.DisconnectReason.PARTICIPANT_REMOVED]: ['removed', 'You were removed by an administrator'],
  [L.DisconnectReason.ROOM_DELETED]: ['closed', 'The meeting ended: the room was closed'],
  [L.DisconnectReason.DUPLICATE_IDENTITY]: ['removed', 'You joined from somewhere else'],
  [L.DisconnectReason.CLIENT_INITIATED]: ['left', null],
};

function disconnected(reason) {
  const [state, text] = REASONS[reason]
    ?? ['error', `lost the connection to the server (${L.DisconnectReason[reason] ?? reason})`];
  if (room.state === 'left') return;
  room.removedReason = text;
  for (const sid of [...tiles.keys()]) removeParticipant(sid);
  setState(state);
  showError(text);
}

// ---------- room state and tiles ----------
const everyone = () => room.lk ? [room.lk.localParticipant, ...room.lk.remoteParticipants.values()] : [];

function addTile(sid, label, mine = false) {
  if (tiles.has(sid)) return tiles.get(sid);
  const el = document.createElement('div');
  el.className = 'tile'; el.id = `tile-${sid}`;
  const video = document.createElement('video');
  video.autoplay = true; video.playsInline = true; video.muted = true;
  const lab = document.createElement('div'); lab.className = 'label'; lab.textContent = label;
  const q = document.createElement('div'); q.className = 'quality';
  const off = document.createElement('div'); off.className = 'off'; off.textContent = '📷✕';
  el.append(video, off, lab, q);
  $('grid').append(el);
  const tile = { el, video, label: lab, quality: q, mine };
  tiles.set(sid, tile);
  return tile;
}

function attach(p, track) {
  const tile = addTile(p.sid, p.name || p.identity);
  if (track.kind === 'video' && track.source !== L.Track.Source.ScreenShare) track.attach(tile.video);
  else if (track.kind === 'video') {
    // A screen share gets a tile of its own.
    const share = addTile(`${p.sid}-screen`, `${p.name || p.identity} (screen)`);
    track.attach(share.video);
  } else document.body.append(track.attach());
}

/** Refresh the model and the tile of participant `p` from the SDK's view of it. */
function render(p) {
  if (!room.lk) return;
  const mine = p === room.lk.localParticipant;
  const tracks = {};
  for (const pub of p.trackPublications.values()) {
    tracks[pub.trackSid] = { kind: pub.kind, source: pub.source, muted: pub.isMuted };
  }
  const mic = p.getTrackPublication(L.Track.Source.Microphone);
  const cam = p.getTrackPublication(L.Track.Source.Camera);
  const micMuted = !mic || mic.isMuted;
  if (!mine && room.participants[p.sid]) {
    Object.assign(room.participants[p.sid], {
      name: p.name, metadata: p.metadata, quality: p.connectionQuality, speaking: p.isSpeaking, micMuted, tracks,
    });
  }
  const tile = tiles.get(p.sid);
  if (!tile) return;
  tile.label.textContent = `${p.name || p.identity}${mine ? ' (you)' : ''}${micMuted ? ' 🔇' : ''}`;
  tile.el.classList.toggle('camera-off', !cam || cam.isMuted);
  tile.el.classList.toggle('speaking', p.isSpeaking);
  tile.quality.className = `quality ${p.connectionQuality}`;
  const screen = tiles.get(`${p.sid}-screen`);
  if (screen && !p.getTrackPublication(L.Track.Source.ScreenShare)?.track) {
    screen.el.remove(); tiles.delete(`${p.sid}-screen`);
  }
}

function addParticipant(p) {
  room.participants[p.sid] = { identity: p.identity, name: p.name, tracks: {} };
  addTile(p.sid, p.name || p.identity);
  render(p);
}

function removeParticipant(sid) {
  delete room.participants[sid];
  for (const key of [sid, `${sid}-screen`]) {
    const tile = tiles.get(key);
    if (tile) { tile.el.remove(); tiles.delete(key); }
  }
}

// ---------- chat ----------
function appendChat(from, text) {
  const line = document.createElement('div');
  line.textContent = `${from}: ${text}`;
  $('chatlog').append(line);
  $('chatlog').scrollTop = $('chatlog').scrollHeight;
}

/** Send `text` to everyone, or to the identity `to`; false when not in the meeting. */
async function sendChat(text, to) {
  if (room.state !== 'joined') return false;
  await room.lk.localParticipant.publishData(new TextEncoder().encode(text),
    { reliable: true, topic: 'chat', destinationIdentities: to ? [to] : undefined });
  appendChat('me', text);
  return true;
}

// ---------- controls ----------
async function setMic(on) {
  await room.lk?.localParticipant.setMicrophoneEnabled(on).catch((e) => showError(`microphone: ${e.message}`));
  updateButtons();
}

async function setCamera(on) {
  await room.lk?.localParticipant.setCameraEnabled(on).catch((e) => showError(`camera: ${e.message}`));
  if (room.lk) render(room.lk.localParticipant);
  updateButtons();
}

async function toggleShare() {
  const lp = room.lk?.localParticipant;
  if (!lp) return;
  await lp.setScreenShareEnabled(!lp.isScreenShareEnabled).catch((e) => showError(`screen share: ${e.message}`));
  updateButtons();
}

function updateButtons() {
  const lp = room.lk?.localParticipant;
  $('mute').textContent = lp?.isMicrophoneEnabled ? 'Mute' : 'Unmute';
  $('camtoggle').textContent = lp?.isCameraEnabled ? 'Camera off' : 'Camera on';
  $('share').textContent = lp?.isScreenShareEnabled ? 'Stop sharing' : 'Share screen';
}

async function leave() {
  setState('left');
  await room.lk?.disconnect();
  for (const sid of [...tiles.keys()]) removeParticipant(sid);
}

// ---------- stats for tests and the curious ----------
async function stats() {
  const out = {};
  for (const p of room.lk?.remoteParticipants.values() ?? []) {
    const entry = out[p.sid] = { identity: p.identity, framesDecoded: 0, frameWidth: 0, videoCodec: null, audioSamples: 0, audioBytes: 0 };
    for (const pub of p.trackPublications.values()) {
      const report = await pub.track?.getRTCStatsReport?.();
      report?.forEach((r) => {
        if (r.type !== 'inbound-rtp') return;
        if (r.kind === 'video') {
          entry.framesDecoded += r.framesDecoded || 0; entry.frameWidth = Math.max(entry.frameWidth, r.frameWidth || 0);
          entry.videoCodec = report.get(r.codecId)?.mimeType ?? entry.videoCodec;
        }
        if (r.kind === 'audio') { entry.audioSamples += r.totalSamplesReceived || 0; entry.audioBytes += r.bytesReceived || 0; }
      });
    }
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
$('camera').onchange = () => switchDevice('videoinput', $('camera').value);
$('mic').onchange = () => switchDevice('audioinput', $('mic').value);
$('mute').onclick = () => setMic(!room.lk?.localParticipant.isMicrophoneEnabled);
$('camtoggle').onclick = () => setCamera(!room.lk?.localParticipant.isCameraEnabled);
$('share').onclick = toggleShare;
$('leave').onclick = leave;
$('chatform').onsubmit = async (e) => {
  e.preventDefault();
  if (await sendChat($('chatinput').value)) $('chatinput').value = '';
};
listDevices();
if (params.get('autojoin') === '1') join(params.get('name') || 'guest');
