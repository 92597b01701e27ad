// LiveKit's own browser SDK (livekit-client from npm, unmodified) meets on
// this server with LiveKit's signalling in both of its modes: four Chromium
// pages, ann and ben with two peer connections (/rtc: they offer to
// publish, the server offers what they receive), cat and dan with one
// (/rtc/v1), publish camera (simulcast; dan scalable AV1) and microphone;
// each decodes the other three's video and receives their audio; a viewer
// that asks for LOW quality gets a narrower picture and HIGH a wider one
// back, of simulcast VP8 and of AV1's spatial layers;
// a hidden (disabled) video stops and comes back; a mute shows at the
// others; active speakers are reported; data packets arrive with their
// sender (to everyone, to one identity, lossy, and from the admin API); a
// signal connection that drops resumes without the others seeing a leave;
// a participant that leaves disappears at the others. A WHIP publisher
// (FFmpeg) is seen by a livekit-client page as a participant whose video
// decodes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from './lib/server.mjs';
import { launchBrowser, poll, reportMetric, sleep } from './lib/browser.mjs';
import { signToken } from './lib/harness.mjs';
import { openLiveKitPage, joinRoom, received, events, speakers, dataReceived, publishData, connectionMode, DUAL } from './lib/livekit.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const KEY = 'e2e-key';
const SECRET = 'e2e-secret-for-livekit-clients';
const ROOM = 'lk-standup';

// Room options of a publisher of scalable AV1 (livekit-client's default
// mode for AV1 is L3T3_KEY), without a VP8 backup track.
const AV1_SVC = { publishDefaults: { videoCodec: 'av1', backupCodec: false } };

const token = (room, identity) => signToken(KEY, SECRET, room, identity, { publish: true, subscribe: true });

/** Every other participant's video decodes and keeps decoding, and audio arrives. */
async function seesAndHears(page, label, others) {
  const want = others.flatMap((o) => [`${o}/video`, `${o}/audio`]);
  let last = null;
  const first = await poll(`${label} decodes ${others.join(', ')}`, async () => {
    const r = last = await received(page);
    return want.every((k) => r[k] && (k.endsWith('/video') ? r[k].framesDecoded > 0 && r[k].frameWidth > 0 : r[k].samples > 0)) ? r : null;
  }, 30000, 250).catch((e) => { throw new Error(`${e.message}; receives ${JSON.stringify(last)}`); });
  await sleep(1000);
  const later = await received(page);
  for (const o of others) {
    assert.ok(later[`${o}/video`].framesDecoded > first[`${o}/video`].framesDecoded,
      `${label}: ${o}'s video keeps decoding (${JSON.stringify(first[`${o}/video`])} then ${JSON.stringify(later[`${o}/video`])})`);
    assert.ok(later[`${o}/audio`].samples > first[`${o}/audio`].samples, `${label}: ${o}'s audio keeps arriving`);
  }
}

