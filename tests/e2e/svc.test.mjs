// VP9 and AV1 SVC with real Chromium: one publisher sends ONE RTP stream with
// three spatial and three temporal layers (scalabilityMode L3T3_KEY); the
// server drops spatial layers per viewer (VP9: from the payload descriptor;
// AV1: from the dependency descriptor header extension, rewritten per
// viewer). One trial per codec (CODECS=VP9 or CODECS=AV1 runs one). An uncapped WHEP player decodes the top
// spatial layer (1280 wide); a player in its own network namespace whose
// downlink is capped with tbf (400 kbit/s, 5 kB burst, 300 ms queue, as
// createPeerHost's capDownlink) decodes a lower one (640 or 320) with at most
// one freeze over 15 s, and gets the top layer back within 10 s of the cap
// being lifted.
//
// The publisher is the web client's publish page with ?svc=L3T3_KEY: the
// fake camera at 1280x720, one video encoding with that scalabilityMode,
// VP9 put first in the offer (the server's answer follows the offerer's
// preference: before it did, Chromium sent VP8 with the mode lowered to
// L1T2). The players are the web client's /play page, which offers the
// browser's default codecs (so VP9 is negotiated when the room's video is
// VP9).
//
// What this Chromium (156, headless, libvpx) encodes, seen with encoded-frame
// metadata (encodedInsertableStreams) in a loopback call, 5 s, this 2-core
// machine: spatial layers S0 320x180, S1 640x360, S2 1280x720, each with
// T0 5 fps, T1 5 fps, T2 10 fps (20 fps per spatial layer); S0 ~150 kbit/s,
// S1 ~400, S2 ~1050, so ~1.6 Mbit/s in all and ~550 kbit/s up to S1. Under
// a 400 kbit/s cap only S0 (320 wide) fits whole; S1 fits only trimmed to
// fewer temporal layers. outbound-rtp says scalabilityMode 'L3T3_KEY',
// encoderImplementation 'libvpx', frameWidth 1280 (the top layer).
//
// MEASURED (9 runs, sfu builds of 2026-12-07 15:17, 15:21 and 15:23 with
// spatial layer dropping, this 2-core machine, 29-37 s per run):
//   publisher        VP9 profile-id=0, L3T3_KEY, libvpx, 1280x720,
//                    ~1.6 Mbit/s sent; the server's layers S0 320 ~142k,
//                    S1 640 ~513k, S2 1280 ~1588k
//   uncapped player  1280 from its first frame (VP9), but down to 640
//                    after 1.3-4.5 s for 6.9-12.2 s (the layer choice's 1
//                    Mbit/s initial estimate is below S2's rate; then the
//                    settle time after a downgrade); 1280 at the end;
//                    ~1.4-1.6 Mbit/s payload at 1280, 650-830 k at 640
//   capped player    settles on 320 (every run) at ~130-170 kbit/s
//                    payload; starts on 640 (7 runs: 6 down within 1.1-1.5
//                    s, stall <= 0.4 s, loss 0-2 %; 1 down after 4 s with a
//                    3.0 s stall) or 1280 (2 runs: down after 3.5-4 s, a
//                    3.1 s stall, loss 9-13 %); freezeCount +0 in every run,
//                    even with the 3 s stalls
//   lift to 1280     5.1, 6.7, 7.2, 8.2, 8.4, 9.0, 9.5, 11.0, 15.2 s (320
//                    -> 640 -> 1280; the estimate climbs from 140-400
//                    kbit/s, and each step up waits a hold): the 10 s bound
//                    failed 2 runs in 9
// AFTER (4 runs, build of 15:58 and later: a downgrade on an unchanged
// estimate (the publisher's layer outgrew it) no longer waits the 10 s
// settle; a switch down within the stream while the player reports >= 5 %
// loss asks for a key picture):
//   uncapped player  below 1280 for 5.1-5.3 s (was 6.9-12.2 s)
//   capped player    640 -> 320 at 1.3-1.5 s after its join; no stall of
//                    1 s or more in 3 of 3 runs (loss 0.2-1.3 %) [the
//                    first run after the first fix alone: 3.1 s]
//   lift to 1280     8.7, 6.5, 4.8 s
//
// 2026-12-07 evening (re-probing every 1-2 s while a viewer's estimate is
// below what it wants; a switch down within the stream also asks for a
// key picture after NACKs and in a viewer's first 3 s), VP9:
//   start stall      no stall of 1 s or more in 7 runs (3.1 s in 2 of 3
//                    runs with a busy loop beside, before the second rule)
//   lift to 1280     re-probing every 1 s: 6.9, 5.3, 7.6 s; every 2 s:
//                    9.9, 6.9, 7.0 s unloaded; 9.6 s and a miss (> 25 s:
//                    the estimate swung 0.85-2.3 Mbit/s) with a busy loop
//                    beside; 16.7 s once with an 8 s play window. Before
//                    the change, same day: 5.7 s unloaded, 10.5 s loaded,
//                    10.9 s in CI. The climb after the lift is str0m's
//                    estimate recovering from the capped link's loss; this
//                    bound stays the test's least reliable.
// 2026-12-07 late (CI missed again: 15.4 s). Traced (SVC_LOG with
// str0m::bwe_=debug): after the lift the estimate sat at ~800 kbit/s, above
// the next layer's need (~710k), so str0m made no allocation probe (it probes
// only for a wanted rate above its estimate); each 2 s hold waited on a
// slowly climbing estimate and was lost when it dipped, and the top came one
// step (one hold) at a time. Now the top layer's rate is wanted (probed for)
// while an upgrade waits out its hold, padding still only for the next:
//   lift to 1280     2.6, 2.6 s unloaded (320 -> 1280 in one step); with a
//                    busy loop beside 2.8, 2.7, 3.2 s (before, same sitting,
//                    busy loop: 9.8, 4.2, 6.8 s; probing the top only after
//                    the hold's 700 ms of padding: 5.4, 6.0, 10.2 s)
//   capped player    loss under the cap 3.6-4.5 %, freezes 0-1 (unchanged)
//   AV1              lift to 1280 2.6 s (320 -> 1280)
// 2026-12-08 (the fresh-clone suite then failed the capped-viewer test: a
// 600 kbit/s viewer's estimate, probed for the top, read 1.2 Mbit/s through
// the token bucket's burst and the hold ended on 1280; CI saw 2 freezes in
// this trial under the cap). A hold now ends one step up, on the layer its
// padding proved; the top is still probed for, so the next hold starts at
// once:
//   lift to 1280     4.96, 4.87, 8.22 s unloaded; 4.47, 5.47, 4.59 s with a
//                    busy loop beside (320 -> 640 -> 1280, ~2.3 s apart)
//   capped player    loss under the cap 0.7-4.1 % (16 % in one run that
//                    started on 1280), freezes 0-1
//   AV1              lift to 1280 4.9 s
//
// AV1 (libaom L3T3_KEY, same machine, 2026-12-07 20:00; the play page adds
// the dependency descriptor to its offer: Chromium offers it on sending lines
// only, and without it its receiver decoded no frame of the scalable stream
// even with every layer forwarded, 581 frames assembled, 122 PLIs):
//   publisher        AV1 ~1.16 Mbit/s; the server's layers S0 320 ~124k,
//                    S1 640 ~395k, S2 1280 ~1045k (sizes from the
//                    descriptor's structure)
//   uncapped player  1280 at the end (640 for 4.5 s after its start)
//   capped player    640 -> 320 at 1.0 s, no stall over 102 ms, 0 loss,
//                    ~161 kbit/s at 320; lift to 1280 8.2 s
//
// Figures are METRIC lines: the publisher's codec and scalabilityMode, each
// player's decoded widths over time, freezes, loss, payload bitrate
// (bytesReceived) at each width, the time back to the top layer after the
// lift; the server's view of each player's choice (admin API) is printed
// every second.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchBrowser, openPage, waitFor, reportMetric, sleep, createPeerHost, signToken, sh,
} from './lib/harness.mjs';
import { startSampler, readSamples, measureWindow, widthChanges, stalls, sampleDecisions } from './lib/playback.mjs';

