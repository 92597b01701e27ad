// A browser publishes its fake camera and microphone over WHIP; browsers
// play over WHEP. Asserts what a viewer sees: frames decoded at the
// publisher's resolution, audio received; then that nothing leaks.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchBrowser, openPage, rtpStats, waitFor, waitForNoSessions, reportMetric, sleep,
} from './lib/harness.mjs';

async function assertPlaying(page, label, publisher) {
  const first = await waitFor(`${label} decodes video`, async () => {
    const s = await rtpStats(page);
    return s?.inbound.video?.framesDecoded > 0 ? s : false;
  }, 20000);
  await sleep(2000);
  const later = await rtpStats(page);
  assert.ok(later.inbound.video.framesDecoded > first.inbound.video.framesDecoded + 20,
    `${label}: frames keep being decoded (${first.inbound.video.framesDecoded} -> ${later.inbound.video.framesDecoded})`);
  assert.ok(later.inbound.audio?.packetsReceived > 50, `${label}: audio packets arrive`);
  assert.ok(later.inbound.audio?.totalSamplesReceived > 0, `${label}: audio samples are played out`);
  // The viewer decodes what the publisher currently sends (Chrome adapts
  // the send resolution to bandwidth, so compare both sides, with retries).
  await waitFor(`${label} resolution equals the publisher's`, async () => {
    const [p, v] = [await rtpStats(publisher), await rtpStats(page)];
    const out = p.outbound.video;
    const inn = v.inbound.video;
    return out.frameWidth > 0 && out.frameWidth === inn.frameWidth && out.frameHeight === inn.frameHeight
      ? `${inn.frameWidth}x${inn.frameHeight}` : false;
  }, 15000, 250);
  return later;
}

test('browser publishes over WHIP, browsers play over WHEP, nothing leaks', async (t) => {
  const server = await startServer(t, 'whip-whep');
  const browser = await launchBrowser(t);
  const room = 'e2e-room';

  // Two players arrive before the publisher and wait.
  const playerB = await openPage(browser, `${server.base}/play?room=${room}&autostart=1`, 'B');
  const playerC = await openPage(browser, `${server.base}/play?room=${room}&autostart=1`, 'C');
  await waitFor('players connected', async () =>
    (await rtpStats(playerB))?.state === 'connected' && (await rtpStats(playerC))?.state === 'connected');

  // The publisher starts; measure WHIP POST -> first decoded frame at B.
  let whipPostAt = 0;
  const publisherContext = await browser.newContext();
  const publisher = await publisherContext.newPage();
  publisher.on('request', (r) => { if (r.method() === 'POST' && r.url().includes('/whip/')) whipPostAt = Date.now(); });
  await publisher.goto(`${server.base}/?room=${room}&autostart=1&resolution=640x360`);
  await waitFor('B decodes the first frame', async () => (await rtpStats(playerB))?.inbound.video?.framesDecoded > 0, 20000, 20);
  reportMetric('whip_post_to_first_decoded_frame_ms', Date.now() - whipPostAt, 'ms');
  assert.equal(await publisher.evaluate(() => window.sfu.state), 'connected');

  const b = await assertPlaying(playerB, 'player B', publisher);
  await assertPlaying(playerC, 'player C', publisher);
  console.log('player B stats', JSON.stringify(b.inbound));

  // A player joining a running broadcast gets its first picture fast.
  const joinAt = Date.now();
  const playerD = await openPage(browser, `${server.base}/play?room=${room}&autostart=1`, 'D');
  await waitFor('D decodes the first frame', async () => (await rtpStats(playerD))?.inbound.video?.framesDecoded > 0, 20000, 20);
  reportMetric('whep_join_to_first_decoded_frame_ms', Date.now() - joinAt, 'ms');
  await assertPlaying(playerD, 'player D', publisher);

  // Everyone leaves (pages close: DELETE on pagehide, or the session timeout).
  for (const p of [publisher, playerB, playerC, playerD]) await p.context().close();
  const m = await waitForNoSessions(server.base);
  assert.ok(m.sfu_frames_forwarded_total > 0);
  assert.ok(m.sfu_keyframe_requests_sent_total > 0, 'new viewers made the server request keyframes');
});

test('a player waiting before the publisher starts plays without reloading', async (t) => {
  const server = await startServer(t, 'player-first');
  const browser = await launchBrowser(t);
  const room = 'waiting-room';
  const player = await openPage(browser, `${server.base}/play?room=${room}&autostart=1`, 'player');
  await waitFor('player connected', async () => (await rtpStats(player))?.state === 'connected');
  await sleep(3000);
  const before = await rtpStats(player);
  assert.equal(before.inbound.video?.framesDecoded ?? 0, 0, 'nothing to decode before the publisher');
  assert.match(await player.textContent('#waiting'), /waiting for publisher/);
  assert.equal(await player.evaluate(() => window.sfu.publisher), 'offline', 'the server said: no publisher');
  const publisher = await openPage(browser, `${server.base}/?room=${room}&autostart=1&resolution=640x360`, 'publisher');
  await assertPlaying(player, 'player', publisher);
  assert.equal(await player.evaluate(() => window.sfu.publisher), 'live');
  // The publisher leaves: the player is told; a new one takes over and the
  // same player keeps playing without a new offer.
  await publisher.context().close();
  await waitFor('player told the publisher left', async () =>
    (await player.evaluate(() => window.sfu.publisher)) === 'offline', 10000, 100);
  assert.match(await player.textContent('#publisher'), /no publisher/);
  const next = await openPage(browser, `${server.base}/?room=${room}&autostart=1&resolution=640x360`, 'publisher-2');
  const afterSwitch = (await rtpStats(player)).inbound.video.framesDecoded;
  await waitFor('player decodes the second publisher', async () =>
    (await rtpStats(player)).inbound.video.framesDecoded > afterSwitch + 30, 20000, 200);
  await next.context().close();
  await player.context().close();
  await waitForNoSessions(server.base);
});
