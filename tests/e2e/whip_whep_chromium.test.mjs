// A browser publishes its fake camera and microphone over WHIP; browsers
// play over WHEP. Asserts what a viewer sees: frames decoded at the
// publisher's resolution, audio received; then that nothing leaks.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, metricTotal } from './lib/server.mjs';
import {
  launchBrowser, killBrowser, openPage, closePage, poll, waitFor, inboundVideoStats, inboundAudioStats, outboundVideoStats,
  sfuState, framesDecoded, reportMetric, sleep,
} from './lib/browser.mjs';

/** Gauges that must all read 0 (summed over labels) once every page is closed. */
const GAUGES_ZERO_WHEN_EMPTY = ['sfu_rooms', 'sfu_participants', 'sfu_rtc_instances', 'sfu_registry_entries', 'sfu_tracks'];
/** How long the server may take to notice closed pages (DELETE, or the 5 s session timeout). */
const EMPTY_WITHIN_MS = 10000;
/** --session-timeout-secs that lib/server.mjs passes. */
const SESSION_TIMEOUT_MS = 5000;
const PUBLISH_QUERY = 'autostart=1&resolution=640x360';

async function assertServerEmpty(server) {
  return poll(`${GAUGES_ZERO_WHEN_EMPTY.join(', ')} all 0 within ${EMPTY_WITHIN_MS} ms`, async () => {
    const m = await server.metrics();
    for (const g of GAUGES_ZERO_WHEN_EMPTY) {
      if (metricTotal(m, g) === undefined) throw new Error(`/metrics has no ${g} (names changed? edit GAUGES_ZERO_WHEN_EMPTY)`);
    }
    return GAUGES_ZERO_WHEN_EMPTY.every((g) => metricTotal(m, g) === 0) ? m : false;
  }, EMPTY_WITHIN_MS, 250);
}

const decodes = (page, label, timeoutMs = 20000, intervalMs = 100) =>
  waitFor(page, async (p) => ((await framesDecoded(p)) > 0 ? Date.now() : false), timeoutMs, { what: `${label} decodes a frame`, intervalMs });

/** Video keeps decoding (two samples 2 s apart) at the publisher's current
 * send resolution, and audio arrives and is played out. */
async function assertPlaying(player, label, publisher) {
  const first = await waitFor(player, async (p) => {
    const v = await inboundVideoStats(p);
    return v?.framesDecoded > 0 ? v : false;
  }, 20000, { what: `${label} decodes video` });
  await sleep(2000);
  const later = await inboundVideoStats(player);
  assert.ok(later.framesDecoded > first.framesDecoded + 20,
    `${label}: frames keep being decoded (${first.framesDecoded} -> ${later.framesDecoded})`);
  const audio = await inboundAudioStats(player);
  assert.ok(audio?.packetsReceived > 50, `${label}: audio packets arrive (${JSON.stringify(audio)})`);
  assert.ok(audio.totalSamplesReceived > 0, `${label}: audio samples are played out`);
  // Chrome adapts its send resolution to bandwidth and CPU: compare both
  // sides as they are now, retrying until they agree.
  const size = await waitFor(player, async (p) => {
    const [out, inn] = [await outboundVideoStats(publisher), await inboundVideoStats(p)];
    return out?.frameWidth > 0 && out.frameWidth === inn.frameWidth && out.frameHeight === inn.frameHeight
      ? `${inn.frameWidth}x${inn.frameHeight}` : false;
  }, 15000, { what: `${label} resolution equals the publisher's`, intervalMs: 250 });
  console.log(`${label}: ${size}, video ${JSON.stringify(later)}, audio ${JSON.stringify(audio)}`);
  return later;
}

