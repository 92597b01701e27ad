// Reconnection in a meeting: one participant's browser sits in its own
// network namespace; its UDP is blocked (iptables DROP both ways) for a few
// seconds and then restored. The other participant must never see it leave,
// and media must flow again in both directions.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './lib/server.mjs';
import { launchBrowser, openPage, waitFor, reportMetric, sleep } from './lib/browser.mjs';
import { createPeerHost, meetingUrl, framesDecodedInMeeting, sh } from './lib/harness.mjs';

const KEY = 'e2e-key';
const SECRET = 'e2e-secret-for-reconnect';
const ROOM = 'blip';
const BLOCK_MS = 4000;


test('a participant whose UDP is blocked for a few seconds comes back without leaving', async (t) => {
  const peer = createPeerHost(t, 'rc');
  const server = await startServer(t, 'reconnect', {
    host: peer.hostIp, sessionTimeoutSecs: 15, extraArgs: ['--api-key', KEY, '--api-secret', SECRET],
  });
  const url = (id) => meetingUrl(server.base, ROOM, id, KEY, SECRET);
  const here = await launchBrowser(t, { origin: server.base });
  const there = await launchBrowser(t, { netns: peer.ns, origin: server.base });
  const stay = await openPage(here, url('stay'), 'stay');
  const roam = await openPage(there, url('roam'), 'roam');
  for (const [p, l] of [[stay, 'stay'], [roam, 'roam']]) {
    await waitFor(p, (pg) => pg.evaluate(() => window.room.state === 'joined'
      && Object.keys(window.room.participants).length === 1), 20000, { what: `${l} joined with the other` });
    await waitFor(p, async (pg) => (await framesDecodedInMeeting(pg)) > 10, 20000, { what: `${l} decodes the other` });
  }
  const roamSid = await roam.evaluate(() => window.room.me.sid);

  // Watch the staying participant's view of the room the whole time.
  let sawLeave = false;
  let watching = true;
  const watcher = (async () => {
    while (watching) {
      const present = await stay.evaluate((sid) => sid in window.room.participants, roamSid).catch(() => true);
      if (!present) sawLeave = true;
      await sleep(100);
    }
  })();

  const drop = (op) => {
    for (const chain of ['INPUT', 'OUTPUT']) {
      sh('ip', 'netns', 'exec', peer.ns, 'iptables', op, chain, '-p', 'udp', '-j', 'DROP');
    }
  };
  drop('-A');
  t.after(() => { try { drop('-D'); } catch { /* already restored */ } });
  await sleep(BLOCK_MS);
  const frozen = await framesDecodedInMeeting(stay);
  drop('-D');
  const restoredAt = Date.now();

  // Media flows again both ways.
  await waitFor(stay, async (p) => (await framesDecodedInMeeting(p)) > frozen + 30, 20000,
    { what: 'stay decodes roam again', intervalMs: 100 });
  reportMetric('udp_restored_to_media_ms', Date.now() - restoredAt, 'ms');
  const roamFrames = await framesDecodedInMeeting(roam);
  await waitFor(roam, async (p) => (await framesDecodedInMeeting(p)) > roamFrames + 30, 20000, { what: 'roam decodes stay again' });
  await sleep(1000);
  watching = false;
  await watcher;
  assert.equal(sawLeave, false, 'the other participant never saw roam leave');
  const states = await Promise.all([stay, roam].map((p) => p.evaluate(() => window.room.state)));
  assert.deepEqual(states, ['joined', 'joined']);
});