test('four livekit-client pages meet in both signalling modes: media both ways, layer by quality, mute, speakers, data, resume, leave', async (t) => {
  const server = await startServer(t, 'livekit-client', {
    extraArgs: ['--api-key', KEY, '--api-secret', SECRET],
  });
  const ws = server.base.replace('http', 'ws');
  const browser = await launchBrowser(t, { origin: server.base });
  const names = ['ann', 'ben', 'cat', 'dan'];
  const pages = [];
  const dual = (n) => n === 'ann' || n === 'ben';
  for (const n of names.slice(0, 3)) {
    const page = await openLiveKitPage(browser, server.base, n);
    const sid = await joinRoom(page, ws, token(ROOM, n), { room: dual(n) ? DUAL : {} });
    assert.match(sid, /^PA_/);
    assert.equal(await connectionMode(page), dual(n) ? 'subscriber-primary' : 'publisher-only', `${n}'s signalling mode`);
    pages.push(page);
  }
  // The fourth joins a running meeting: time from its join to its first
  // decoded remote frame (polled while it joins and publishes).
  const dan = await openLiveKitPage(browser, server.base, 'dan');
  const joinedAt = Date.now();
  const joining = joinRoom(dan, ws, token(ROOM, 'dan'), { room: AV1_SVC });
  await poll('dan decodes a first remote frame', async () => {
    const r = await received(dan).catch(() => ({}));
    return Object.entries(r).some(([k, v]) => k.endsWith('/video') && v.framesDecoded > 0);
  }, 20000, 20);
  reportMetric('livekit_fourth_join_to_first_remote_frame_ms', Date.now() - joinedAt, 'ms');
  await joining;
  pages.push(dan);

  for (const [i, page] of pages.entries()) {
    await seesAndHears(page, names[i], names.filter((n) => n !== names[i]));
  }

  // Ann asks for ben's LOW layer: a narrower picture; HIGH brings it back.
  const width = async () => (await received(pages[0]))['ben/video'].frameWidth;
  // Ann's estimate climbs from its start: wait until she gets more than ben's lowest layer.
  const full = await poll('ann gets ben above his lowest layer', async () => {
    const w = await width();
    return w > 320 ? w : null;
  }, 20000, 250);
  await pages[0].evaluate(() => window.lkSetQuality('ben', 'LOW'));
  const low = await poll('ann gets a narrower layer of ben', async () => {
    const w = await width();
    return w > 0 && w < full ? w : null;
  }, 15000, 250);
  await pages[0].evaluate(() => window.lkSetQuality('ben', 'HIGH'));
  const high = await poll('ann gets ben wider again', async () => {
    const w = await width();
    return w > low ? w : null;
  }, 15000, 250);
  console.log(`# ann sees ben at ${full} px, ${low} px at LOW, ${high} px again at HIGH`);

  // Dan publishes scalable AV1 (L3T3_KEY; the server's answer puts the
  // codec his add_track named first): ann (two connections: the server
  // offers her receiving one) gets his spatial layers by quality too; cat
  // (one connection: livekit-client asks for the dependency descriptor on
  // its receiving lines) decodes them as well.
  const danAt = async (page) => (await received(page))['dan/video'];
  const danFull = await poll('ann gets dan above his lowest layer', async () => {
    const r = await danAt(pages[0]);
    return r.frameWidth > 320 ? r : null;
  }, 20000, 250);
  assert.equal(danFull.codec, 'video/AV1', 'dan publishes AV1');
  await pages[0].evaluate(() => window.lkSetQuality('dan', 'LOW'));
  const danLow = await poll('ann gets a narrower layer of dan', async () => {
    const w = (await danAt(pages[0])).frameWidth;
    return w > 0 && w < danFull.frameWidth ? w : null;
  }, 15000, 250);
  await pages[0].evaluate(() => window.lkSetQuality('dan', 'HIGH'));
  const danHigh = await poll('ann gets dan wider again', async () => {
    const w = (await danAt(pages[0])).frameWidth;
    return w > danLow ? w : null;
  }, 15000, 250);
  const atCat = await danAt(pages[2]);
  console.log(`# ann sees dan (AV1 SVC) at ${danFull.frameWidth} px, ${danLow} px at LOW, ${danHigh} px again at HIGH; cat at ${atCat.frameWidth} px`);
  assert.equal(atCat.codec, 'video/AV1', `cat decodes dan's AV1 (${JSON.stringify(atCat)})`);

  // Ann hides ben's tile (the track disabled): his frames stop reaching
  // her; shown again, they come back.
  const frames = async () => (await received(pages[0]))['ben/video'].framesDecoded;
  await pages[0].evaluate(() => window.lkSetEnabled('ben', false));
  const stopped = await poll('ben\'s video stops at ann', async () => {
    const a = await frames();
    await sleep(1000);
    const b = await frames();
    return b === a ? b : null;
  }, 10000, 0);
  await pages[0].evaluate(() => window.lkSetEnabled('ben', true));
  await poll('ben\'s video comes back at ann', async () => (await frames()) > stopped + 10, 10000, 250);

  // Cat mutes her microphone: the others see it.
  await pages[2].evaluate(() => window.lk.room.localParticipant.setMicrophoneEnabled(false));
  for (const i of [0, 1, 3]) {
    await poll(`${names[i]} sees cat muted`, async () => (await events(pages[i]))
      .some(([e, who, kind]) => e === 'muted' && who === 'cat' && kind === 'audio'), 10000, 100);
  }
  // Everyone's fake microphone beeps: active speakers are reported.
  await poll('ann hears active speakers', async () => (await speakers(pages[0]))
    .some((list) => list.length > 0), 15000, 250);

  // Data: to everyone (reliable), to cat alone, lossy, and from the admin API.
  await publishData(pages[0], 'hello all');
  await publishData(pages[0], 'for cat only', { to: ['cat'] });
  await publishData(pages[1], 'lossy hi', { lossy: true, topic: 'fast' });
  const admin = await fetch(`${server.base}/api/rooms/${ROOM}/data`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${KEY}:${SECRET}`).toString('base64')}`, 'content-type': 'application/json' },
    body: JSON.stringify({ topic: 'news', payload: 'from the server' }),
  });
  assert.equal(admin.status, 204, await admin.text());
  for (const i of [1, 2, 3]) {
    await poll(`${names[i]} gets ann's and the server's messages`, async () => {
      const d = await dataReceived(pages[i]);
      return d.some((m) => m.from === 'ann' && m.text === 'hello all' && m.topic === 'chat')
        && d.some((m) => m.from === null && m.text === 'from the server' && m.topic === 'news');
    }, 10000, 100);
  }
  await poll('cat gets the message for her', async () => (await dataReceived(pages[2]))
    .some((m) => m.from === 'ann' && m.text === 'for cat only'), 5000, 100);
  await poll('ann gets ben\'s lossy message', async () => (await dataReceived(pages[0]))
    .some((m) => m.from === 'ben' && m.text === 'lossy hi' && m.topic === 'fast'), 5000, 100);
  for (const i of [1, 3]) {
    assert.ok(!(await dataReceived(pages[i])).some((m) => m.text === 'for cat only'), `${names[i]} does not get cat's message`);
  }
  assert.ok(!(await dataReceived(pages[0])).some((m) => m.text === 'hello all'), 'no echo to the sender');

  // Ben's signal connection drops (livekit-client's own simulation): it
  // resumes; nobody sees him leave, and media keeps flowing both ways.
  await pages[1].evaluate(() => window.lk.room.simulateScenario('signal-reconnect'));
  await poll('ben resumes', async () => (await events(pages[1]))
    .some(([e]) => e === 'reconnected'), 15000, 100);
  const resumedEvents = await events(pages[1]);
  assert.ok(!resumedEvents.some(([e]) => e === 'disconnected'), `ben stays connected: ${JSON.stringify(resumedEvents)}`);
  for (const i of [0, 2, 3]) {
    assert.ok(!(await events(pages[i])).some(([e, who]) => e === 'left' && who === 'ben'), `${names[i]} never sees ben leave`);
  }
  await seesAndHears(pages[0], 'ann after ben resumed', ['ben']);
  await seesAndHears(pages[1], 'ben after resuming', ['ann', 'dan']);

  // Dan leaves: the others see him go, and stop receiving him.
  await dan.evaluate(() => window.lk.room.disconnect());
  for (const i of [0, 1, 2]) {
    await poll(`${names[i]} sees dan leave`, async () => (await events(pages[i]))
      .some(([e, who]) => e === 'left' && who === 'dan'), 5000, 100);
    const r = await received(pages[i]);
    assert.ok(!r['dan/video'] && !r['dan/audio'], `${names[i]} no longer has dan's tracks`);
  }
});

test('a WHIP publisher (FFmpeg) is a participant a livekit-client page sees and decodes', async (t) => {
  const server = await startServer(t, 'livekit-whip', {
    extraArgs: ['--api-key', KEY, '--api-secret', SECRET],
  });
  const room = 'lk-whip';
  const ffmpeg = spawn('python3', [join(here, 'ffmpeg_whip.py'), `${server.base}/whip/${room}`,
    signToken(KEY, SECRET, room, 'obs', { publish: true }), '20'], { stdio: ['ignore', 'inherit', 'inherit'] });
  t.after(() => ffmpeg.kill('SIGKILL'));
  const browser = await launchBrowser(t, { origin: server.base });
  const page = await openLiveKitPage(browser, server.base, 'viewer');
  await joinRoom(page, server.base.replace('http', 'ws'), token(room, 'viewer'), { publish: false });
  await poll('the viewer decodes the WHIP publisher', async () => {
    const r = await received(page);
    const video = Object.entries(r).find(([k]) => k.endsWith('/video'));
    return video && video[1].framesDecoded > 10 && video[1].frameWidth > 0 ? video : null;
  }, 30000, 250);
});
