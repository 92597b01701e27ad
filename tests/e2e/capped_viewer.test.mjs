// A capped viewer with unpaced forwarding: a Chromium WHEP player whose
// downlink is capped with tbf (600 kbit/s, 5 kB burst, 300 ms queue, as
// createPeerHost's capDownlink) joins a three-layer simulcast publisher
// and plays for 20 s (30 s in the runs measured below). Forwarded media no longer waits in a pacer, so a
// keyframe leaves the server as a burst; the layer choice must keep what it
// sends within the cap. Figures: loss (packetsLost / (lost + received))
// once settled and overall, freezes, the layer it settles on, tbf drops.
//
// The cap: this fake camera's top layer (1280x720, 20 fps) carries ~750-
// 820 kbit/s, the middle one ~350, the low one ~150. Under 1 Mbit/s the top
// layer fits (a trial: the player stayed on 1280, nothing lost), so the cap
// is 600 kbit/s: the middle layer fits, the top one does not.
//
// MEASURED (600 kbit/s, 30 s, 6 runs each; this 2-core machine):
//                         sfu-087af09 (packets,    sfu-cd57006 (frames,
//                         unpaced)                 pacer)
//   settled on            640 (6/6)                640 (6/6)
//   loss once settled     0 % (0/414..0/1387)      0 % (0/610..0/1312)
//   frame rate settled    16.0-19.3 fps            17.7-20.0 fps
//   loss overall          2.1-4.9 % (mean 3.8)     0.4-4.6 % (mean 1.7)
//   tbf drops             42-76                    7-98
//   stall at the start    1.7-2.0 s                1.4-3.0 s
//   freezes once settled  0                        0
// Both start the player on the top layer: its estimator starts at
// 3 Mbit/s (PACER_START_BPS), and that first estimate replaces the
// 1 Mbit/s the layer choice assumes before one, so the first 2-4 s
// overflow the cap; that start is where nearly all the loss is, and the
// unpaced server loses more there (nothing smooths what it sends into the
// full queue) but resumes the picture sooner. In some runs both go 640 -> 320
// -> 640 before settling. Once settled, unpaced forwarding loses nothing
// more than the pacer did (0 packets in either).
// 2026-12-08: with the top layer probed for during an upgrade's hold, the
// estimate of this 600 kbit/s link read up to 1.0-1.3 Mbit/s (a probe through
// the bucket's 5 kB burst) and one suite run ended a hold on 1280 (320 ->
// 1280 at 14.4 s). A hold now ends one step up (what its padding proved):
// 2 runs settled on 640, loss once settled 0, overall 6.1 and 5.0 %,
// 3 freezes each (all at the start).
// Bounds: settles below the top layer; once settled (2 s after the last
// width change, at least the last 10 s) loss < 2 % and no stall of 1 s or
// more; the start's stall < 5 s (Chromium asks for a keyframe ~3 s after
// its last decodable frame).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchBrowser, openPage, rtpStats, waitFor, reportMetric, sleep, createPeerHost, signToken, sh,
} from './lib/harness.mjs';
import { startSampler, readSamples, measureWindow, widthChanges, sampleDecisions, stalls } from './lib/playback.mjs';

const KEY = 'e2e';
const SECRET = 'e2e-capped-viewer-secret';
const TOP = 1280;
const CAP_KBIT = Number(process.env.CAP_KBIT || 600);
// 15 s in the suite (settled within 2-4 s, then at least 10 s steady; was
// 20 s, cut for the AV1 SVC trial's time); the figures above are from 30 s
// runs (PLAY_MS=30000).
const PLAY_MS = Number(process.env.PLAY_MS || 15000);

