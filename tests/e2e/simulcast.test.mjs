// History of its flakes: 2 of 4 runs stalled 2.5-2.8 s under the cap before
// 56fc05e (media follows a client's path switch). Later ~1 run in 4 failed
// in two ways: no return to the top layer after the cap was lifted, because
// the viewer's estimate froze at 1.5 x what its lowest layer sent (318 k for
// 30 s), or a stall of 1-2.8 s under the cap, when padding toward an
// estimate that a short probe had pushed above the cap (503 k) filled the
// token bucket's queue, or when the pacer drained what it had queued at the
// old rate (2.8 s without a frame, then 63 at once). Now a frozen estimate
// gets padding to move it, an upgrade's sustained padding lasts 700 ms
// (router::ProbeRequest), and a backed-up send queue skips to the next
// keyframe (participant::MAX_SEND_BACKLOG). Server decisions are printed
// every second under the cap and after it. The switch down itself may
// still freeze the picture for up to ~3 s (seen 1 run in 6 with a busy
// core: the 640 -> 320 switch, nothing lost, then 61 frames at once): it is
// reported and bounded on its own (adaptation), and the strict no-freeze
// window starts once the player has settled on one layer.
//
// Simulcast with real Chromium: a publisher sends three layers (rids f/h/q);
// an unconstrained player gets the top layer, a player asking for 640 wide
// the middle one, and a player in its own network namespace whose downlink
// is capped with tbf gets the low layer, keeps decoding, and returns to the
// top layer when the cap is lifted. Then 5% random loss on that player's
// path: NACK/RTX keeps it decoding. Figures are printed as METRIC lines.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchBrowser, openPage, rtpStats, waitFor, reportMetric, sleep, createPeerHost, signToken,
} from './lib/harness.mjs';
import { sampleDecisions as sampleWith } from './lib/playback.mjs';

const KEY = 'e2e';
const SECRET = 'e2e-simulcast-secret';

const width = async (page) => (await rtpStats(page))?.inbound.video?.frameWidth ?? 0;

async function waitForWidth(page, label, w, timeoutMs) {
  const start = Date.now();
  await waitFor(`${label} at ${w} wide`, async () => (await width(page)) === w, timeoutMs, 200);
  return Date.now() - start;
}

async function freezeWindow(page, ms) {
  const a = (await rtpStats(page)).inbound.video;
  const widths = [];
  // Every 500 ms: [ms, width, frames decoded, packets lost, NACKs, PLIs] (cumulative).
  const timeline = [];
  const t0 = Date.now();
  // The longest stretch without a newly decoded frame, sampled every 250 ms.
  let lastDecoded = a.framesDecoded;
  let lastProgress = Date.now();
  let longestStallMs = 0;
  for (let waited = 0; waited < ms; waited += 250) {
    await sleep(250);
    const v = (await rtpStats(page)).inbound.video;
    if (v.framesDecoded > lastDecoded) {
      lastDecoded = v.framesDecoded;
      lastProgress = Date.now();
    }
    longestStallMs = Math.max(longestStallMs, Date.now() - lastProgress);
    if (waited % 500 === 0) {
      widths.push(v.frameWidth);
      timeline.push([Date.now() - t0, v.frameWidth, v.framesDecoded - a.framesDecoded, v.packetsLost - a.packetsLost,
        v.nackCount - a.nackCount, v.pliCount - a.pliCount]);
    }
  }
  const b = (await rtpStats(page)).inbound.video;
  return {
    widths,
    longestStallMs,
    decoded: b.framesDecoded - a.framesDecoded,
    freezes: b.freezeCount - a.freezeCount,
    freezeSeconds: b.totalFreezesDuration - a.totalFreezesDuration,
    nacks: b.nackCount - a.nackCount,
    dropped: b.framesDropped - a.framesDropped,
    lost: b.packetsLost - a.packetsLost,
    timeline,
  };
}

// From a sudden cap until the player has settled: below `topWidth`, on one
// width, decoding without a gap over `stableMs`. Returns how long that took
// and the longest stretch without a decoded frame meanwhile (the freeze a
// user sees while the layers switch down). Gives up after `timeoutMs`.
async function watchAdaptation(page, topWidth, stableMs, timeoutMs) {
  const t0 = Date.now();
  let v = (await rtpStats(page)).inbound.video;
  let lastDecoded = v.framesDecoded;
  let lastProgress = t0;
  let longestStallMs = 0;
  let lastWidth = v.frameWidth;
  let stableSince = t0;
  while (Date.now() - t0 < timeoutMs) {
    await sleep(250);
    v = (await rtpStats(page)).inbound.video;
    const now = Date.now();
    if (v.framesDecoded > lastDecoded) {
      lastDecoded = v.framesDecoded;
      lastProgress = now;
    }
    const stall = now - lastProgress;
    longestStallMs = Math.max(longestStallMs, stall);
    if (v.frameWidth !== lastWidth || v.frameWidth >= topWidth || stall > 500) stableSince = now;
    lastWidth = v.frameWidth;
    if (now - stableSince >= stableMs) return { settledMs: now - t0, longestStallMs, width: lastWidth };
  }
  return { settledMs: null, longestStallMs, width: lastWidth };
}

