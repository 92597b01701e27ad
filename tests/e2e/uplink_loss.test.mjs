// Publisher uplink loss: a Chromium publisher (single layer, 640x360) in
// its own network namespace loses 20 % of its video RTP packets on the way
// to the server for 20 s (40 s in the runs measured below); the other direction (the server's RTCP, NACKs,
// PLIs) and its audio are untouched. The server forwards each lost packet
// as a gap in the viewer's numbering and NACKs the publisher; the
// publisher's retransmission fills the gap late, and the viewer's NACKs
// are answered once it has. A Chromium WHEP viewer on the server's side
// (unimpaired) must keep playing: no freeze longer than a moment, and at
// least 90 % of the frames the publisher encoded decoded.
//
// The loss is applied in the server's namespace (INPUT, packets arriving
// from the publisher's veth), where the publisher cannot see it. Dropped in
// the publisher's own OUTPUT chain, sendmsg() fails with EPERM and Chromium
// sends the packet again: a first try "dropped" 20 % there and the viewer
// lost nothing. Video packets are picked by their RTP payload type (u32 on
// the clear RTP header: version 2, PT = the negotiated VP8 or its RTX; both
// are dropped, so a retransmission can be lost too), not by size; the test
// first counts 4 s of the publisher's packets by class and size: VP8
// 133-135 packets all >= 600 bytes (libwebrtc splits a frame into equal
// packets; a 320-wide layer's frames can be smaller), RTX (padding
// included) 13-25 of both sizes, Opus ~200 all < 600, RTCP 4-7 all < 600.
//
// MEASURED (sfu-087af09, this 2-core machine, 7 runs): 19.6-21.1 % of the
// VP8 packets and ~20 % of the RTX packets dropped; frames decoded / encoded
// 0.996-0.999 (800-801 of 801-803); viewer packetsLost 0 at the end (every
// gap repaired), 133-148 NACKs from the viewer, 162-178 NACKs and 309-337
// retransmissions at the publisher, no PLI, no keyframe; freezeCount +0 to
// +3 per run, 0-0.63 s in all, longest decode stall 200-300 ms, frames
// presented at most 164-260 ms apart. Each freeze is a ~200-290 ms hiccup
// just over Chromium's threshold at 20 fps (200 ms): likely a packet lost
// twice (20 % of 20 %) waiting for a second NACK round (str0m re-NACKs
// after the stream's RTT + 5 ms, 105 ms when it has no RTT).
// The frame-forwarding server (sfu-cd57006, 1 run) decoded 0.948, with 16
// PLIs, 13 keyframes, 4 freezes (1.15 s), longest stall 400 ms.
// Bounds: >= 90 % decoded (the figure); no stall of 600 ms or more
// (2x the worst seen; a keyframe wait or an unrepaired gap stalls 1-3 s);
// freezes under 1.5 s in all (2.4x the worst); at most 2 PLIs (0 seen: gaps
// are repaired; only a packet lost again and again would need a keyframe);
// the viewer NACKed and the publisher retransmitted.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchBrowser, openPage, waitFor, reportMetric, sleep, createPeerHost, signToken, sh,
} from './lib/harness.mjs';
import { startSampler, readSamples, measureWindow, stalls } from './lib/playback.mjs';

const KEY = 'e2e';
const SECRET = 'e2e-uplink-loss-secret';
const LOSS = Number(process.env.UPLINK_LOSS || 0.2);
// 15 s in the suite (was 20 s, cut for the AV1 SVC trial's time); the
// figures above are from 40 s runs (LOSS_MS=40000).
const LOSS_MS = Number(process.env.LOSS_MS || 15000);

/** The publisher's outbound video (single layer) and its codec's payload types. */
const publisherVideo = (page) => page.evaluate(async () => {
  const pc = window.sfu && window.sfu.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  let out = null;
  stats.forEach((r) => { if (r.type === 'outbound-rtp' && r.kind === 'video') out = r; });
  if (!out) return null;
  const codec = out.codecId ? stats.get(out.codecId) : null;
  const n = (k) => out[k] || 0;
  return {
    framesEncoded: n('framesEncoded'), framesSent: n('framesSent'), packetsSent: n('packetsSent'),
    retransmittedPacketsSent: n('retransmittedPacketsSent'), nackCount: n('nackCount'), pliCount: n('pliCount'),
    frameWidth: n('frameWidth'), keyFramesEncoded: n('keyFramesEncoded'), targetBitrate: n('targetBitrate'),
    qualityLimitationReason: out.qualityLimitationReason, mimeType: codec?.mimeType, payloadType: codec?.payloadType,
    sdp: pc.remoteDescription?.sdp || '',
  };
});

/** The RTX payload type of `pt` in the answer's video section, if any. */
function rtxOf(sdp, pt) {
  const video = sdp.split(/\r?\nm=/).find((s) => s.startsWith('video'));
  const m = video && video.match(new RegExp(`a=fmtp:(\\d+) apt=${pt}\\b`));
  return m ? Number(m[1]) : null;
}

