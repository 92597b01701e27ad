// No freeze at a simulcast layer switch. With packet forwarding a switch
// takes effect at the first packet of the target layer's keyframe: the old
// layer plays until the new one can be decoded, so a switch by itself must
// not stop the picture.
//
// A Chromium publisher sends three layers (rids f/h/q, 1280/640/320 wide);
// one Chromium WHEP player in its own network namespace. A WHEP player has
// no runtime layer control (its ?maxWidth is fixed at the offer; the room
// protocol's `subscription` message is for meeting participants only), so
// its downlink drives the switches, as in simulcast.test.mjs: the player
// ramps up to 1280 at join; its downlink drops to 400 kbit/s at once (tbf,
// 5 kB burst, 300 ms queue): down to 640 and/or 320; the cap is lifted:
// back up to 1280. The page samples getStats() every 100 ms; for each
// change of the decoded width the test takes the longest stretch without a
// newly decoded frame (up: 1 s either side; down: from the cap until 1 s
// after) and the growth of freezeCount.
//
// MEASURED (sfu-087af09, this 2-core machine; 23 runs of this test and of
// its drafts): every up-switch (320 -> 640, 640 -> 1280, 320 -> 1280; ~40
// in all) stalled 101-201 ms (the 100 ms sampling step; the <video> element
// presented frames at most 117 ms apart), freezeCount +0. Down-switches
// under the sudden cap stalled 0.3-3.3 s (freezeCount +1 to +3; ~1 run in
// 3 near 3 s). The stall lasts from the cap until the player decodes the
// lower layer: media is not paced, so the layer still flowing and then the
// new layer's keyframe burst into a queue the estimate has not caught up
// with (str0m's estimate took 1-3 s to fall from ~1 Mbit/s to the 400 kbit/s
// cap), and what the tbf drops must be repaired or replaced by a keyframe.
// Tried on top: a 3 s resend cache (from 1.5 s; kept), going down a
// spatial layer instead of trimming temporal layers when the budget falls
// below 75 % of the layer's rate (kept: the target moves down within ~1 s
// of the cap), and resends without str0m's 15 % ratio cap (not kept): 2.5,
// 0.4 and 3.8 s in three runs with all three, 1.7 s with the two kept. A
// draft narrowing
// the link in two steps (700 then 400 kbit/s) stalled 0.6-2.1 s; with a 1 s
// tbf queue the drop stalled 0.2-0.5 s. The frame-forwarding server
// (sfu-cd57006, 3 runs): down 0.5-1.1 s, and one up-switch froze 0.9 s.
// Bounds: up-switches < 500 ms without a new freeze (2.5x the worst seen; a
// user notices from ~200 ms, which Chromium's freezeCount counts); down-
// switches under the sudden cap < 5 s, the bound simulcast.test.mjs has for
// the same cap (what it costs today, not a goal). After the lift the
// selector waits at least 10 s (its settle time after a downgrade, longer
// after repeated ones): 6-23 s measured, so one round trip only.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchBrowser, openPage, rtpStats, waitFor, reportMetric, sleep, createPeerHost, signToken, sh,
} from './lib/harness.mjs';
import { startSampler, readSamples, measureWindow, widthChanges, sampleDecisions } from './lib/playback.mjs';

const KEY = 'e2e';
const SECRET = 'e2e-layer-switch-secret';
const TOP = 1280;
const CAP_KBIT = Number(process.env.CAP_KBIT || 400);

const width = async (page) => (await rtpStats(page))?.inbound.video?.frameWidth ?? 0;