test('browser publishes over WHIP, browsers play over WHEP, nothing leaks', async (t) => {
  const server = await startServer(t, 'whip-whep');
  const browser = await launchBrowser(t);
  const room = 'e2e-room';

  // Two players arrive before the publisher and wait.
  const playerB = await openPage(browser, `${server.base}/play?room=${room}&autostart=1`, 'B');
  const playerC = await openPage(browser, `${server.base}/play?room=${room}&autostart=1`, 'C');
  for (const [p, l] of [[playerB, 'B'], [playerC, 'C']]) {
    await waitFor(p, async (pg) => (await sfuState(pg))?.pc === 'connected', 15000, { what: `player ${l} connected` });
  }

  // Publisher A starts: time from its navigation (and from its WHIP POST) to B's first frame.
  let whipPostAt = 0;
  const navAt = Date.now();
  const publisher = await openPage(browser, `${server.base}/?room=${room}&${PUBLISH_QUERY}`, 'A', {
    beforeGoto: (p) => p.on('request', (r) => { if (r.method() === 'POST' && r.url().includes('/whip/')) whipPostAt = Date.now(); }),
  });
  const firstFrameAt = await decodes(playerB, 'B', 20000, 20);
  reportMetric('publisher_nav_to_first_decoded_frame_ms', firstFrameAt - navAt, 'ms');
  reportMetric('whip_post_to_first_decoded_frame_ms', firstFrameAt - whipPostAt, 'ms');
  assert.equal((await sfuState(publisher)).state, 'connected');

  await assertPlaying(playerB, 'player B', publisher);
  await assertPlaying(playerC, 'player C', publisher);

  // A player joining a running broadcast gets its first picture fast (from
  // its navigation, and from its WHEP POST: the server's part).
  let whepPostAt = 0;
  const playerD = await openPage(browser, `${server.base}/play?room=${room}&autostart=1`, 'D', {
    beforeGoto: (p) => p.on('request', (r) => { if (r.method() === 'POST' && r.url().includes('/whep/')) whepPostAt = Date.now(); }),
  });
  const dFirstFrameAt = await decodes(playerD, 'D', 20000, 20);
  reportMetric('whep_join_to_first_decoded_frame_ms', dFirstFrameAt - playerD.navigatedAt, 'ms');
  reportMetric('whep_post_to_first_decoded_frame_ms', dFirstFrameAt - whepPostAt, 'ms');
  await assertPlaying(playerD, 'player D', publisher);

  const live = await server.metrics();
  assert.equal(metricTotal(live, 'sfu_rooms'), 1, 'one room while playing');
  assert.equal(metricTotal(live, 'sfu_participants'), 4, 'one publisher + three players');

  // Everyone leaves (pages close: DELETE on pagehide, or the session timeout).
  const closedAt = Date.now();
  for (const p of [publisher, playerB, playerC, playerD]) await closePage(p);
  const m = await assertServerEmpty(server);
  reportMetric('pages_closed_to_server_empty_ms', Date.now() - closedAt, 'ms');
  assert.ok(metricTotal(m, 'sfu_media_packets_forwarded_total') > 0);
  assert.ok(metricTotal(m, 'sfu_keyframe_requests_sent_total') > 0, 'new viewers made the server request keyframes');
});

test('a player waiting before the publisher starts plays without reloading', async (t) => {
  const server = await startServer(t, 'player-first');
  const browser = await launchBrowser(t);
  const room = 'waiting-room';
  const player = await openPage(browser, `${server.base}/play?room=${room}&autostart=1`, 'player');
  await waitFor(player, async (p) => (await sfuState(p))?.pc === 'connected', 15000, { what: 'player connected' });
  await sleep(3000);
  assert.equal(await framesDecoded(player), 0, 'nothing to decode before the publisher');
  assert.match(await player.textContent('#waiting'), /waiting for publisher/);
  assert.equal(await player.evaluate(() => window.sfu.publisher), 'offline', 'the server said: no publisher');

  const publisher = await openPage(browser, `${server.base}/?room=${room}&${PUBLISH_QUERY}`, 'publisher');
  reportMetric('late_publisher_nav_to_first_decoded_frame_ms', (await decodes(player, 'player', 20000, 20)) - publisher.navigatedAt, 'ms');
  await assertPlaying(player, 'player', publisher);
  assert.equal(await player.evaluate(() => window.sfu.publisher), 'live');

  // The publisher leaves: the player is told; a new one takes over and the
  // same player keeps playing without a new offer.
  await closePage(publisher);
  await waitFor(player, (p) => p.evaluate(() => window.sfu.publisher === 'offline'), 10000, { what: 'player told the publisher left' });
  assert.match(await player.textContent('#publisher'), /no publisher/);
  const next = await openPage(browser, `${server.base}/?room=${room}&${PUBLISH_QUERY}`, 'publisher-2');
  const afterSwitch = await framesDecoded(player);
  await waitFor(player, async (p) => (await framesDecoded(p)) > afterSwitch + 30, 20000,
    { what: 'player decodes the second publisher', intervalMs: 200 });
  await closePage(next);
  await closePage(player);
  await assertServerEmpty(server);
});