const KEY = 'e2e';
const SECRET = 'e2e-svc-secret';
const TOP = 1280;
const MODE = 'L3T3_KEY';
const CAP_KBIT = Number(process.env.CAP_KBIT || 400);
// Play under the cap for this long, from the capped player's first frame
// (10 s in the suite; the figures above are from 15 s: PLAY_MS=15000).
const PLAY_MS = Number(process.env.PLAY_MS || 10000);
// The issue's bound for the top layer to return after the lift; the test
// waits longer (LIFT_WAIT_MS) to report the figure when it misses.
const LIFT_BOUND_MS = 10000;
const LIFT_WAIT_MS = 25000;

/** The publisher's outbound video (window.sfu.pc): codec, scalabilityMode, sizes, bytes. */
const publisherStats = (page) => page.evaluate(async () => {
  const pc = window.sfu && window.sfu.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  const out = { state: pc.connectionState, video: null };
  stats.forEach((r) => {
    if (r.type !== 'outbound-rtp' || r.kind !== 'video') return;
    const codec = r.codecId ? stats.get(r.codecId) : null;
    out.video = {
      codec: codec ? `${codec.mimeType}${codec.sdpFmtpLine ? ` ${codec.sdpFmtpLine}` : ''}` : null,
      scalabilityMode: r.scalabilityMode ?? null, encoderImplementation: r.encoderImplementation ?? null,
      frameWidth: r.frameWidth || 0, frameHeight: r.frameHeight || 0, framesPerSecond: r.framesPerSecond || 0,
      bytesSent: r.bytesSent || 0, targetBitrate: r.targetBitrate || 0,
      qualityLimitationReason: r.qualityLimitationReason ?? null, rid: r.rid ?? null,
    };
  });
  return out;
});

