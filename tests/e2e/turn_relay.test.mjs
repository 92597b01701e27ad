// TURN: a meeting participant whose browser may use only a relay
// (iceTransportPolicy 'relay') and whose UDP to the server is blocked except
// to the TURN port joins through a real coturn (Debian's, started here with
// `use-auth-secret`), using the time-limited credentials the server handed
// out in `joined`. Both participants see each other; the relayed one's
// selected candidate is a relay candidate, and coturn logged its allocation
// under the participant's identity.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, freePort } from './lib/server.mjs';
import { launchBrowser, openPage, waitFor, reportMetric } from './lib/browser.mjs';
import { createPeerHost, meetingUrl, framesDecodedInMeeting, sh, startCoturn, turnMissing } from './lib/harness.mjs';

const KEY = 'e2e-key';
const SECRET = 'e2e-secret-for-turn';
const TURN_SECRET = 'shared-with-coturn';
const ROOM = 'relayed';

test('a participant limited to a relay joins through coturn with the credentials the server handed out', {
  skip: turnMissing(),
}, async (t) => {
  const peer = createPeerHost(t, 'tr');
  const turnPort = await freePort(peer.hostIp);
  const coturn = await startCoturn(t, peer.hostIp, turnPort, TURN_SECRET);
  const server = await startServer(t, 'turn', {
    host: peer.hostIp,
    extraArgs: ['--api-key', KEY, '--api-secret', SECRET,
      '--turn-url', `turn:${peer.hostIp}:${turnPort}?transport=udp`, '--turn-secret', TURN_SECRET],
  });
  // In the relayed participant's namespace, UDP reaches only the TURN port.
  sh('ip', 'netns', 'exec', peer.ns, 'iptables', '-A', 'OUTPUT', '-p', 'udp', '-d', peer.hostIp,
    '!', '--dport', String(turnPort), '-j', 'DROP');

  const url = (id) => meetingUrl(server.base, ROOM, id, KEY, SECRET);
  const here = await launchBrowser(t, { origin: server.base });
  const there = await launchBrowser(t, { netns: peer.ns, origin: server.base });
  const start = Date.now();
  const direct = await openPage(here, url('direct'), 'direct');
  const relayed = await openPage(there, `${url('relayed')}&relay=1`, 'relayed');
  for (const [p, l] of [[direct, 'direct'], [relayed, 'relayed']]) {
    await waitFor(p, (pg) => pg.evaluate(() => window.room.state === 'joined'
      && Object.keys(window.room.participants).length === 1), 20000, { what: `${l} joined with the other` });
    await waitFor(p, async (pg) => (await framesDecodedInMeeting(pg)) > 10, 30000, { what: `${l} decodes the other's video` });
  }
  reportMetric('relay_join_to_media_both_ways_ms', Date.now() - start, 'ms');

  const servers = await relayed.evaluate(() => window.room.iceServers);
  assert.equal(servers.length, 1, JSON.stringify(servers));
  assert.match(servers[0].username, /^\d+:relayed$/, 'TURN REST username: expiry:identity');
  assert.equal(await relayed.evaluate(() => window.room.candidateType()), 'relay');
  assert.equal(await direct.evaluate(() => window.room.candidateType()), 'host');
  const log = coturn.log();
  assert.match(log, /user <\d+:relayed>.*ALLOCATE processed, success/, 'coturn allocated for the participant');
  // The direct participant got credentials too (and may allocate), but its
  // selected pair is the host candidate asserted above.
});
