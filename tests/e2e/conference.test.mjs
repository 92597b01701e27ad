// A meeting on the conference page (/room/{name}): three Chromium pages and
// one Firefox page (geckodriver, lib/firefox.mjs). Firefox gathers no
// candidates on a loopback-only host, so it sits in its own namespace
// behind a veth pair and the server listens on the veth address;
// everyone:
// everyone decodes the other three's video and receives their audio; chat
// reaches the others with the right sender; a mute shows on the others;
// the admin API lists and removes a participant, whose page shows it; a
// page that leaves disappears from the others within 2 s.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './lib/server.mjs';
import { launchBrowser, openPage, waitFor, reportMetric, sleep } from './lib/browser.mjs';
import { openFirefoxPage, firefoxMissing } from './lib/firefox.mjs';
import { createPeerHost, signToken } from './lib/harness.mjs';

const ROOM = 'standup';
const QUERY = 'autojoin=1&resolution=320x240&simulcast=0';
const KEY = 'e2e-key';
const SECRET = 'e2e-secret-for-the-meeting';
const BASIC = `Basic ${Buffer.from(`${KEY}:${SECRET}`).toString('base64')}`;

const roomState = (page) => page.evaluate(() => ({
  state: window.room.state,
  error: window.room.error,
  me: window.room.me,
  removedReason: window.room.removedReason,
  others: Object.entries(window.room.participants).map(([sid, p]) => ({
    sid, identity: p.identity, name: p.name, micMuted: !!p.micMuted, quality: p.quality,
  })),
  messages: window.room.messages,
}));

const mediaStats = (page) => page.evaluate(() => window.room.stats());

/** Every other participant's video decodes (and keeps decoding) and audio arrives. */
async function assertSeesAndHears(page, label, expectOthers) {
  let last = null;
  const first = await waitFor(page, async (p) => {
    const s = last = await mediaStats(p);
    const ok = Object.values(s).filter((e) => e.framesDecoded > 0 && e.frameWidth > 0 && e.audioBytes > 0);
    return ok.length >= expectOthers ? s : false;
  }, 40000, { what: `${label} decodes ${expectOthers} others`, intervalMs: 250 }).catch((e) => {
    throw new Error(`${e.message}; what it receives: ${JSON.stringify(last)}`);
  });
  await sleep(1500);
  const later = await mediaStats(page);
  for (const [sid, e] of Object.entries(first)) {
    assert.ok(later[sid].framesDecoded > e.framesDecoded, `${label}: video of ${e.identity} keeps decoding`);
    assert.ok(later[sid].audioSamples > 0, `${label}: audio of ${e.identity} is played out`);
  }
  return later;
}

test('three Chromium and one Firefox meet: media, chat, mute, admin removal, leave', {
  skip: firefoxMissing() ?? false,
}, async (t) => {
  const peer = createPeerHost(t, 'ff');
  const server = await startServer(t, 'conference', {
    host: peer.hostIp,
    extraArgs: ['--api-key', KEY, '--api-secret', SECRET, '--log', 'info,sfu::forward=debug'],
  });
  const browser = await launchBrowser(t, { origin: server.base });
  const names = ['Ann', 'Ben', 'Cat', 'Dan'];
  const pages = [];
  const joinStart = Date.now();
  const url = (n) => `${server.base}/room/${ROOM}?${QUERY}&name=${n}&token=${
    signToken(KEY, SECRET, ROOM, `${n.toLowerCase()}-id`, { publish: true, subscribe: true })}`;
  for (const n of names.slice(0, 3)) pages.push(await openPage(browser, url(n), n));
  pages.push(await openFirefoxPage(t, url('Dan'), 'Dan (Firefox)', { netns: peer.ns, host: peer.peerIp }));
  for (const [i, p] of pages.entries()) {
    await waitFor(p, async (pg) => {
      const s = await roomState(pg);
      if (s.state === 'error') throw new Error(`${names[i]}: ${s.error}`);
      return s.state === 'joined' && s.others.length === 3;
    }, 30000, { what: `${names[i]} joined and sees three others` });
  }
  for (const [i, p] of pages.entries()) await assertSeesAndHears(p, names[i], 3);
  reportMetric('four_way_all_media_flowing_ms', Date.now() - joinStart, 'ms');
  const states = await Promise.all(pages.map(roomState));
  const identity = states.map((s) => s.me.identity);
  const sid = states.map((s) => s.me.sid);
  // Names chosen on the join form reach the others.
  await waitFor(pages[1], async (p) => (await roomState(p)).others.some((o) => o.name === 'Ann'), 10000, { what: 'Ben sees the name Ann' });

  // Chat from Ann reaches the three others, stamped with Ann's identity.
  await waitFor(pages[0], (p) => p.evaluate(() => window.room.sendChat('hello from Ann')), 10000, { what: 'chat sent' });
  for (const i of [1, 2, 3]) {
    await waitFor(pages[i], async (p) => (await roomState(p)).messages
      .some((m) => m.topic === 'chat' && m.payload === 'hello from Ann' && m.from === identity[0]),
    10000, { what: `${names[i]} receives Ann's chat from ${identity[0]}` });
  }
  const annMessages = (await roomState(pages[0])).messages.filter((m) => m.payload === 'hello from Ann');
  assert.equal(annMessages.length, 0, 'the sender does not receive its own message');

  // Ben mutes his microphone: the others see it.
  await pages[1].evaluate(() => window.room.setMic(false));
  for (const i of [0, 2, 3]) {
    await waitFor(pages[i], async (p) => (await roomState(p)).others.find((o) => o.sid === sid[1])?.micMuted,
      10000, { what: `${names[i]} sees Ben muted` });
  }

  // The admin API lists the four and removes Dan, whose page says so.
  const list = await fetch(`${server.base}/api/rooms/${ROOM}/participants`, { headers: { authorization: BASIC } });
  assert.equal(list.status, 200);
  const listed = (await list.json()).participants.map((p) => p.identity).sort();
  assert.deepEqual(listed, [...identity].sort());
  const del = await fetch(`${server.base}/api/rooms/${ROOM}/participants/${encodeURIComponent(identity[3])}`,
    { method: 'DELETE', headers: { authorization: BASIC } });
  assert.equal(del.status, 204);
  const dan = await waitFor(pages[3], async (p) => {
    const s = await roomState(p);
    return s.state === 'removed' ? s : false;
  }, 10000, { what: 'Dan sees that he was removed' });
  assert.match(dan.removedReason, /administrator/);
  assert.match(await pages[3].textContent('#banner'), /removed/);

  // Cat leaves: Ann and Ben drop her tile within 2 s.
  const leftAt = Date.now();
  await pages[2].evaluate(() => window.room.leave());
  for (const i of [0, 1]) {
    await waitFor(pages[i], async (p) => {
      const s = await roomState(p);
      const tile = await p.$(`#tile-${sid[2]}`);
      return !s.others.some((o) => o.sid === sid[2]) && !tile;
    }, 2000, { what: `${names[i]} drops Cat's tile within 2 s`, intervalMs: 50 });
  }
  reportMetric('leave_to_tile_gone_ms', Date.now() - leftAt, 'ms');
  // Those who stay still see and hear each other.
  const ann = await roomState(pages[0]);
  assert.deepEqual(ann.others.map((o) => o.sid), [sid[1]]);
  await assertSeesAndHears(pages[0], 'Ann (after)', 1);
});
