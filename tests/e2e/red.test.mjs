// Audio redundancy (RED, RFC 2198) with real Chromium: a publisher sends the
// fake microphone over WHIP with the browser's default audio codecs (Opus
// and red/48000/2); the server's answer lists RED first, so Chromium sends
// RED (each packet carries the current Opus frame and the previous one).
// Two WHEP players in their own network namespace lose 15 % of what the
// server sends them (iptables statistic, random, in that namespace's
// INPUT): player A offers the default codecs and gets RED, player B removes
// RED with setCodecPreferences and gets the primary Opus block alone. With
// one redundant block a frame is concealed only when its packet AND the
// next one are lost (~0.15^2 = 2.3 %); without RED every lost packet is
// concealed (~15 %). Bound: A's concealed share of the samples played is at
// most half of B's, and B's is over 3 % (so the loss really bites).
//
// All three peers are built by hand in pages of the server's origin
// (window.red = { pc, stream }): WHIP/WHEP POST with a Bearer token, no
// trickle (what is gathered in 2 s goes in the offer). Each player plays
// its track in an <audio> element (Chromium pulls samples from NetEq, and
// counts totalSamplesReceived/concealedSamples, only for a track that is
// played out).
//
// What is on the wire is counted too, with iptables u32 on the clear RTP
// header (payload type) per destination port: the publisher's packets to
// the server (this namespace, INPUT from the publisher's port) and the
// server's packets to each player (the players' namespace, INPUT to the
// player's port); the DROP rules there are per player, so each player's
// dropped count is known.
//
// MEASURED (10 runs, sfu builds of 2026-12-07 15:28 and 15:32, this 2-core
// machine, load 1-3.4, ~27 s per run; 20 s windows of ~1010 packets):
//   publisher      offers 111 opus, 63 red (fmtp 111/111); the answer is
//                  "63 111": Chromium sends RED (every RTP packet pt 63 on
//                  the wire), ~50 packets/s, 47-51 kbit/s payload (the
//                  Opus target is 32 kbit/s; RED carries each frame
//                  twice). Its outbound-rtp codec stats say audio/opus pt
//                  111 all the same, and sender.getParameters().codecs[0]
//                  audio/red: only the wire shows what it sends.
//   player A (red) answer "63 111"; pt 63 on the wire, never 111; inbound
//                  codec stats say audio/opus (NetEq's decoder, not the
//                  RTP payload type); 39-44 kbit/s payload under the loss;
//                  packetsDiscarded ~700-750 (redundant copies of frames
//                  already received); concealed 1.4-2.6 % in 16-26 events
//   player B (opus) answer "111"; pt 111 on the wire, never 63; 19-21
//                  kbit/s payload; concealed 11.7-14.3 % in 126-173 events
//   dropped        12.5-16.6 % of each player's packets (iptables)
//   ratio A/B      0.10-0.22 (bound: <= 0.5)
// The build of 15:32 dropped Chromium's padding-only packets (RTP padding
// bit, pt 63; with no video track libwebrtc pads on the audio stream: ~18
// at the start, then ~3 every 5 s) as malformed RED
// (sfu_malformed_packets_total{codec="red"}, as many as the wire's padded
// packets in every run): each was a gap in every subscriber's numbering
// (packetsLost exceeded the iptables drops by up to 12). Fixed (padding is
// recognised before the RED header is read, and squeezed out); the last
// assertion checks that nothing is dropped as malformed RED. After the fix
// (build of 15:52): concealed A 1.81 %, B 12.95 %, ratio 0.14.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchBrowser, openPage, waitFor, reportMetric, sleep, createPeerHost, signToken, sh,
} from './lib/harness.mjs';

const KEY = 'e2e';
const SECRET = 'e2e-red-secret';
const LOSS = Number(process.env.RED_LOSS || 0.15);
// 12 s in the suite (the figures above are from 20 s windows: LOSS_MS=20000).
const LOSS_MS = Number(process.env.LOSS_MS || 12000);