test('simulcast layer switches: up without a freeze, down under a sudden cap bounded', async (t) => {
  const started = Date.now();
  const peer = createPeerHost(t, 'lsw');
  const server = await startServer(t, 'layer-switch',
    ['--media-addr', peer.hostIp, '--api-key', KEY, '--api-secret', SECRET,
      '--log', 'info,sfu::forward=debug,sfu::worker=debug,sfu::room::participant=trace'], peer.hostIp);
  const room = 'switch';
  const tok = (id, opts) => signToken(KEY, SECRET, room, id, opts);
  const auth = `Basic ${Buffer.from(`${KEY}:${SECRET}`).toString('base64')}`;
  const local = await launchBrowser(t, null, server.base);
  const remote = await launchBrowser(t, peer.ns, server.base);

  await openPage(local,
    `${server.base}/?room=${room}&autostart=1&simulcast=1&resolution=1280x720&token=${tok('pub', { publish: true })}`, 'publisher');
  const viewer = await openPage(remote, `${server.base}/play?room=${room}&autostart=1&token=${tok('viewer', { subscribe: true })}`, 'viewer');
  await waitFor('the viewer has a peer connection', () => viewer.evaluate(() => !!(window.sfu && window.sfu.pc)), 15000);
  await startSampler(viewer, 100);
  const decisions = sampleDecisions(server.base, room, 'viewer', auth);
  t.after(() => decisions.stop());

  // [phase, Date.now()]: join, the cap, the first frame below the top, the lift, back on top.
  const marks = [['join', Date.now()]];
  let failure = null;
  const tbf = [];
  let tbfTimer = null;
  t.after(() => clearInterval(tbfTimer));
  try {
    await waitFor('viewer on the top layer', async () => (await width(viewer)) === TOP, 45000, 100);
    marks.push(['top', Date.now()]);
    await sleep(2000);
    peer.capDownlink(CAP_KBIT);
    marks.push(['cap', Date.now()]);
    // The token bucket's own counters while capped: [Date.now(), packets sent, dropped]
    // (skbs: the server sends with UDP GSO, so one drop can be several datagrams).
    tbfTimer = setInterval(() => {
      try {
        const q = sh('tc', '-s', 'qdisc', 'show', 'dev', peer.hostIf);
        const m = q.match(/Sent \d+ bytes (\d+) pkt \(dropped (\d+)/);
        if (m) tbf.push([Date.now(), Number(m[1]), Number(m[2])]);
      } catch { /* qdisc changing */ }
    }, 100);
    await waitFor(`below the top layer at ${CAP_KBIT} kbit/s`, async () => (await width(viewer)) < TOP, 20000, 100);
    marks.push(['below', Date.now()]);
    await sleep(4000);
    clearInterval(tbfTimer);
    peer.capDownlink(null);
    marks.push(['lift', Date.now()]);
    await waitFor('back on the top layer after the lift', async () => (await width(viewer)) === TOP, 35000, 100);
    marks.push(['back', Date.now()]);
    await sleep(2000);
  } catch (e) { failure = e; }
  clearInterval(tbfTimer);
  const end = Date.now();
  const data = await readSamples(viewer);
  const t0 = marks[0][1];
  console.log(`join at ${new Date(t0).toISOString()}`);
  console.log('marks (ms after join)', JSON.stringify(marks.map(([p, at]) => [p, at - t0])));
  console.log('server decisions [ms, estimate, target, width, paused, up, down]', JSON.stringify(decisions.stop()));

  // Each change of the decoded width, with the phase it happened in.
  const phaseOf = (at) => marks.filter(([p, m]) => m <= at && ['join', 'cap', 'lift'].includes(p)).pop();
  const perSwitch = widthChanges(data, t0, end).map((c) => {
    const [phase, since] = phaseOf(c.t);
    const from = c.to < c.from ? since : c.t - 1000;
    const w = measureWindow(data, from, c.t + 1000);
    const compact = data.samples.filter((x) => x.t >= from - 200 && x.t <= c.t + 1000)
      .map((x) => [x.t - c.t, x.framesDecoded, x.frameWidth, x.freezeCount, x.packetsLost, x.packetsReceived,
        x.nackCount, x.pliCount, x.keyFramesDecoded]);
    console.log(`switch ${c.from}->${c.to} at ${c.t - t0} ms (${phase}): ${JSON.stringify({ ...w, widths: undefined })}`);
    console.log(`  [ms from switch, decoded, width, freezes, lost, received, nacks, plis, keyframes]: ${JSON.stringify(compact)}`);
    if (c.to < c.from) {
      const drops = tbf.filter(([x]) => x >= from - 200 && x <= c.t + 1000).map(([x, sent, dropped]) => [x - c.t, sent, dropped]);
      console.log(`  tbf [ms from switch, packets sent, dropped]: ${JSON.stringify(drops)}`);
    }
    return { ...c, phase, up: c.to > c.from, ...w };
  });
  if (failure) throw failure;
  const worst = (list, k) => list.reduce((m, s) => Math.max(m, s[k] ?? 0), 0);
  const ups = perSwitch.filter((s) => s.up);
  const downs = perSwitch.filter((s) => !s.up);
  for (const [name, list] of [['up', ups], ['down', downs]]) {
    reportMetric(`${name}_switches`, list.map((s) => `${s.from}->${s.to}`).join(',') || 'none');
    reportMetric(`${name}_longest_stall_ms`, worst(list, 'longestStallMs'), 'ms');
    reportMetric(`${name}_longest_presented_gap_ms`, worst(list, 'longestPresentGapMs'), 'ms');
    reportMetric(`${name}_max_freezes`, worst(list, 'freezes'));
    reportMetric(`${name}_max_lost`, worst(list, 'lost'));
  }
  const at = (p) => marks.find(([q]) => q === p)[1];
  reportMetric('join_to_top_ms', at('top') - at('join'), 'ms');
  reportMetric('cap_to_switch_ms', at('below') - at('cap'), 'ms');
  reportMetric('lift_to_top_ms', at('back') - at('lift'), 'ms');
  const whole = measureWindow(data, t0, end);
  reportMetric('total_freezes', whole.freezes);
  reportMetric('total_freeze_seconds', whole.freezeSeconds, 's');
  reportMetric('test_duration_ms', Date.now() - started, 'ms');

  assert.ok(ups.some((s) => s.phase === 'lift') && downs.length >= 1,
    `the decoded width went down under the cap and up after it (${JSON.stringify(perSwitch.map((s) => [s.phase, s.from, s.to]))})`);
  for (const s of ups) {
    assert.ok(s.longestStallMs < 500, `up ${s.from}->${s.to} (${s.phase}): no stall of 500 ms or more (${s.longestStallMs} ms)`);
    assert.equal(s.freezes, 0, `up ${s.from}->${s.to} (${s.phase}): no freeze (freezeCount +${s.freezes})`);
  }
  for (const s of downs) {
    assert.ok(s.longestStallMs < 5000, `down ${s.from}->${s.to}: the picture resumes within 5 s (${s.longestStallMs} ms)`);
  }
});