/** A player's inbound video (window.sfu.pc, the one that received last). */
const playerVideo = (page) => page.evaluate(async () => {
  const pc = window.sfu && window.sfu.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  let best = null;
  stats.forEach((r) => {
    if (r.type !== 'inbound-rtp' || r.kind !== 'video') return;
    if (!best || (r.lastPacketReceivedTimestamp || 0) > (best.lastPacketReceivedTimestamp || 0)) best = r;
  });
  if (!best) return null;
  const codec = best.codecId ? stats.get(best.codecId) : null;
  return {
    codec: codec ? codec.mimeType : null, decoderImplementation: best.decoderImplementation ?? null,
    frameWidth: best.frameWidth || 0, frameHeight: best.frameHeight || 0, framesDecoded: best.framesDecoded || 0,
    packetsReceived: best.packetsReceived || 0, framesReceived: best.framesReceived || 0,
    framesDropped: best.framesDropped || 0, pliCount: best.pliCount || 0,
  };
});
const width = async (page) => (await playerVideo(page))?.frameWidth ?? 0;

/**
 * Video bytes a player received, sampled in its page every `ms`:
 * window.svcBytes = [[Date.now(), bytesReceived, frameWidth]] (playback.mjs's
 * sampler has no bytes).
 */
async function startByteSampler(page, ms = 500) {
  await page.evaluate((ms) => {
    if (window.svcBytes) return;
    const rows = [];
    window.svcBytes = rows;
    let busy = false;
    setInterval(async () => {
      const pc = window.sfu && window.sfu.pc;
      if (!pc || busy) return;
      busy = true;
      try {
        let best = null;
        (await pc.getStats()).forEach((r) => {
          if (r.type !== 'inbound-rtp' || r.kind !== 'video') return;
          if (!best || (r.lastPacketReceivedTimestamp || 0) > (best.lastPacketReceivedTimestamp || 0)) best = r;
        });
        if (best) rows.push([Date.now(), best.bytesReceived || 0, best.frameWidth || 0]);
      } finally { busy = false; }
    }, ms);
  }, ms);
}

/**
 * Payload bitrate at each decoded width in [from, to]: { width: { kbit, s } }
 * over the sample pairs whose both ends show that width.
 */