// u32 expressions on the UDP payload (IP header length from the first word).
const RTP_V2 = '0>>22&0x3C@8>>30=2';
const rtpPt = (pt) => `${RTP_V2}&&0>>22&0x3C@8>>16&0x7F=${pt}`;
const RTCP = `${RTP_V2}&&0>>22&0x3C@8>>16&0xFF=200:206`;

// The rules live in this (the server's) namespace, on what arrives from the
// publisher's veth: dropped there, a packet is lost as on a network. (Dropped
// in the publisher's own OUTPUT chain, sendmsg() fails with EPERM and
// Chromium sends it again: a first try saw 20 % "dropped" and no loss at all.)
const CHAIN = 'E2E_UPLINK';
const ipt = (...args) => sh('iptables', ...args);

/** Packet counters of the rules of `chain`, in order. */
function counters(chain) {
  return ipt('-L', chain, '-v', '-x', '-n').split('\n').slice(2).filter((l) => l.trim())
    .map((l) => Number(l.trim().split(/\s+/)[0]));
}

test('publisher uplink loss: the viewer keeps playing through 20 % video loss', async (t) => {
  const started = Date.now();
  const peer = createPeerHost(t, 'upl');
  const server = await startServer(t, 'uplink-loss',
    ['--media-addr', peer.hostIp, '--api-key', KEY, '--api-secret', SECRET, '--log', 'info,sfu::forward=debug,sfu::worker=debug'], peer.hostIp);
  const room = 'uplink';
  const tok = (id, opts) => signToken(KEY, SECRET, room, id, opts);
  const remote = await launchBrowser(t, peer.ns, server.base);
  const local = await launchBrowser(t, null, server.base);

  const publisher = await openPage(remote,
    `${server.base}/?room=${room}&autostart=1&resolution=640x360&token=${tok('pub', { publish: true })}`, 'publisher');
  const viewer = await openPage(local, `${server.base}/play?room=${room}&autostart=1&token=${tok('viewer', { subscribe: true })}`, 'viewer');
  await waitFor('the viewer has a peer connection', () => viewer.evaluate(() => !!(window.sfu && window.sfu.pc)), 15000);
  await startSampler(viewer, 100);
  const pub0 = await waitFor('the publisher sends video', async () => {
    const v = await publisherVideo(publisher);
    return v && v.framesEncoded > 0 && v.payloadType ? v : false;
  }, 20000, 200);
  await waitFor('the viewer decodes', async () => {
    const { samples } = await readSamples(viewer);
    return samples.length && samples[samples.length - 1].framesDecoded > 30;
  }, 20000, 200);
  const vp8 = pub0.payloadType;
  const rtx = rtxOf(pub0.sdp, vp8);
  console.log(`publisher sends ${pub0.mimeType} pt ${vp8}, rtx pt ${rtx}`);
  assert.ok(rtx, 'the server negotiated RTX for the publisher\'s video');

  // Everything from the publisher's namespace goes through CHAIN.
  const jump = ['INPUT', '-i', peer.hostIf, '-s', peer.peerIp, '-p', 'udp', '-j', CHAIN];
  ipt('-N', CHAIN);
  ipt('-I', ...jump);
  t.after(() => {
    try { ipt('-D', ...jump); ipt('-F', CHAIN); ipt('-X', CHAIN); } catch { /* namespace gone */ }
  });

  // What the publisher sends, by class and size, over 4 s (before any loss).
  const classes = [['video', rtpPt(vp8)], ['rtx', rtpPt(rtx)], ['audio', rtpPt(111)], ['rtcp', RTCP]];
  for (const [, expr] of classes) {
    for (const len of ['0:599', '600:65535']) ipt('-A', CHAIN, '-m', 'u32', '--u32', expr, '-m', 'length', '--length', len);
  }
  ipt('-A', CHAIN);
  await sleep(4000);
  const sizes = counters(CHAIN);
  ipt('-F', CHAIN);
  const total = sizes[sizes.length - 1];
  classes.forEach(([name], i) => {
    reportMetric(`uplink_${name}_packets_under_600_bytes`, sizes[2 * i]);
    reportMetric(`uplink_${name}_packets_600_bytes_or_more`, sizes[2 * i + 1]);
  });
  reportMetric('uplink_udp_packets_in_4s', total);
  await sleep(2000);

  // 20 % of the video RTP packets (media and retransmissions) are dropped.
  const a = await publisherVideo(publisher);
  const from = Date.now();
  for (const pt of [vp8, rtx]) {
    ipt('-A', CHAIN, '-m', 'u32', '--u32', rtpPt(pt), '-m', 'statistic', '--mode', 'random', '--probability', String(LOSS), '-j', 'DROP');
    ipt('-A', CHAIN, '-m', 'u32', '--u32', rtpPt(pt));
  }
  const widths = [];
  for (let waited = 0; waited < LOSS_MS; waited += 5000) {
    await sleep(5000);
    const p = await publisherVideo(publisher);
    widths.push([Date.now() - from, p.frameWidth, p.targetBitrate, p.qualityLimitationReason]);
  }
  const b = await publisherVideo(publisher);
  const to = Date.now();
  // [dropped vp8, passed vp8, dropped rtx, passed rtx]
  const [dv, pv, dr, pr] = counters(CHAIN);
  ipt('-F', CHAIN);
  console.log('publisher during the loss [ms, width, target bps, limited by]', JSON.stringify(widths));
  reportMetric('uplink_media_packets_dropped', `${dv}/${dv + pv}`, `(${((100 * dv) / (dv + pv)).toFixed(1)} %)`);
  reportMetric('uplink_rtx_packets_dropped', `${dr}/${dr + pr}`);

  await sleep(1000); // the last frames of the window reach the viewer
  const data = await readSamples(viewer);
  const w = measureWindow(data, from, to);
  const encoded = b.framesEncoded - a.framesEncoded;
  const sent = b.framesSent - a.framesSent;
  reportMetric('frames_encoded', encoded);
  reportMetric('frames_sent', sent);
  reportMetric('frames_decoded', w.decoded);
  reportMetric('decoded_share_of_encoded', (w.decoded / encoded).toFixed(3));
  reportMetric('viewer_packets_lost', w.lost);
  reportMetric('viewer_packets_received', w.received);
  reportMetric('viewer_nacks_sent', w.nacks);
  reportMetric('viewer_plis_sent', w.plis);
  reportMetric('viewer_frames_dropped', w.dropped);
  reportMetric('viewer_keyframes_decoded', w.keyframes);
  reportMetric('publisher_nacks_received', b.nackCount - a.nackCount);
  reportMetric('publisher_plis_received', b.pliCount - a.pliCount);
  reportMetric('publisher_retransmissions', b.retransmittedPacketsSent - a.retransmittedPacketsSent);
  reportMetric('publisher_keyframes_encoded', b.keyFramesEncoded - a.keyFramesEncoded);
  reportMetric('publisher_end_width', b.frameWidth);
  reportMetric('viewer_freezes', w.freezes);
  reportMetric('viewer_freeze_seconds', w.freezeSeconds, 's');
  reportMetric('viewer_longest_stall_ms', w.longestStallMs, 'ms');
  reportMetric('viewer_longest_presented_gap_ms', w.longestPresentGapMs, 'ms');
  reportMetric('test_duration_ms', Date.now() - started, 'ms');
  console.log('viewer during the loss', JSON.stringify(w));
  // Every stall of 300 ms or more as sampled (over 200 ms in fact, a freeze
  // by Chromium's definition at 20 fps), with the samples around it.
  const long = stalls(data, from, to, 300);
  reportMetric('viewer_stalls_300ms_or_more', long.length);
  for (const s of long) {
    const around = data.samples.filter((x) => x.t >= s.at - 300 && x.t <= s.at + s.ms + 300)
      .map((x) => [x.t - s.at, x.framesDecoded, x.packetsLost, x.packetsReceived, x.nackCount, x.freezeCount]);
    console.log(`stall of ${s.ms} ms at ${s.at - from} ms (${new Date(s.at).toISOString()}) [ms, decoded, lost, received, nacks, freezes]: ${JSON.stringify(around)}`);
  }

  // The share iptables dropped is random: within 4 standard deviations of
  // the configured probability for this many packets (a fixed +-25 % failed
  // once at 66/470 = 14.0 %, 3.2 deviations off).
  const n = dv + pv;
  const dropped = dv / n;
  const tolerance = 4 * Math.sqrt((LOSS * (1 - LOSS)) / n);
  assert.ok(n >= 200, `enough VP8 packets to measure the drop (${n})`);
  assert.ok(Math.abs(dropped - LOSS) <= tolerance,
    `about ${LOSS * 100} % of the VP8 packets were dropped (${(dropped * 100).toFixed(1)} % of ${n}, tolerance ${(tolerance * 100).toFixed(1)} points)`);
  assert.ok(w.decoded >= 0.9 * encoded, `the viewer decodes >= 90 % of the frames encoded (${w.decoded}/${encoded})`);
  assert.ok(w.longestStallMs < 600, `no stall of 600 ms or more (longest ${w.longestStallMs} ms)`);
  assert.ok(w.freezeSeconds < 1.5, `freezes under 1.5 s in all (${w.freezeSeconds} s in ${w.freezes})`);
  assert.ok(w.plis <= 2, `gaps are repaired, not replaced by keyframes (${w.plis} PLIs from the viewer)`);
  assert.ok(w.nacks > 0 && b.retransmittedPacketsSent > a.retransmittedPacketsSent, 'the viewer NACKed and the publisher retransmitted');
});