test('a tbf-capped viewer settles below the top layer with little loss', async (t) => {
  const started = Date.now();
  const peer = createPeerHost(t, 'cap');
  const server = await startServer(t, 'capped-viewer',
    ['--media-addr', peer.hostIp, '--api-key', KEY, '--api-secret', SECRET, '--log', 'info,sfu::forward=debug,sfu::worker=debug'], peer.hostIp);
  const room = 'capped';
  const tok = (id, opts) => signToken(KEY, SECRET, room, id, opts);
  const auth = `Basic ${Buffer.from(`${KEY}:${SECRET}`).toString('base64')}`;
  const local = await launchBrowser(t, null, server.base);
  const remote = await launchBrowser(t, peer.ns, server.base);

  const publisher = await openPage(local,
    `${server.base}/?room=${room}&autostart=1&simulcast=1&resolution=1280x720&token=${tok('pub', { publish: true })}`, 'publisher');
  // An unlimited viewer first, so that the publisher's estimate (from the
  // server's TWCC feedback) opens all three layers before the capped one joins.
  const free = await openPage(local, `${server.base}/play?room=${room}&autostart=1&token=${tok('free', { subscribe: true })}`, 'free');
  await waitFor('the unlimited viewer on the top layer', async () => (await rtpStats(free))?.inbound.video?.frameWidth === TOP, 45000, 200);
  const layers = (await rtpStats(publisher)).layers;
  console.log('publisher layers', JSON.stringify(layers));

  peer.capDownlink(CAP_KBIT);
  reportMetric('downlink_cap_kbit', CAP_KBIT, 'kbit/s');
  const viewer = await openPage(remote, `${server.base}/play?room=${room}&autostart=1&token=${tok('viewer', { subscribe: true })}`, 'viewer');
  await waitFor('the capped viewer has a peer connection', () => viewer.evaluate(() => !!(window.sfu && window.sfu.pc)), 15000);
  await startSampler(viewer, 100);
  const decisions = sampleDecisions(server.base, room, 'viewer', auth);
  t.after(() => decisions.stop());
  await waitFor('the capped viewer decodes', async () => (await rtpStats(viewer))?.inbound.video?.framesDecoded > 0, 20000, 100);
  const from = Date.now();
  await sleep(PLAY_MS);
  const to = Date.now();
  const data = await readSamples(viewer);
  const decided = decisions.stop();
  const qdisc = sh('tc', '-s', 'qdisc', 'show', 'dev', peer.hostIf);
  console.log('server decisions [ms, estimate, target, width, paused, up, down]', JSON.stringify(decided));
  console.log(qdisc.trim());
  const tbfDropped = Number(qdisc.match(/dropped (\d+)/)?.[1] ?? NaN);

  // Adaptation: from the first frame until 2 s after the last change of
  // the decoded width (the switch down and the stall around it); steady:
  // the rest.
  const changes = widthChanges(data, from, to);
  console.log('width changes [ms after the first frame, from, to]', JSON.stringify(changes.map((c) => [c.t - from, c.from, c.to])));
  const settledAt = changes.length ? changes[changes.length - 1].t : from;
  const steadyFrom = Math.min(settledAt + 2000, to - 10000);
  const all = measureWindow(data, from, to);
  const steady = measureWindow(data, steadyFrom, to);
  const ratio = (w) => (w.lost / Math.max(1, w.lost + w.received));
  reportMetric('settled_width', steady.endWidth);
  reportMetric('settled_after_ms', settledAt - from, 'ms');
  reportMetric('steady_window_ms', steady.ms, 'ms');
  reportMetric('width_changes', changes.length);
  reportMetric('loss_ratio_steady', ratio(steady).toFixed(4), `(${steady.lost}/${steady.lost + steady.received})`);
  reportMetric('loss_ratio_overall', ratio(all).toFixed(4), `(${all.lost}/${all.lost + all.received})`);
  reportMetric('tbf_dropped_packets', tbfDropped);
  reportMetric('freezes_overall', all.freezes);
  reportMetric('freeze_seconds_overall', all.freezeSeconds, 's');
  reportMetric('longest_stall_overall_ms', all.longestStallMs, 'ms');
  reportMetric('freezes_steady', steady.freezes);
  reportMetric('longest_stall_steady_ms', steady.longestStallMs, 'ms');
  reportMetric('fps_steady', (steady.decoded / (steady.ms / 1000)).toFixed(1));
  reportMetric('frames_dropped_steady', steady.dropped);
  reportMetric('nacks_overall', all.nacks);
  reportMetric('nacks_steady', steady.nacks);
  reportMetric('plis_overall', all.plis);
  reportMetric('test_duration_ms', Date.now() - started, 'ms');
  console.log('whole window', JSON.stringify(all));
  console.log('steady window', JSON.stringify(steady));
  for (const st of stalls(data, from, to, 200)) {
    console.log(`stall of ${st.ms} ms at ${st.at - from} ms (${new Date(st.at).toISOString()})`);
  }

  assert.ok(steady.endWidth > 0 && steady.endWidth < TOP, `settles below the top layer (${steady.endWidth})`);
  assert.ok(ratio(steady) < 0.02, `loss once settled < 2 % (${steady.lost}/${steady.lost + steady.received})`);
  assert.ok(steady.longestStallMs < 1000, `no stall of 1 s or more once settled (${steady.longestStallMs} ms)`);
  assert.ok(all.longestStallMs < 5000, `the picture never stops for 5 s (${all.longestStallMs} ms)`);
});
