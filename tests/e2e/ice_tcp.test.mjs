// ICE over TCP: a meeting participant whose UDP is blocked entirely
// (iptables DROP in its own namespace, both directions) still joins: its
// browser connects to the server's passive TCP candidate (RFC 6544, RFC 4571
// framing). Both participants see each other; the blocked one's selected
// pair is TCP, the other's UDP.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './lib/server.mjs';
import { launchBrowser, openPage, waitFor, reportMetric } from './lib/browser.mjs';
import { createPeerHost, meetingUrl, framesDecodedInMeeting, sh } from './lib/harness.mjs';

const KEY = 'e2e-key';
const SECRET = 'e2e-secret-for-ice-tcp';
const ROOM = 'tcp';


test('a participant whose UDP is blocked joins over ICE-TCP', async (t) => {
  const peer = createPeerHost(t, 'tcp');
  const server = await startServer(t, 'ice-tcp', {
    host: peer.hostIp, extraArgs: ['--api-key', KEY, '--api-secret', SECRET],
  });
  for (const chain of ['INPUT', 'OUTPUT']) {
    sh('ip', 'netns', 'exec', peer.ns, 'iptables', '-A', chain, '-p', 'udp', '-j', 'DROP');
  }
  const url = (id) => meetingUrl(server.base, ROOM, id, KEY, SECRET);
  const here = await launchBrowser(t, { origin: server.base });
  const there = await launchBrowser(t, { netns: peer.ns, origin: server.base });
  const start = Date.now();
  const open = await openPage(here, url('open'), 'open');
  const blocked = await openPage(there, url('blocked'), 'blocked');
  for (const [p, l] of [[open, 'open'], [blocked, 'blocked']]) {
    await waitFor(p, (pg) => pg.evaluate(() => window.room.state === 'joined'
      && Object.keys(window.room.participants).length === 1), 20000, { what: `${l} joined with the other` });
    await waitFor(p, async (pg) => (await framesDecodedInMeeting(pg)) > 10, 30000, { what: `${l} decodes the other's video` });
  }
  reportMetric('ice_tcp_join_to_media_both_ways_ms', Date.now() - start, 'ms');
  assert.equal(await blocked.evaluate(() => window.room.candidateProtocol()), 'tcp');
  assert.equal(await open.evaluate(() => window.room.candidateProtocol()), 'udp');
  // Media keeps flowing over TCP.
  const before = await framesDecodedInMeeting(blocked);
  await new Promise((r) => setTimeout(r, 2000));
  assert.ok(await framesDecodedInMeeting(blocked) > before + 20, 'video keeps decoding over TCP');
});