function ratesByWidth(rows, from = 0, to = Infinity) {
  const acc = {};
  for (let i = 1; i < rows.length; i++) {
    const [t0, b0, w0] = rows[i - 1];
    const [t1, b1, w1] = rows[i];
    if (t0 < from || t1 > to || !w0 || w0 !== w1 || b1 < b0) continue;
    acc[w0] = acc[w0] || { ms: 0, bytes: 0 };
    acc[w0].ms += t1 - t0;
    acc[w0].bytes += b1 - b0;
  }
  return Object.fromEntries(Object.entries(acc).map(([w, { ms, bytes }]) =>
    [w, { kbit: Math.round((bytes * 8) / ms), s: Number((ms / 1000).toFixed(1)) }]));
}

/**
 * The server's choice for one player, from the admin API every second:
 * [ms since start, downlink estimate, target, targetSpatial, spatial
 * flowing, width flowing, paused, switches up, down]; last() is the latest
 * report (its `available`: the publisher's layers).
 */
const sampleSvcDecisions = (base, room, identity, auth) => sampleDecisions(base, room, identity, auth, {
  row: (video) => [video?.target, video?.targetSpatial, video?.layer?.spatial, video?.layer?.width, video?.paused,
    video?.switchesUp, video?.switchesDown],
});

const byteRows = (page) => page.evaluate(() => window.svcBytes || []);