/** The m=audio section of `sdp`: its m= line, rtpmap and fmtp lines. */
function audioLines(sdp) {
  const lines = (sdp || '').split(/\r?\n/);
  const at = lines.findIndex((l) => l.startsWith('m=audio'));
  if (at < 0) return [];
  const end = lines.findIndex((l, i) => i > at && l.startsWith('m='));
  return lines.slice(at, end < 0 ? undefined : end).filter((l) => /^(m=|a=rtpmap|a=fmtp)/.test(l));
}

/** The audio section's codecs in m= line order: [{ pt, name }] (name lower case, 'opus', 'red'...). */
function audioCodecs(sdp) {
  const lines = audioLines(sdp);
  if (!lines.length) return [];
  const names = {};
  for (const l of lines) {
    const m = l.match(/^a=rtpmap:(\d+) ([^/]+)\//);
    if (m) names[m[1]] = m[2].toLowerCase();
  }
  return lines[0].split(' ').slice(3).map((pt) => ({ pt: Number(pt), name: names[pt] ?? '?' }));
}
const ptOf = (codecs, name) => codecs.find((c) => c.name === name)?.pt ?? null;
const describe = (codecs) => codecs.map((c) => `${c.pt}:${c.name}`).join(' ');

/**
 * In `page` (of the server's origin): one audio transceiver, the offer
 * POSTed to `url` with `token`, the answer applied. `publish`: the fake
 * microphone, sendonly; otherwise recvonly, played in an <audio> element,
 * and with `noRed` RED is removed from the codec preferences.
 * Returns { status, error, offer, answer, location }.
 */
const negotiate = (page, url, token, { publish = false, noRed = false } = {}) => page.evaluate(async ({ url, token, publish, noRed }) => {
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  window.red = { pc, stream: null };
  let transceiver;
  if (publish) {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    window.red.stream = stream;
    transceiver = pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly', streams: [stream] });
  } else {
    transceiver = pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addEventListener('track', (e) => {
      const el = document.createElement('audio');
      el.autoplay = true;
      el.srcObject = e.streams[0] || new MediaStream([e.track]);
      document.body.append(el);
      window.red.element = el;
      el.play().catch((err) => { window.red.playError = String(err); });
    });
    if (noRed) {
      const codecs = RTCRtpReceiver.getCapabilities('audio').codecs;
      transceiver.setCodecPreferences(codecs.filter((c) => c.mimeType.toLowerCase() !== 'audio/red'));
    }
  }
  await pc.setLocalDescription(await pc.createOffer());
  if (pc.iceGatheringState !== 'complete') {
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 2000);
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') { clearTimeout(timer); resolve(); }
      });
    });
  }
  const resp = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` },
    body: pc.localDescription.sdp,
    signal: AbortSignal.timeout(10000),
  });
  const body = await resp.text();
  const out = { status: resp.status, location: resp.headers.get('location'), offer: pc.localDescription.sdp };
  if (resp.status !== 201) return { ...out, error: body.trim() };
  await pc.setRemoteDescription({ type: 'answer', sdp: body });
  return { ...out, answer: body, sendCodec: transceiver.sender.getParameters().codecs?.[0]?.mimeType ?? null };
}, { url, token, publish, noRed });

/**
 * The page's audio RTP stream (outbound for the publisher, inbound for a
 * player) with its codec, and the selected candidate pair's ports.
 */
const audioStats = (page) => page.evaluate(async () => {
  const pc = window.red && window.red.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  const out = { state: pc.connectionState, at: Date.now(), playError: window.red.playError ?? null };
  let pair = null;
  stats.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
  });
  if (pair) {
    const l = stats.get(pair.localCandidateId);
    const rm = stats.get(pair.remoteCandidateId);
    out.localPort = l?.port ?? null;
    out.remotePort = rm?.port ?? null;
    out.local = l ? `${l.address}:${l.port}` : null;
    out.remote = rm ? `${rm.address}:${rm.port}` : null;
  }
  stats.forEach((r) => {
    if ((r.type !== 'inbound-rtp' && r.type !== 'outbound-rtp') || r.kind !== 'audio') return;
    const codec = r.codecId ? stats.get(r.codecId) : null;
    const n = (k) => r[k] || 0;
    const common = {
      codec: codec ? codec.mimeType : null, payloadType: codec ? codec.payloadType : null,
      fmtp: codec?.sdpFmtpLine ?? null,
    };
    if (r.type === 'outbound-rtp') {
      out.outbound = { ...common, packetsSent: n('packetsSent'), bytesSent: n('bytesSent'),
        headerBytesSent: n('headerBytesSent'), targetBitrate: n('targetBitrate') };
    } else if (!out.inbound || n('packetsReceived') > out.inbound.packetsReceived) {
      out.inbound = {
        ...common,
        packetsReceived: n('packetsReceived'), packetsLost: n('packetsLost'), packetsDiscarded: n('packetsDiscarded'),
        bytesReceived: n('bytesReceived'), headerBytesReceived: n('headerBytesReceived'),
        totalSamplesReceived: n('totalSamplesReceived'), concealedSamples: n('concealedSamples'),
        silentConcealedSamples: n('silentConcealedSamples'), concealmentEvents: n('concealmentEvents'),
        insertedSamplesForDeceleration: n('insertedSamplesForDeceleration'),
        removedSamplesForAcceleration: n('removedSamplesForAcceleration'),
        fecPacketsReceived: n('fecPacketsReceived'), fecPacketsDiscarded: n('fecPacketsDiscarded'),
        jitterBufferDelay: n('jitterBufferDelay'), jitterBufferEmittedCount: n('jitterBufferEmittedCount'),
        totalSamplesDuration: n('totalSamplesDuration'), totalAudioEnergy: n('totalAudioEnergy'),
      };
    }
  });
  return out;
});

// u32 expressions on the UDP payload (IP header length from the first word):
// RTP version 2 and the payload type (as uplink_loss.test.mjs).
const RTP_V2 = '0>>22&0x3C@8>>30=2';
const rtpPt = (pt) => `${RTP_V2}&&0>>22&0x3C@8>>16&0x7F=${pt}`;
// RTP with the padding bit set (libwebrtc's padding for bandwidth probing).
const RTP_PADDED = `${RTP_V2}&&0>>22&0x3C@8>>29&0x1=1`;

/** The server's counters of audio in and out and of packets it dropped or absorbed. */
const serverFigures = (m) => Object.fromEntries(Object.entries(m).filter(([k]) =>
  /^sfu_(media_packets_(received|forwarded)_total\{.*audio|media_packets_late|stale_audio|publisher_stream_events|malformed_packets)/.test(k)));

/** Packet counters of the rules of `chain` (run through `run`), in order. */
function counters(run, chain) {
  return run('-L', chain, '-v', '-x', '-n').split('\n').slice(2).filter((l) => l.trim())
    .map((l) => Number(l.trim().split(/\s+/)[0]));
}

test('audio RED keeps speech intact at 15 % loss', async (t) => {
  const started = Date.now();
  const peer = createPeerHost(t, 'red');
  const server = await startServer(t, 'red',
    ['--media-addr', peer.hostIp, '--api-key', KEY, '--api-secret', SECRET, '--log', 'info,sfu::forward=debug,sfu::worker=debug'], peer.hostIp);
  const room = 'red';
  const tok = (id, opts) => signToken(KEY, SECRET, room, id, opts);
  const [local, remote] = await Promise.all([launchBrowser(t, null, server.base), launchBrowser(t, peer.ns, server.base)]);

  // 1-2. The publisher: the fake microphone, default codecs.
  const publisher = await openPage(local, `${server.base}/`, 'publisher');
  const whip = await negotiate(publisher, `${server.base}/whip/${room}`, tok('pub', { publish: true }), { publish: true });
  const pubOffer = audioCodecs(whip.offer);
  const pubAnswer = audioCodecs(whip.answer);
  console.log(`WHIP ${whip.status}${whip.error ? ` ${whip.error}` : ''}`);
  console.log('publisher offer audio', JSON.stringify(audioLines(whip.offer)));
  console.log('publisher answer audio', JSON.stringify(audioLines(whip.answer)));
  reportMetric('publisher_offer_audio_codecs', JSON.stringify(describe(pubOffer)));
  reportMetric('publisher_answer_audio_codecs', JSON.stringify(describe(pubAnswer)));
  assert.equal(whip.status, 201, `WHIP answers 201 (${whip.status}: ${whip.error})`);
  assert.ok(ptOf(pubOffer, 'red') !== null, `Chromium offers red (${describe(pubOffer)})`);
  assert.ok(ptOf(pubAnswer, 'red') !== null, `the WHIP answer negotiates red (${describe(pubAnswer)})`);

  // 3. Two players in the peer namespace: A with the default codecs, B without RED.
  const [pageA, pageB] = await Promise.all([
    openPage(remote, `${server.base}/`, 'A (red)'), openPage(remote, `${server.base}/`, 'B (opus)'),
  ]);
  const [whepA, whepB] = await Promise.all([
    negotiate(pageA, `${server.base}/whep/${room}`, tok('a', { subscribe: true })),
    negotiate(pageB, `${server.base}/whep/${room}`, tok('b', { subscribe: true }), { noRed: true }),
  ]);
  const players = [
    { label: 'A', page: pageA, whep: whepA },
    { label: 'B', page: pageB, whep: whepB },
  ];
  for (const p of players) {
    p.offer = audioCodecs(p.whep.offer);
    p.answer = audioCodecs(p.whep.answer);
    console.log(`WHEP ${p.label} ${p.whep.status}${p.whep.error ? ` ${p.whep.error}` : ''}`);
    console.log(`player ${p.label} offer audio`, JSON.stringify(audioLines(p.whep.offer)));
    console.log(`player ${p.label} answer audio`, JSON.stringify(audioLines(p.whep.answer)));
    reportMetric(`player_${p.label}_offer_audio_codecs`, JSON.stringify(describe(p.offer)));
    reportMetric(`player_${p.label}_answer_audio_codecs`, JSON.stringify(describe(p.answer)));
  }
  for (const p of players) assert.equal(p.whep.status, 201, `WHEP ${p.label} answers 201 (${p.whep.status}: ${p.whep.error})`);
  assert.ok(ptOf(players[0].answer, 'red') !== null, `A's answer negotiates red (${describe(players[0].answer)})`);
  assert.equal(ptOf(players[1].offer, 'red'), null, `B's offer has no red (${describe(players[1].offer)})`);
  assert.equal(ptOf(players[1].answer, 'red'), null, `B's answer has no red (${describe(players[1].answer)})`);

  // Connected and receiving audio (samples played out) on both players.
  const pub0 = await waitFor('the publisher sends audio', async () => {
    const s = await audioStats(publisher);
    return s?.outbound?.packetsSent > 0 && s.localPort ? s : false;
  }, 20000, 200);
  for (const p of players) {
    p.ready = await waitFor(`player ${p.label} plays audio`, async () => {
      const s = await audioStats(p.page);
      return s?.inbound?.totalSamplesReceived > 0 && s.localPort ? s : false;
    }, 20000, 200);
  }
  console.log('publisher', JSON.stringify(pub0));
  reportMetric('publisher_outbound_codec', `${pub0.outbound.codec} pt ${pub0.outbound.payloadType}`);
  reportMetric('publisher_send_codec_parameters', whip.sendCodec);

  // What is on the wire, by payload type: the publisher's packets to the
  // server (this namespace), the server's packets to each player (the
  // players' namespace, where the loss is applied later).
  const ipt = (...args) => sh('iptables', ...args);
  const iptPeer = (...args) => sh('ip', 'netns', 'exec', peer.ns, 'iptables', ...args);
  const PUB = 'E2E_RED_PUB';
  const DOWN = 'E2E_RED_DOWN';
  const pubJump = ['INPUT', '-p', 'udp', '--sport', String(pub0.localPort), '-j', PUB];
  ipt('-N', PUB);
  ipt('-I', ...pubJump);
  t.after(() => { try { ipt('-D', ...pubJump); ipt('-F', PUB); ipt('-X', PUB); } catch { /* gone */ } });
  const pubRed = ptOf(pubAnswer, 'red');
  const pubOpus = ptOf(pubAnswer, 'opus');
  ipt('-A', PUB, '-m', 'u32', '--u32', rtpPt(pubRed));
  ipt('-A', PUB, '-m', 'u32', '--u32', rtpPt(pubOpus));
  ipt('-A', PUB);
  ipt('-A', PUB, '-m', 'u32', '--u32', RTP_PADDED);
  const downJump = ['INPUT', '-s', peer.hostIp, '-p', 'udp', '-j', DOWN];
  iptPeer('-N', DOWN);
  iptPeer('-I', ...downJump);
  t.after(() => { try { iptPeer('-D', ...downJump); iptPeer('-F', DOWN); iptPeer('-X', DOWN); } catch { /* namespace gone */ } });
  // Per player: [DROP (added at the window's start), red, opus, all passed].
  const countRules = (p) => {
    const port = String(p.ready.localPort);
    iptPeer('-A', DOWN, '-p', 'udp', '--dport', port, '-m', 'u32', '--u32', rtpPt(ptOf(p.answer, 'red') ?? 127));
    iptPeer('-A', DOWN, '-p', 'udp', '--dport', port, '-m', 'u32', '--u32', rtpPt(ptOf(p.answer, 'opus')));
    iptPeer('-A', DOWN, '-p', 'udp', '--dport', port);
  };
  players.forEach(countRules);
  iptPeer('-A', DOWN);
  await sleep(3000);
  const pubWire = counters(ipt, PUB);
  const downWire = counters(iptPeer, DOWN);
  const wire = {
    publisher: { red: pubWire[0], opus: pubWire[1], all: pubWire[2] },
    A: { red: downWire[0], opus: downWire[1], all: downWire[2] },
    B: { red: downWire[3], opus: downWire[4], all: downWire[5] },
  };
  console.log('packets on the wire in 3 s before the loss (by RTP payload type)', JSON.stringify(wire));
  // (The counters are read rule by rule while packets arrive: a count can
  // exceed the catch-all's by a packet or two.)
  const wireText = (w, red, opus) => `red(pt ${red}) ${w.red}, opus(pt ${opus}) ${w.opus}, udp ${w.all}`;
  reportMetric('wire_publisher_packets_3s', wireText(wire.publisher, pubRed, pubOpus));
  for (const p of players) {
    reportMetric(`wire_player_${p.label}_packets_3s`, wireText(wire[p.label], ptOf(p.answer, 'red'), ptOf(p.answer, 'opus')));
  }
  for (const p of players) {
    const s = await audioStats(p.page);
    p.codecBefore = `${s.inbound.codec} pt ${s.inbound.payloadType}`;
    reportMetric(`player_${p.label}_inbound_codec`, p.codecBefore);
  }

  // 4-5. 15 % of what the server sends each player is dropped for LOSS_MS.
  const rulesPerPlayer = 3;
  players.forEach((p, i) => {
    iptPeer('-I', DOWN, String(1 + i * (rulesPerPlayer + 1)), '-p', 'udp', '--dport', String(p.ready.localPort),
      '-m', 'statistic', '--mode', 'random', '--probability', String(LOSS), '-j', 'DROP');
  });
  iptPeer('-Z', DOWN);
  ipt('-Z', PUB);
  const before = await Promise.all(players.map((p) => audioStats(p.page)));
  const pubBefore = await audioStats(publisher);
  const serverBefore = serverFigures(await server.metrics());
  await sleep(LOSS_MS);
  const after = await Promise.all(players.map((p) => audioStats(p.page)));
  const pubAfter = await audioStats(publisher);
  const serverAfter = serverFigures(await server.metrics());
  const lossy = counters(iptPeer, DOWN);
  const pubLossy = counters(ipt, PUB);
  // Lift the loss, last player's DROP first (the rules go in t.after too).
  players.map((p, i) => 1 + i * (rulesPerPlayer + 1)).reverse().forEach((at) => iptPeer('-D', DOWN, String(at)));
  const rule = (i, k) => lossy[i * (rulesPerPlayer + 1) + k];

  // Before the loss (from the player's first samples to the window's
  // start): packets the player missed although nothing was dropped.
  players.forEach((p, i) => {
    const [a, b] = [p.ready.inbound, before[i].inbound];
    reportMetric(`player_${p.label}_before_loss_packets_lost`, `${b.packetsLost - a.packetsLost}/${b.packetsReceived - a.packetsReceived + b.packetsLost - a.packetsLost}`,
      `(in ${((before[i].at - p.ready.at) / 1000).toFixed(1)} s)`);
    reportMetric(`player_${p.label}_before_loss_concealed_samples`, b.concealedSamples - a.concealedSamples);
  });
  // The server's view of the window: audio in and out, and anything it dropped.
  for (const k of Object.keys(serverAfter)) {
    const dv = serverAfter[k] - (serverBefore[k] ?? 0);
    reportMetric(`server_${k}`, dv, '(over the window)');
  }
  reportMetric('wire_publisher_packets_in_window', `red ${pubLossy[0]}, opus ${pubLossy[1]}, udp ${pubLossy[2]}, RTP with padding bit ${pubLossy[3]}`);
  const pubSecs = (pubAfter.at - pubBefore.at) / 1000;
  reportMetric('publisher_kbit', (((pubAfter.outbound.bytesSent - pubBefore.outbound.bytesSent) * 8) / pubSecs / 1000).toFixed(1), 'kbit/s payload');
  reportMetric('publisher_packets_per_s', ((pubAfter.outbound.packetsSent - pubBefore.outbound.packetsSent) / pubSecs).toFixed(1));
  const results = {};
  players.forEach((p, i) => {
    const a = before[i].inbound;
    const b = after[i].inbound;
    const d = (k) => b[k] - a[k];
    const secs = (after[i].at - before[i].at) / 1000;
    const dropped = rule(i, 0);
    const passed = rule(i, 3);
    const r = {
      codec: `${b.codec} pt ${b.payloadType}`,
      seconds: Number(secs.toFixed(1)),
      dropped, passed, wireRed: rule(i, 1), wireOpus: rule(i, 2),
      packetsReceived: d('packetsReceived'), packetsLost: d('packetsLost'), packetsDiscarded: d('packetsDiscarded'),
      totalSamplesReceived: d('totalSamplesReceived'), concealedSamples: d('concealedSamples'),
      silentConcealedSamples: d('silentConcealedSamples'), concealmentEvents: d('concealmentEvents'),
      inserted: d('insertedSamplesForDeceleration'), removed: d('removedSamplesForAcceleration'),
      fecPacketsReceived: d('fecPacketsReceived'), fecPacketsDiscarded: d('fecPacketsDiscarded'),
      kbit: Number(((d('bytesReceived') * 8) / secs / 1000).toFixed(1)),
      jitterBufferMs: d('jitterBufferEmittedCount')
        ? Number(((1000 * d('jitterBufferDelay')) / d('jitterBufferEmittedCount')).toFixed(1)) : null,
      playError: after[i].playError,
    };
    r.concealedShare = r.totalSamplesReceived ? r.concealedSamples / r.totalSamplesReceived : NaN;
    r.lossSeen = r.packetsLost / Math.max(1, r.packetsLost + r.packetsReceived);
    r.droppedShare = dropped / Math.max(1, dropped + passed);
    results[p.label] = r;
    console.log(`player ${p.label} over the lossy window`, JSON.stringify(r));
    const m = (name, v, unit) => reportMetric(`player_${p.label}_${name}`, v, unit);
    m('codec_in_window', r.codec);
    m('packets_dropped_by_iptables', `${dropped}/${dropped + passed}`, `(${(100 * r.droppedShare).toFixed(1)} %)`);
    m('wire_red_packets', r.wireRed);
    m('wire_opus_packets', r.wireOpus);
    m('packetsReceived', r.packetsReceived);
    m('packetsLost', r.packetsLost, `(${(100 * r.lossSeen).toFixed(1)} %)`);
    m('packetsDiscarded', r.packetsDiscarded);
    m('totalSamplesReceived', r.totalSamplesReceived);
    m('concealedSamples', r.concealedSamples);
    m('silentConcealedSamples', r.silentConcealedSamples);
    m('concealmentEvents', r.concealmentEvents);
    m('concealed_share', r.concealedShare.toFixed(4), `(${(100 * r.concealedShare).toFixed(2)} %)`);
    m('fecPacketsReceived', r.fecPacketsReceived);
    m('kbit', r.kbit, 'kbit/s payload');
    m('jitter_buffer_ms', r.jitterBufferMs, 'ms');
  });
  const [A, B] = [results.A, results.B];
  reportMetric('concealed_share_ratio_red_to_opus', (A.concealedShare / B.concealedShare).toFixed(3));
  reportMetric('test_duration_ms', Date.now() - started, 'ms');

  // 6. Both hear audio; RED at most halves what is concealed.
  for (const p of players) {
    const r = results[p.label];
    assert.ok(r.packetsReceived > 0, `player ${p.label} receives audio packets (${r.packetsReceived})`);
    assert.ok(r.totalSamplesReceived > 0.5 * 48000 * r.seconds,
      `player ${p.label} plays out audio (${r.totalSamplesReceived} samples in ${r.seconds} s)`);
  }
  assert.ok(wire.A.red > 0 && wire.A.opus === 0, `the server sends A RED (${JSON.stringify(wire.A)})`);
  assert.ok(wire.B.opus > 0 && wire.B.red === 0, `the server sends B plain Opus (${JSON.stringify(wire.B)})`);
  assert.ok(A.droppedShare > LOSS * 0.7 && B.droppedShare > LOSS * 0.7,
    `about ${LOSS * 100} % dropped for each player (A ${(100 * A.droppedShare).toFixed(1)} %, B ${(100 * B.droppedShare).toFixed(1)} %)`);
  assert.ok(B.concealedShare > 0.03, `the player without RED conceals more than 3 % (${(100 * B.concealedShare).toFixed(2)} %)`);
  assert.ok(A.concealedShare <= 0.5 * B.concealedShare,
    `RED at most halves the concealed share (A ${(100 * A.concealedShare).toFixed(2)} % vs B ${(100 * B.concealedShare).toFixed(2)} %)`);
  // Chromium's RED is well formed; what it sends besides (padding) must not
  // be dropped as malformed RED either: a dropped packet is a gap in every
  // subscriber's numbering, counted as lost.
  const malformedRed = Object.keys(serverAfter).filter((k) => k.startsWith('sfu_malformed_packets_total{codec="red"'))
    .reduce((n, k) => n + serverAfter[k] - (serverBefore[k] ?? 0), 0);
  assert.equal(malformedRed, 0, `no packet of the publisher dropped as malformed RED (${malformedRed}; `
    + `RTP packets with the padding bit from the publisher: ${pubLossy[3]})`);
});