test('players on another worker (a room spread over workers) play, and see the publisher leave and return', async (t) => {
  // Spread from the first participant on: the second player goes to the
  // other worker, into a fan-out fed by one relay from the room's worker.
  const server = await startServer(t, 'spread', { extraArgs: ['--workers', '2', '--spread-viewers-at', '1'] });
  const browser = await launchBrowser(t);
  const room = 'spread-room';
  const players = [];
  for (const label of ['home', 'spread']) {
    const p = await openPage(browser, `${server.base}/play?room=${room}&autostart=1`, label);
    await waitFor(p, async (pg) => (await sfuState(pg))?.pc === 'connected', 15000, { what: `player ${label} connected` });
    players.push([p, label]);
  }
  assert.equal(metricTotal(await server.metrics(), 'sfu_rooms'), 1, 'one room');

  const publisher = await openPage(browser, `${server.base}/?room=${room}&${PUBLISH_QUERY}`, 'publisher');
  for (const [p, label] of players) await assertPlaying(p, `player ${label}`, publisher);
  const live = await server.metrics();
  assert.equal(metricTotal(live, 'sfu_fanout_relays'), 1, 'one relay to the other worker');
  const perWorker = [0, 1].map((w) => metricTotal(live, `sfu_video_down_tracks{worker="${w}"}`) ?? 0);
  assert.deepEqual(perWorker, [1, 1], `one player on each worker (video down-tracks per worker: ${perWorker})`);

  // The publisher leaves: both players are told; the next one plays on both.
  await closePage(publisher);
  for (const [p, label] of players) {
    await waitFor(p, (pg) => pg.evaluate(() => window.sfu.publisher === 'offline'), 10000, { what: `player ${label} told the publisher left` });
  }
  const next = await openPage(browser, `${server.base}/?room=${room}&${PUBLISH_QUERY}`, 'publisher-2');
  for (const [p, label] of players) {
    const before = await framesDecoded(p);
    await waitFor(p, async (pg) => (await framesDecoded(pg)) > before + 30, 20000,
      { what: `player ${label} decodes the second publisher`, intervalMs: 200 });
    assert.equal(await p.evaluate(() => window.sfu.publisher), 'live', `player ${label} shows the publisher live`);
  }
  await closePage(next);
  for (const [p] of players) await closePage(p);
  // The relay ends with its viewers, and its upstream session with it.
  await assertServerEmpty(server);
});

test('browsers that vanish (SIGKILL: no DELETE, no DTLS close) are removed after the session timeout', async (t) => {
  const server = await startServer(t, 'browser-killed');
  const room = 'crash-room';
  const pubBrowser = await launchBrowser(t);
  const playBrowser = await launchBrowser(t);
  const player = await openPage(playBrowser, `${server.base}/play?room=${room}&autostart=1`, 'player');
  const publisher = await openPage(pubBrowser, `${server.base}/?room=${room}&${PUBLISH_QUERY}`, 'publisher');
  await assertPlaying(player, 'player', publisher);
  const participants = async (kind) => metricTotal(await server.metrics(), `sfu_participants{kind="${kind}"}`);
  assert.equal(await participants('whip'), 1);
  assert.equal(await participants('whep'), 1);

  // The publisher's machine dies: its session must go after the timeout, and
  // the player (still there) is told the publisher is gone.
  const killedAt = Date.now();
  killBrowser(pubBrowser);
  await poll('publisher session removed', async () => (await participants('whip')) === 0, SESSION_TIMEOUT_MS + 5000, 100);
  const removedMs = Date.now() - killedAt;
  reportMetric('killed_publisher_to_session_removed_ms', removedMs, 'ms');
  assert.ok(removedMs >= SESSION_TIMEOUT_MS - 1500, `not removed before the timeout (${removedMs} ms): it must not be the DELETE path`);
  await waitFor(player, (p) => p.evaluate(() => window.sfu.publisher === 'offline'), 5000, { what: 'player told the publisher left' });
  assert.equal(await participants('whep'), 1, 'the player stays');

  // Then the player's machine dies too: nothing may be left.
  killBrowser(playBrowser);
  const m = await assertServerEmpty(server);
  assert.equal(metricTotal(m, 'sfu_sessions'), 0);
});