/** One codec's trial: the publisher sends `codec` (VP9 or AV1) with MODE. */
async function svcTrial(t, codec) {
  const started = Date.now();
  const peer = createPeerHost(t, `svc${codec === 'VP9' ? '' : codec.toLowerCase()}`);
  const server = await startServer(t, `svc-${codec.toLowerCase()}`,
    ['--media-addr', peer.hostIp, '--api-key', KEY, '--api-secret', SECRET, '--log', process.env.SVC_LOG || 'info,sfu::forward=debug,sfu::worker=debug'],
    peer.hostIp);
  const room = 'svc';
  const tok = (id, opts) => signToken(KEY, SECRET, room, id, opts);
  const auth = `Basic ${Buffer.from(`${KEY}:${SECRET}`).toString('base64')}`;
  const local = await launchBrowser(t, null, server.base);
  const remote = await launchBrowser(t, peer.ns, server.base);

  // 1-2. The publisher: the publish page with VP9 SVC (one encoding, L3T3_KEY).
  const publisher = await openPage(local,
    `${server.base}/?room=${room}&autostart=1&svc=${codec === 'VP9' ? MODE : `${codec}/${MODE}`}&resolution=1280x720&token=${tok('pub', { publish: true })}`, 'publisher');
  await waitFor('the publisher connected', () => publisher.evaluate(() => window.sfu?.pc?.connectionState === 'connected'), 20000);
  const sendCodec = await publisher.evaluate(() => window.sfu.pc.getSenders()
    .find((s) => s.track?.kind === 'video')?.getParameters().codecs?.[0]?.mimeType ?? null);
  assert.equal(sendCodec?.toLowerCase(), `video/${codec}`.toLowerCase(), `the answer's first video codec is ${codec} (${sendCodec})`);
  const pubConnectedAt = Date.now();
  let pubLast = null;
  const pubTop = await waitFor('the publisher encoding 1280 wide', async () => {
    const s = await publisherStats(publisher);
    pubLast = s;
    return s?.video?.frameWidth === TOP && s.video.codec ? s : false;
  }, 20000, 200).catch((e) => { e.message += ` (publisher stats: ${JSON.stringify(pubLast)})`; throw e; });
  const pub = pubTop.video;
  console.log('publisher outbound video', JSON.stringify(pub));
  reportMetric('publisher_scalability_mode', pub.scalabilityMode);
  reportMetric('publisher_codec', pub.codec);
  reportMetric('publisher_encoder', pub.encoderImplementation);
  reportMetric('publisher_frame_size', `${pub.frameWidth}x${pub.frameHeight}`);
  reportMetric('publisher_to_1280_ms', Date.now() - pubConnectedAt, 'ms');
  assert.ok(pub.codec?.toLowerCase().startsWith(`video/${codec}`.toLowerCase()), `the publisher sends ${codec} (${pub.codec})`);
  assert.equal(pub.scalabilityMode, MODE, `the publisher's outbound-rtp scalabilityMode (${pub.scalabilityMode})`);

  // 3. An uncapped player (this namespace): the top spatial layer, VP9.
  const free = await openPage(local, `${server.base}/play?room=${room}&autostart=1&token=${tok('free', { subscribe: true })}`, 'free');
  await waitFor('the uncapped player has a peer connection', () => free.evaluate(() => !!(window.sfu && window.sfu.pc)), 15000);
  const freeJoin = Date.now();
  await startSampler(free, 100);
  await startByteSampler(free);
  const freeDecisions = sampleSvcDecisions(server.base, room, 'free', auth);
  t.after(() => freeDecisions.stop());
  let freeLast = null;
  const freeTop = await waitFor('the uncapped player decoding 1280 wide', async () => {
    const v = await playerVideo(free);
    freeLast = v;
    return v?.frameWidth === TOP ? v : false;
  }, 30000, 100).catch((e) => { e.message += ` (player video: ${JSON.stringify(freeLast)})`; throw e; });
  reportMetric('free_join_to_1280_ms', Date.now() - freeJoin, 'ms');
  reportMetric('free_codec', freeTop.codec);
  reportMetric('free_frame_size', `${freeTop.frameWidth}x${freeTop.frameHeight}`);
  assert.equal(freeTop.codec?.toLowerCase(), `video/${codec}`.toLowerCase(), `the uncapped player receives ${codec} (${freeTop.codec})`);
  const pubSentFrom = [Date.now(), (await publisherStats(publisher)).video.bytesSent];

  // 3b. AV1: a player that offers as Chromium does, without the dependency
  // descriptor (as other WHEP players do): the server gives it the base
  // spatial layer, the one it can decode without the descriptor.
  const plain = codec === 'AV1'
    ? await openPage(local, `${server.base}/play?room=${room}&autostart=1&descriptor=0&token=${tok('plain', { subscribe: true })}`, 'plain')
    : null;

  // 4. A player capped at 400 kbit/s from before it joins (the peer namespace).
  peer.capDownlink(CAP_KBIT);
  reportMetric('downlink_cap_kbit', CAP_KBIT, 'kbit/s');
  const capped = await openPage(remote, `${server.base}/play?room=${room}&autostart=1&token=${tok('capped', { subscribe: true })}`, 'capped');
  await waitFor('the capped player has a peer connection', () => capped.evaluate(() => !!(window.sfu && window.sfu.pc)), 15000);
  const cappedJoin = Date.now();
  await startSampler(capped, 100);
  await startByteSampler(capped);
  const cappedDecisions = sampleSvcDecisions(server.base, room, 'capped', auth);
  t.after(() => cappedDecisions.stop());
  // Measured, not required here: the assertions come after every figure.
  let firstFrameAt = null;
  try {
    await waitFor('the capped player decodes', async () => (await playerVideo(capped))?.framesDecoded > 0, 15000, 100);
    firstFrameAt = Date.now();
  } catch (e) { console.log(`capped player: ${e.message}`); }
  const playFrom = firstFrameAt ?? Date.now();
  await sleep(PLAY_MS);
  const playTo = Date.now();
  const qdisc = sh('tc', '-s', 'qdisc', 'show', 'dev', peer.hostIf);
  const tbfDropped = Number(qdisc.match(/dropped (\d+)/)?.[1] ?? NaN);
  const pubSentTo = [Date.now(), (await publisherStats(publisher)).video.bytesSent];

  // 5. Lift the cap: back to the top layer.
  peer.capDownlink(null);
  const liftAt = Date.now();
  let backAt = null;
  try {
    await waitFor('the capped player back at 1280 after the lift', async () => (await width(capped)) === TOP, LIFT_WAIT_MS, 100);
    backAt = Date.now();
    await sleep(2000); // the rate at the top layer
  } catch (e) { console.log(`after the lift: ${e.message}`); }
  const end = Date.now();

  const freeData = await readSamples(free);
  const cappedData = await readSamples(capped);
  const freeBytes = await byteRows(free);
  const cappedBytes = await byteRows(capped);
  console.log('server\'s layers of the publisher (last seen)', JSON.stringify(freeDecisions.last()?.available));
  console.log('server decisions, free [ms, estimate, target, targetSpatial, spatial, width, paused, up, down]',
    JSON.stringify(freeDecisions.stop()));
  console.log('server decisions, capped [ms, estimate, target, targetSpatial, spatial, width, paused, up, down]',
    JSON.stringify(cappedDecisions.stop()));
  console.log(qdisc.trim());
  const t0 = cappedJoin;
  console.log(`capped join at ${new Date(t0).toISOString()}; marks (ms after it): first frame ${firstFrameAt && firstFrameAt - t0}, `
    + `play ${playFrom - t0}..${playTo - t0}, lift ${liftAt - t0}, back ${backAt && backAt - t0}, end ${end - t0}`);

  // The publisher.
  const avail = freeDecisions.last()?.available;
  if (avail) reportMetric('server_publisher_layers', avail.map((l) => `S${l.spatial}:${l.width}x${l.height}@${Math.round(l.bitrateBps / 1000)}k`).join(','));
  reportMetric('publisher_sent_kbit', Math.round(((pubSentTo[1] - pubSentFrom[1]) * 8) / (pubSentTo[0] - pubSentFrom[0])), 'kbit/s');

  // The uncapped player over the whole run.
  const freeAll = measureWindow(freeData, freeJoin, end);
  const freeChanges = widthChanges(freeData, freeJoin, end);
  reportMetric('free_width_changes', freeChanges.map((c) => `${c.from}->${c.to}@${c.t - freeJoin}ms`).join(',') || 'none');
  reportMetric('free_widths', freeAll?.widths.join(','));
  const freeBelowTopMs = freeData.samples.reduce((ms, x, i, all) =>
    (i > 0 && x.t >= freeJoin && all[i - 1].frameWidth > 0 && all[i - 1].frameWidth < TOP ? ms + x.t - all[i - 1].t : ms), 0);
  reportMetric('free_ms_below_top', freeBelowTopMs, 'ms');
  reportMetric('free_end_width', freeAll?.endWidth);
  reportMetric('free_freezes', freeAll?.freezes);
  reportMetric('free_loss', `${freeAll?.lost}/${(freeAll?.lost ?? 0) + (freeAll?.received ?? 0)}`);
  for (const [w, r] of Object.entries(ratesByWidth(freeBytes, freeJoin, end))) {
    reportMetric(`free_kbit_at_${w}`, r.kbit, `kbit/s (payload, ${r.s} s)`);
  }

  // The capped player: under the cap, then after the lift.
  const under = measureWindow(cappedData, playFrom, playTo);
  const cappedChanges = widthChanges(cappedData, cappedJoin, end);
  reportMetric('capped_first_frame_ms', firstFrameAt ? firstFrameAt - cappedJoin : 'none', 'ms');
  reportMetric('capped_width_changes',
    cappedChanges.map((c) => `${c.from}->${c.to}@${c.t - cappedJoin}ms`).join(',') || 'none', '(ms after join)');
  reportMetric('capped_widths_under_cap', under?.widths.join(','));
  reportMetric('capped_end_width_under_cap', under?.endWidth);
  reportMetric('capped_decoded_under_cap', under?.decoded, `frames in ${under?.ms} ms`);
  reportMetric('capped_freezes_under_cap', under?.freezes);
  reportMetric('capped_freeze_seconds_under_cap', under?.freezeSeconds, 's');
  reportMetric('capped_longest_stall_under_cap_ms', under?.longestStallMs, 'ms');
  reportMetric('capped_loss_under_cap', under ? (under.lost / Math.max(1, under.lost + under.received)).toFixed(4) : null,
    `(${under?.lost}/${(under?.lost ?? 0) + (under?.received ?? 0)})`);
  reportMetric('capped_nacks_plis_under_cap', `${under?.nacks}/${under?.plis}`);
  reportMetric('tbf_dropped_packets', tbfDropped);
  for (const [w, r] of Object.entries(ratesByWidth(cappedBytes, cappedJoin, liftAt))) {
    reportMetric(`capped_kbit_at_${w}_under_cap`, r.kbit, `kbit/s (payload, ${r.s} s)`);
  }
  for (const [w, r] of Object.entries(ratesByWidth(cappedBytes, liftAt, end))) {
    reportMetric(`capped_kbit_at_${w}_after_lift`, r.kbit, `kbit/s (payload, ${r.s} s)`);
  }
  reportMetric('lift_to_top_ms', backAt ? backAt - liftAt : `none within ${LIFT_WAIT_MS}`, 'ms');
  const afterLift = measureWindow(cappedData, liftAt, end);
  reportMetric('capped_freezes_after_lift', afterLift?.freezes);
  reportMetric('capped_longest_stall_after_lift_ms', afterLift?.longestStallMs, 'ms');
  // freezeCount misses some stalls near the start (a 3.1 s one counted 0
  // twice): stalls of 1 s or more, from the sampler, are checked as well.
  const longStallsUnderCap = stalls(cappedData, playFrom, playTo, 1000);
  reportMetric('capped_stalls_1s_under_cap', longStallsUnderCap.map((st) => `${st.ms}ms@${st.at - cappedJoin}`).join(',') || 'none');
  for (const st of stalls(cappedData, cappedJoin, end, 300)) {
    console.log(`capped stall of ${st.ms} ms at ${st.at - cappedJoin} ms after join`);
  }
  const plainVideo = plain && await playerVideo(plain);
  if (plain) reportMetric('plain_player_video', JSON.stringify(plainVideo));
  reportMetric('test_duration_ms', Date.now() - started, 'ms');

  await t.test('the uncapped player is on the top layer at the end', () => {
    assert.equal(freeAll?.endWidth, TOP, `the uncapped player's width at the end (${freeAll?.endWidth}; widths ${freeAll?.widths})`);
  });
  await t.test('the capped player decodes a lower spatial layer, with at most one freeze', () => {
    assert.ok(firstFrameAt, 'the capped player decodes a frame within 15 s of joining');
    assert.ok(under && under.decoded > 0, `frames decoded under the cap (${under?.decoded})`);
    assert.ok(under.endWidth > 0 && under.endWidth < TOP,
      `below the top layer under the cap (widths ${under.widths}, last ${under.endWidth})`);
    assert.ok(under.freezes <= 1, `at most one freeze in ${under.ms} ms under the cap (freezeCount +${under.freezes})`);
    assert.ok(longStallsUnderCap.length <= 1,
      `at most one stall of 1 s or more under the cap (${longStallsUnderCap.map((st) => st.ms).join(', ')} ms)`);
  });
  await t.test('lifting the cap brings the top layer back within 10 s', () => {
    assert.ok(backAt, `back at ${TOP} wide after the lift (not within ${LIFT_WAIT_MS} ms)`);
    assert.ok(backAt - liftAt <= LIFT_BOUND_MS, `back at ${TOP} within ${LIFT_BOUND_MS} ms of the lift (${backAt - liftAt} ms)`);
  });
  if (plain) {
    await t.test('a player without the dependency descriptor decodes the base layer', () => {
      assert.ok(plainVideo?.framesDecoded > 100, `frames decoded (${JSON.stringify(plainVideo)})`);
      assert.equal(plainVideo.frameWidth, 320, `the base layer's width (${JSON.stringify(plainVideo)})`);
    });
  }
}

// CODECS=VP9 or CODECS=AV1 runs one of them.
const CODECS = (process.env.CODECS || 'VP9,AV1').split(',');
for (const codec of CODECS) {
  test(`a ${codec} SVC publisher: a capped viewer gets a lower spatial layer, an uncapped one the top`, (t) => svcTrial(t, codec));
}