// What the server decides for one subscriber, sampled every second: [ms since
// start, downlink estimate, target rid, width flowing, paused, available
// width:bitrate].
const sampleDecisions = (base, room, identity, auth) => sampleWith(base, room, identity, auth, {
  row: (video) => [video?.target, video?.layer?.width, video?.paused,
    video?.available?.map((l) => `${l.width}:${l.bitrateBps}`).join(' ')],
});

test('simulcast: per-player layers by wish and by capped downlink, loss repaired', async (t) => {
  const peer = createPeerHost(t, 'sim');
  const server = await startServer(t, 'simulcast',
    ['--media-addr', peer.hostIp, '--api-key', KEY, '--api-secret', SECRET, '--log', 'info,sfu::forward=debug,sfu::worker=debug,sfu::room::participant=trace'], peer.hostIp);
  const room = 'simulcast';
  const tok = (id, opts) => signToken(KEY, SECRET, room, id, opts);
  const local = await launchBrowser(t, null, server.base);
  const remote = await launchBrowser(t, peer.ns, server.base);

  const publisher = await openPage(local,
    `${server.base}/?room=${room}&autostart=1&simulcast=1&resolution=1280x720&token=${tok('pub', { publish: true })}`, 'publisher');
  const top = await openPage(local, `${server.base}/play?room=${room}&autostart=1&token=${tok('top', { subscribe: true })}`, 'top');
  const mid = await openPage(local,
    `${server.base}/play?room=${room}&autostart=1&maxWidth=640&token=${tok('mid', { subscribe: true })}`, 'mid');

  // Chrome starts the upper layers once its bandwidth estimate (from our
  // TWCC feedback) allows them.
  const rampMs = await waitForWidth(top, 'top player', 1280, 45000);
  reportMetric('publisher_top_layer_reached_ms', rampMs, 'ms');
  await waitForWidth(mid, 'player asking for 640', 640, 20000);
  // The player page's viewer count and layer picker (the WHEP extensions:
  // `viewercount` and `layers` events, layer selection): "top" picks the
  // 320-wide layer, then hands the choice back to the server.
  await waitFor('two viewers counted', async () => (await top.evaluate(() => window.sfu.viewers)) === 2, 10000, 200);
  await waitFor('the layers event lists the three layers', async () =>
    (await top.evaluate(() => document.querySelectorAll('#layer option').length)) === 4, 15000, 200);
  const pick = (label) => top.evaluate((label) => {
    const select = document.querySelector('#layer');
    const option = [...select.options].find((o) => o.textContent.startsWith(label));
    select.value = option ? option.value : '';
    select.dispatchEvent(new Event('change'));
    return option ? option.textContent : 'automatic';
  }, label);
  console.log('picked', await pick('320x'));
  reportMetric('layer_pick_to_320_ms', await waitForWidth(top, 'top player after picking 320', 320, 15000), 'ms');
  await pick('automatic');
  reportMetric('layer_auto_back_to_1280_ms', await waitForWidth(top, 'top player back on automatic', 1280, 20000), 'ms');
  // What each layer really carries (the fake camera compresses well, so
  // layers run below their maxBitrate): the cap goes between low and mid.
  const l1 = (await rtpStats(publisher)).layers;
  await sleep(3000);
  const l2 = (await rtpStats(publisher)).layers;
  const kbps = {};
  for (const rid of Object.keys(l2)) kbps[rid] = Math.round(((l2[rid].bytesSent - l1[rid].bytesSent) * 8) / 3000);
  for (const rid of Object.keys(l2)) reportMetric(`layer_${rid}_${l2[rid].frameWidth}w_kbps`, kbps[rid], 'kbit/s');
  // (Chrome's per-rid byte counts include its probing padding; the server
  // measured about 140 / 390 / 940 kbit/s for q / h / f with this camera.)
  const capKbit = Number(process.env.CAP_KBIT || 400);
  // Chrome sends VP8 simulcast with temporal layers, so under this cap a
  // viewer may keep 640 at a lower frame rate rather than drop to 320.
  reportMetric('downlink_cap_kbit', capKbit, 'kbit/s');

  // The remote player starts unconstrained and gets the top layer...
  const capped = await openPage(remote,
    `${server.base}/play?room=${room}&autostart=1&token=${tok('capped', { subscribe: true })}`, 'capped');
  await waitForWidth(capped, 'remote player', 1280, 30000);
  // ...then its downlink is capped: it drops what does not fit (temporal
  // layers first, then spatial ones) and keeps decoding.
  const auth = `Basic ${Buffer.from(`${KEY}:${SECRET}`).toString('base64')}`;
  peer.capDownlink(capKbit);
  const capStart = Date.now();
  const cappedDecisions = sampleDecisions(server.base, room, 'capped', auth);
  t.after(() => cappedDecisions.stop());
  // Adapted: what the player receives (audio + video) fits the cap, over 1 s.
  const received = async () => {
    const s = await rtpStats(capped);
    return (s.inbound.video?.bytesReceived || 0) + (s.inbound.audio?.bytesReceived || 0);
  };
  const samples = [];
  await waitFor('the server adapts to the capped downlink', async () => {
    samples.push([Date.now(), await received()]);
    const old = samples.find(([t]) => t >= Date.now() - 1000 - 50);
    const [t0, b0] = old;
    const [t1, b1] = samples[samples.length - 1];
    return t1 - t0 >= 900 && ((b1 - b0) * 8) / (t1 - t0) <= capKbit * 0.9;
  }, 20000, 250);
  reportMetric('adapted_to_cap_ms', Date.now() - capStart, 'ms');
  await waitFor('capped player below the top layer', async () => (await width(capped)) < 1280, 20000, 200);
  reportMetric('downgrade_below_top_layer_ms', Date.now() - capStart, 'ms');
  // The switch down: the player settles on one lower layer (3 s on one
  // width, no gap over 500 ms) within 25 s, and any freeze meanwhile ends.
  const adaptation = await watchAdaptation(capped, 1280, 3000, 25000);
  console.log('adaptation to the cap', JSON.stringify(adaptation));
  reportMetric('capped_settled_ms', adaptation.settledMs, 'ms');
  reportMetric('adaptation_longest_stall_ms', adaptation.longestStallMs, 'ms');
  assert.ok(adaptation.settledMs !== null, `the capped player settles on a lower layer (${JSON.stringify(adaptation)})`);
  assert.ok(adaptation.longestStallMs < 5000, `switching down freezes the picture for less than 5 s (${adaptation.longestStallMs} ms)`);
  const before = await rtpStats(capped);
  const steady = await freezeWindow(capped, 8000);
  const after = await rtpStats(capped);
  console.log('capped steady window', JSON.stringify(steady));
  console.log('server decisions under the cap', JSON.stringify(cappedDecisions.stop()));
  const fps = steady.decoded / 8;
  reportMetric('capped_layer', `${after.inbound.video.frameWidth}x${after.inbound.video.frameHeight}@${fps.toFixed(1)}fps`);
  reportMetric('capped_longest_stall_ms', steady.longestStallMs, 'ms');
  const lowShare = steady.widths.filter((w) => w < 1280).length / steady.widths.length;
  reportMetric('capped_share_of_time_below_top', lowShare.toFixed(2));
  assert.ok(lowShare >= 0.8, `the capped player stays below the top layer (${steady.widths})`);
  assert.ok(steady.decoded > 20, `keeps decoding under the cap (${steady.decoded} frames in 8 s)`);
  assert.ok(steady.longestStallMs < 1000, `no freeze longer than 1 s (longest ${steady.longestStallMs} ms)`);
  assert.equal(await width(top), 1280, 'the other players are not affected');
  void before;

  // Lift the cap: back to the top layer.
  peer.capDownlink(null);
  const liftedDecisions = sampleDecisions(server.base, room, 'capped', auth);
  t.after(() => liftedDecisions.stop());
  let upMs;
  try {
    upMs = await waitForWidth(capped, 'uncapped player', 1280, 30000);
  } finally {
    console.log('server decisions after the cap was lifted', JSON.stringify(liftedDecisions.stop()));
  }
  reportMetric('upgrade_to_top_layer_ms', upMs, 'ms');

  // 5% random loss on the player's path: retransmissions keep it decoding.
  peer.loss(0.05);
  await sleep(2000);
  const lossy = await freezeWindow(capped, 10000);
  peer.loss(null);
  console.log('5% loss window', JSON.stringify(lossy));
  reportMetric('loss5_frames_decoded_in_10s', lossy.decoded);
  reportMetric('loss5_nacks_sent', lossy.nacks);
  reportMetric('loss5_frames_dropped', lossy.dropped);
  reportMetric('loss5_freezes', lossy.freezes);
  reportMetric('loss5_freeze_seconds', lossy.freezeSeconds.toFixed(2), 's');
  assert.ok(lossy.nacks > 0, 'the player NACKs lost packets');
  assert.ok(lossy.decoded > 100, `keeps decoding under 5% loss (${lossy.decoded} frames in 10 s)`);

  const m = await (await fetch(`${server.base}/metrics`)).text();
  console.log(m.split('\n').filter((l) => /^sfu_(layer_switches|video_down_tracks|video_paused)/.test(l)).join('\n'));
});
