// Three servers sharing one Redis (Debian's redis-server on a loopback port
// of its own), with real Chromium:
// - a browser publisher sends three simulcast layers to one node; a browser
//   player on another node is served there, from the node-to-node relay,
//   and decodes the top layer;
// - a meeting over two nodes, hosted by a third: each participant's node
//   holds a satellite of the room bridged to it; both see and decode each
//   other (one publishes scalable AV1, which crosses the bridges with its
//   dependency descriptor); the hosting node is killed (SIGKILL), the room moves to one of
//   the participants' nodes, and both see each other again, in the same
//   session.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { startServer, freePort } from './lib/server.mjs';
import {
  launchBrowser, openPage, rtpStats, waitFor, reportMetric, sleep, signToken, meetingUrl,
  framesDecodedInMeeting,
} from './lib/harness.mjs';

const KEY = 'e2e';
const SECRET = 'e2e-cluster-secret';

async function startRedis(t) {
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' });
  t.after(() => proc.kill('SIGKILL'));
  const reachable = () => new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => { s.end(); resolve(true); });
    s.on('error', () => resolve(false));
  });
  await waitFor('redis-server listening', reachable, 10000, 50);
  return `redis://127.0.0.1:${port}`;
}

/** The node hosting `room`, from the cluster's room listing (null: none yet). */
async function hostOf(base, room) {
  const auth = `Basic ${Buffer.from(`${KEY}:${SECRET}`).toString('base64')}`;
  const r = await fetch(`${base}/api/rooms`, { headers: { authorization: auth } });
  if (r.status !== 200) return null;
  const found = (await r.json()).rooms.find((x) => x.name === room);
  return found ? found.node : null;
}

test('cluster: a relayed browser player, and a meeting over nodes that outlives its host', async (t) => {
  const redisUrl = await startRedis(t);
  const nodes = {};
  for (const id of ['a', 'b', 'c']) {
    nodes[id] = await startServer(t, `cluster-${id}`, {
      sessionTimeoutSecs: 10,
      extraArgs: ['--api-key', KEY, '--api-secret', SECRET, '--redis-url', redisUrl, '--node-id', id,
        '--workers', '1', '--http-rate-limit', '0'],
    });
  }
  await sleep(500); // first heartbeats: every node registered
  const browser = await launchBrowser(t, null, nodes.a.base);

  // --- A browser broadcast relayed to a player on another node ---
  const show = 'show';
  const tok = (room, id, opts) => signToken(KEY, SECRET, room, id, opts);
  await openPage(browser,
    `${nodes.a.base}/?room=${show}&autostart=1&simulcast=1&resolution=1280x720&token=${tok(show, 'cam', { publish: true })}`,
    'publisher');
  let host = null;
  await waitFor('the broadcast is placed', async () => (host = await hostOf(nodes.a.base, show)) !== null, 20000, 200);
  const edge = Object.keys(nodes).find((id) => id !== host);
  const player = await openPage(browser,
    `${nodes[edge].base}/play?room=${show}&autostart=1&token=${tok(show, 'viewer', { subscribe: true })}`, 'player');
  const started = Date.now();
  await waitFor(`player on node ${edge} decodes the top layer`, async () => {
    const v = (await rtpStats(player))?.inbound.video;
    return v && v.frameWidth === 1280 && v.framesDecoded > 30;
  }, 60000, 250);
  reportMetric('relayed_player_top_layer_ms', Date.now() - started, 'ms');
  const edgeMetrics = await (await fetch(`${nodes[edge].base}/metrics`)).text();
  assert.match(edgeMetrics, /sfu_participants\{[^}]*kind="whep"[^}]*\} 1/, 'the player is a session of the edge node');

  // --- A meeting over two nodes that outlives the node hosting it ---
  // Ann's page comes from node `front`, Bob's from the broadcast's node;
  // the meeting must be hosted by the third node. Each page's node holds
  // a satellite of the room, bridged to it.
  let room = null;
  let ann = null;
  const front = edge;
  for (let attempt = 0; attempt < 6 && room === null; attempt += 1) {
    const name = `meet-${attempt}`;
    const first = await openPage(browser, meetingUrl(nodes[front].base, name, 'ann', KEY, SECRET), 'ann');
    let placed = null;
    await waitFor('the meeting is placed', async () => (placed = await hostOf(nodes[front].base, name)) !== null, 20000, 200);
    if (placed !== front && placed !== host) {
      room = name;
      ann = first;
    } else {
      await first.close();
    }
  }
  assert.ok(room, 'a meeting placed away from both pages\' nodes');
  const meetingHost = await hostOf(nodes[front].base, room);
  // Bob publishes scalable AV1 (L3T3_KEY): it crosses two bridges (his
  // node's satellite to the host, the host to ann's node) with its
  // dependency descriptor, without which Chromium decodes no frame of it.
  const bob = await openPage(browser, `${meetingUrl(nodes[host].base, room, 'bob', KEY, SECRET)}&codec=av1`, 'bob');
  const pages = [ann, bob];
  for (const p of pages) {
    await waitFor('joined with the other', () => p.evaluate(() => window.room.state === 'joined'
      && Object.keys(window.room.participants).length === 1), 20000, 200);
    await waitFor('decodes the other', async () => (await framesDecodedInMeeting(p)) > 10, 20000, 200);
  }
  const bobAtAnn = Object.values(await ann.evaluate(() => window.room.stats()))[0];
  assert.equal(bobAtAnn?.videoCodec, 'video/AV1', `ann decodes bob's AV1 over the bridges (${JSON.stringify(bobAtAnn)})`);
  for (const id of [front, host]) {
    const m = await (await fetch(`${nodes[id].base}/metrics`)).text();
    assert.match(m, /sfu_cluster_bridges(\{[^}]*\})? 1/, `node ${id} bridges its participant to the meeting`);
  }
  const killedAt = Date.now();
  const sids = await Promise.all(pages.map((p) => p.evaluate(() => window.room.me.sid)));
  await nodes[meetingHost].stop(); // SIGKILL: no deregistration, its heartbeat just stops
  // Nobody's own node died: both stay in the meeting (same participant),
  // and see the other again once the room is placed on one of their
  // nodes and the other bridges to it.
  const others = (p) => p.evaluate(() => Object.keys(window.room.participants).length);
  for (const [i, p] of pages.entries()) {
    await waitFor(`page ${i} sees the other leave with the host`, async () => (await others(p)) === 0, 20000, 100);
  }
  for (const [i, p] of pages.entries()) {
    await waitFor(`page ${i} sees the other again`, () => p.evaluate((old) => window.room.state === 'joined'
      && window.room.me.sid === old && Object.keys(window.room.participants).length === 1, sids[i]), 40000, 250);
  }
  for (const [i, p] of pages.entries()) {
    await waitFor(`page ${i} decodes the other again`, async () => {
      const before = await framesDecodedInMeeting(p);
      await sleep(1000);
      return (await framesDecodedInMeeting(p)) > before + 10;
    }, 20000, 0);
  }
  reportMetric('meeting_resumed_after_host_kill_ms', Date.now() - killedAt, 'ms');
  const newHost = await hostOf(nodes[front].base, room);
  assert.ok(newHost === front || newHost === host, `the meeting moved to one of its participants' nodes (now ${newHost})`);
});
