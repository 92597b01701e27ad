// livekit-client (npm, the version in package.json) in a test page: open a
// same-origin page of the server under test, load the SDK's UMD bundle
// from node_modules, and drive a Room from the test. What the page keeps:
// window.lk.events (room events in order), window.lk.subscribed (remote
// tracks by sid, attached to muted autoplaying elements so they decode).

import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openPage } from './browser.mjs';

const here = dirname(fileURLToPath(import.meta.url));
export const LIVEKIT_UMD = join(here, '..', 'node_modules', 'livekit-client', 'dist', 'livekit-client.umd.js');

const PAGE_SIDE = `
window.lk = { events: [], subscribed: {}, speakers: [], data: [] };
window.lkJoin = async (url, token, opts) => {
  const L = LivekitClient;
  const room = new L.Room({ adaptiveStream: false, dynacast: true, ...(opts.room || {}) });
  window.lk.room = room;
  const E = L.RoomEvent;
  room.on(E.TrackSubscribed, (track, pub, p) => {
    const el = track.attach(); el.muted = true; el.autoplay = true; document.body.appendChild(el);
    window.lk.subscribed[track.sid] = { track, pub, identity: p.identity, kind: track.kind };
    window.lk.events.push(['subscribed', p.identity, track.kind]);
  });
  room.on(E.TrackUnsubscribed, (track, pub, p) => {
    delete window.lk.subscribed[track.sid];
    window.lk.events.push(['unsubscribed', p.identity, track.kind]);
  });
  room.on(E.ParticipantConnected, (p) => window.lk.events.push(['connected', p.identity]));
  room.on(E.ParticipantDisconnected, (p) => window.lk.events.push(['left', p.identity]));
  room.on(E.TrackMuted, (pub, p) => window.lk.events.push(['muted', p.identity, pub.kind]));
  room.on(E.TrackUnmuted, (pub, p) => window.lk.events.push(['unmuted', p.identity, pub.kind]));
  room.on(E.ActiveSpeakersChanged, (s) => window.lk.speakers.push(s.map((p) => p.identity)));
  room.on(E.Disconnected, (reason) => window.lk.events.push(['disconnected', reason]));
  room.on(E.SignalReconnecting, () => window.lk.events.push(['signal-reconnecting']));
  room.on(E.Reconnecting, () => window.lk.events.push(['reconnecting']));
  room.on(E.Reconnected, () => window.lk.events.push(['reconnected']));
  room.on(E.DataReceived, (payload, p, kind, topic) => window.lk.data.push({
    from: p?.identity ?? null, topic: topic ?? null, text: new TextDecoder().decode(payload), kind,
  }));
  await room.connect(url, token, { rtcConfig: { iceServers: [] } });
  // 'publisher-only': one peer connection (/rtc/v1); 'subscriber-primary': two (/rtc).
  window.lk.mode = room.engine?.pcManager?._mode ?? null;
  if (opts.publish) await room.localParticipant.enableCameraAndMicrophone();
  return room.localParticipant.sid;
};
// What each remote track delivers, by publisher identity and kind.
window.lkReceived = async () => {
  const out = {};
  for (const s of Object.values(window.lk.subscribed)) {
    const report = await s.track.getRTCStatsReport();
    const e = { framesDecoded: 0, frameWidth: 0, samples: 0, codec: null };
    report?.forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      e.framesDecoded = r.framesDecoded ?? 0; e.frameWidth = r.frameWidth ?? 0;
      e.samples = r.totalSamplesReceived ?? 0;
      e.codec = report.get(r.codecId)?.mimeType ?? null;
    });
    out[s.identity + '/' + s.kind] = e;
  }
  return out;
};
window.lkSetEnabled = (identity, enabled) => {
  for (const s of Object.values(window.lk.subscribed)) {
    if (s.identity === identity && s.kind === 'video') s.pub.setEnabled(enabled);
  }
};
window.lkSetQuality = (identity, quality) => {
  for (const s of Object.values(window.lk.subscribed)) {
    if (s.identity === identity && s.kind === 'video') s.pub.setVideoQuality(LivekitClient.VideoQuality[quality]);
  }
};
`;

/** A page of its own (fresh context) with livekit-client loaded. */
export async function openLiveKitPage(browser, base, label) {
  const page = await openPage(browser, `${base}/livez`, label);
  await page.addScriptTag({ path: LIVEKIT_UMD });
  await page.addScriptTag({ content: PAGE_SIDE });
  return page;
}

/** Join `url` (ws://…) with `token`; returns the participant sid. */
export function joinRoom(page, url, token, { publish = true, room = {} } = {}) {
  return page.evaluate(([u, t, o]) => window.lkJoin(u, t, o), [url, token, { publish, room }]);
}

/** livekit-client's connection mode ('publisher-only': single peer connection). */
export const connectionMode = (page) => page.evaluate(() => window.lk.mode);
/** Room options of LiveKit's dual peer connection mode (/rtc). */
export const DUAL = { singlePeerConnection: false };
export const received = (page) => page.evaluate(() => window.lkReceived());
export const events = (page) => page.evaluate(() => window.lk.events);
export const dataReceived = (page) => page.evaluate(() => window.lk.data);
/** Publish text as a data packet (reliable unless `lossy`), to `to` identities or everyone. */
export const publishData = (page, text, { topic = 'chat', to = [], lossy = false } = {}) => page.evaluate(
  ([t, o]) => window.lk.room.localParticipant.publishData(new TextEncoder().encode(t),
    { reliable: !o.lossy, topic: o.topic, destinationIdentities: o.to }),
  [text, { topic, to, lossy }]);
export const speakers = (page) => page.evaluate(() => window.lk.speakers);
