// 1:1 NAT (a cloud VM): the server runs on a host that only knows its
// private address (192.168.215.2, bound as 0.0.0.0) behind a router that
// forwards its public address (10.215.0.2) to it. It is not told its public
// address: it asks a STUN server (Debian's coturn, on the "internet" side) at
// start-up, and advertises what it learned. Two browsers on the internet side
// meet through it; their selected candidate pair ends at the public address.
// Without the discovery, the only candidate would be the private address,
// which nobody on the internet side can reach.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, freePort } from './lib/server.mjs';
import { launchBrowser, openPage, waitFor, reportMetric } from './lib/browser.mjs';
import {
  createNattedHost, meetingUrl, framesDecodedInMeeting, startCoturn, turnMissing,
} from './lib/harness.mjs';

const KEY = 'e2e-key';
const SECRET = 'e2e-secret-for-1to1';
const ROOM = 'cloudvm';
const HTTP_PORT = 8080; // the VM's namespace is new: the port is free

/** Two meeting pages in one browser; resolves when both decode each other. */
async function meetThrough(t, server, room) {
  const browser = await launchBrowser(t, { origin: server.base });
  const pages = {};
  for (const id of ['alice', 'bob']) {
    pages[id] = await openPage(browser, meetingUrl(server.base, room, id, KEY, SECRET), id);
  }
  for (const [id, page] of Object.entries(pages)) {
    await waitFor(page, (pg) => pg.evaluate(() => window.room.state === 'joined'
      && Object.keys(window.room.participants).length === 1), 20000, { what: `${id} joined with the other` });
    await waitFor(page, async (pg) => (await framesDecodedInMeeting(pg)) > 10, 30000,
      { what: `${id} decodes the other's video` });
  }
  return pages;
}

/** The server's address in the page's selected candidate pair, and its type. */
const selectedRemote = (page) => page.evaluate(async () => {
  const report = await window.room.pc.getStats();
  let out = null;
  report.forEach((r) => {
    if (r.type !== 'transport' || !r.selectedCandidatePairId) return;
    const remote = report.get(report.get(r.selectedCandidatePairId).remoteCandidateId);
    out = { address: remote.address, port: remote.port, type: remote.candidateType, protocol: remote.protocol };
  });
  return out;
});

test('a server behind a 1:1 NAT discovers its public address through STUN and is reachable there', {
  skip: turnMissing(),
}, async (t) => {
  const vm = createNattedHost(t, 'vm', { oneToOne: true });
  const stunPort = await freePort(vm.hostIp);
  await startCoturn(t, vm.hostIp, stunPort, 'unused-turn-secret');
  const server = await startServer(t, 'one_to_one_nat', {
    netns: vm.client,
    host: '0.0.0.0',
    port: HTTP_PORT,
    reachAt: vm.publicIp,
    extraArgs: ['--api-key', KEY, '--api-secret', SECRET, '--stun-server', `${vm.hostIp}:${stunPort}`,
      '--ice-tcp', 'false', '--log', process.env.NAT_LOG || 'info'],
  });
  const discovered = await server.waitForLog(/public IP discovered through STUN ip=\S+/);
  assert.equal(discovered, `public IP discovered through STUN ip=${vm.publicIp}`,
    `the server learned the router's public address:\n${server.logTail()}`);

  const start = Date.now();
  const pages = await meetThrough(t, server, ROOM);
  reportMetric('one_to_one_nat_join_to_media_both_ways_ms', Date.now() - start, 'ms');
  for (const [id, page] of Object.entries(pages)) {
    const remote = await selectedRemote(page);
    assert.deepEqual([remote.address, remote.type, remote.protocol], [vm.publicIp, 'host', 'udp'],
      `${id} reaches the server at its public address: ${JSON.stringify(remote)}`);
  }
});

// A port mapping in the way, as a Kubernetes NodePort Service is: the router
// forwards public UDP port 30001 to the server's 7882 (and HTTP). The server
// is told the public address and port (--public-ip, --public-media-port) and
// advertises them.
test('a server behind a port mapping advertises the public port it is told', async (t) => {
  const [mediaPort, publicPort] = [7882, 30001];
  const vm = createNattedHost(t, 'np', {
    portMap: [{ proto: 'udp', from: publicPort, to: mediaPort }, { proto: 'tcp', from: HTTP_PORT, to: HTTP_PORT }],
  });
  const server = await startServer(t, 'port_mapped', {
    netns: vm.client,
    host: '0.0.0.0',
    port: HTTP_PORT,
    reachAt: vm.publicIp,
    extraArgs: ['--api-key', KEY, '--api-secret', SECRET, '--public-ip', vm.publicIp, '--workers', '1',
      '--media-port', String(mediaPort), '--public-media-port', String(publicPort), '--ice-tcp', 'false'],
  });
  const pages = await meetThrough(t, server, 'nodeport');
  for (const [id, page] of Object.entries(pages)) {
    assert.deepEqual(await selectedRemote(page), { address: vm.publicIp, port: publicPort, type: 'host', protocol: 'udp' },
      `${id} reaches the server at the mapped port`);
  }
});
