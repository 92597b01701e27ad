// NAT: a meeting participant behind a masquerading router (its own
// namespace on a private LAN, the router in another) joins a participant on
// the server's network. The server's candidate is its own address; the
// NATed browser's host candidate (192.168.215.2) is unreachable, so ICE
// succeeds only through the address the NAT mapped (peer-reflexive on both
// sides: the server's STUN responses tell the browser its mapped address).
// Both see each other.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './lib/server.mjs';
import { launchBrowser, openPage, waitFor, reportMetric } from './lib/browser.mjs';
import { createNattedHost, meetingUrl, framesDecodedInMeeting } from './lib/harness.mjs';

const KEY = 'e2e-key';
const SECRET = 'e2e-secret-for-nat';
const ROOM = 'natted';


/** The selected pair's local address and the remote one, as the browser sees them. */
const selectedPair = (page) => page.evaluate(async () => {
  const report = await window.room.pc.getStats();
  let out = null;
  report.forEach((r) => {
    if (r.type !== 'transport' || !r.selectedCandidatePairId) return;
    const pair = report.get(r.selectedCandidatePairId);
    const local = report.get(pair.localCandidateId);
    const remote = report.get(pair.remoteCandidateId);
    out = { local: local.address, localType: local.candidateType, remote: remote.address, protocol: local.protocol };
  });
  return out;
});

test('a participant behind a NAT publishes and plays', async (t) => {
  const nat = createNattedHost(t, 'nat');
  const server = await startServer(t, 'nat', {
    host: nat.hostIp,
    extraArgs: ['--api-key', KEY, '--api-secret', SECRET, '--log', process.env.NAT_LOG || 'info,sfu::forward=debug,sfu::worker=debug'],
  });
  const url = (id) => meetingUrl(server.base, ROOM, id, KEY, SECRET);
  const here = await launchBrowser(t, { origin: server.base });
  const behind = await launchBrowser(t, { netns: nat.client, origin: server.base });
  const start = Date.now();
  const open = await openPage(here, url('open'), 'open');
  const natted = await openPage(behind, url('natted'), 'natted');
  for (const [p, l] of [[open, 'open'], [natted, 'natted']]) {
    await waitFor(p, (pg) => pg.evaluate(() => window.room.state === 'joined'
      && Object.keys(window.room.participants).length === 1), 20000, { what: `${l} joined with the other` });
    await waitFor(p, async (pg) => (await framesDecodedInMeeting(pg)) > 10, 30000, { what: `${l} decodes the other's video` })
      .catch(async (e) => {
        const seen = await p.evaluate(async () => ({ stats: await window.room.stats(), participants: window.room.participants }));
        const senders = async (pg) => pg.evaluate(async () => {
          const out = [];
          for (const t of window.room.pc.getTransceivers()) {
            const enc = t.sender.track ? t.sender.getParameters().encodings.map((x) => ({ rid: x.rid, active: x.active })) : null;
            const st = [];
            (await t.sender.getStats()).forEach((r) => {
              if (r.type === 'outbound-rtp') st.push({ kind: r.kind, framesEncoded: r.framesEncoded, bytesSent: r.bytesSent, packetsSent: r.packetsSent });
            });
            out.push({ mid: t.mid, dir: t.direction, cur: t.currentDirection, track: t.sender.track?.kind ?? null, enc, st });
          }
          return out;
        });
        throw new Error(`${e.message}; it has ${JSON.stringify(seen)}; open sends ${JSON.stringify(await senders(open))}; natted sends ${JSON.stringify(await senders(natted))}`);
      });
  }
  reportMetric('nat_join_to_media_both_ways_ms', Date.now() - start, 'ms');
  const pair = await selectedPair(natted);
  // The browser only has 192.168.215.2; the server's STUN responses told it
  // the address the NAT mapped it to, so its selected local candidate is
  // that peer-reflexive one: the NAT was on the path.
  assert.deepEqual(pair, { local: nat.publicIp, localType: 'prflx', remote: nat.hostIp, protocol: 'udp' });
});
