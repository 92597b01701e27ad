// Shared helpers of the end-to-end tests: start the real server binary,
// launch Debian's Chromium through playwright-core, read getStats() and
// /metrics, and wait for conditions with a bound on every loop.

import { execFileSync, spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer as startServerProcess } from './server.mjs';
import { launchBrowser as launchChromium } from './browser.mjs';

const here = dirname(fileURLToPath(import.meta.url));
export const artifacts = join(here, '..', 'artifacts');
mkdirSync(artifacts, { recursive: true });

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` until it returns a truthy value; throw with `what` after `timeoutMs`. */
export async function waitFor(what, fn, timeoutMs = 15000, intervalMs = 100) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

/** Start the server binary (command line: serveArgs in server.mjs); it is
 * killed when the test ends. `host` other than 127.0.0.1 needs real API keys
 * (pass --api-key/--api-secret); a `--media-addr X` in extraArgs is honoured. */
export async function startServer(t, name, extraArgs = [], host = '127.0.0.1') {
  const rest = [...extraArgs];
  let mediaAddr = host;
  const i = rest.indexOf('--media-addr');
  if (i >= 0) [, mediaAddr] = rest.splice(i, 2);
  return startServerProcess(t, name, { host, mediaAddr, extraArgs: rest });
}

/** Launch Chromium (flags: BROWSER_ARGS in browser.mjs), in network namespace
 * `netns` if given; closed when the test ends. `origin`: a non-loopback
 * server origin that must count as secure (getUserMedia needs it). */
export async function launchBrowser(t, netns = null, origin = null) {
  return launchChromium(t, { netns, origin });
}

/** A page in its own context, with console errors kept for diagnosis. */
export async function openPage(browser, url, label) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.log(`[${label}] console: ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`[${label}] page error: ${e.message}`));
  await page.goto(url);
  return page;
}

/** getStats() of the page's window.sfu.pc, reduced to what tests check. */
export async function rtpStats(page) {
  return page.evaluate(async () => {
    const pc = window.sfu && window.sfu.pc;
    if (!pc) return null;
    const out = { state: pc.connectionState, inbound: {}, outbound: {} };
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp') {
        // A receiver can have more than one inbound stream of a kind (an
        // old SSRC's stats linger): report the one that received last.
        const seen = out.inbound[r.kind];
        const last = r.lastPacketReceivedTimestamp || 0;
        if (seen && seen.lastPacketReceivedTimestamp > last) return;
        out.inbound[r.kind] = {
          lastPacketReceivedTimestamp: last,
          framesDecoded: r.framesDecoded || 0, frameWidth: r.frameWidth || 0, frameHeight: r.frameHeight || 0,
          packetsReceived: r.packetsReceived || 0, packetsLost: r.packetsLost || 0,
          bytesReceived: r.bytesReceived || 0, framesPerSecond: r.framesPerSecond || 0,
          totalSamplesReceived: r.totalSamplesReceived || 0, freezeCount: r.freezeCount || 0,
          nackCount: r.nackCount || 0, pliCount: r.pliCount || 0, framesDropped: r.framesDropped || 0,
          totalFreezesDuration: r.totalFreezesDuration || 0,
        };
      } else if (r.type === 'outbound-rtp') {
        if (r.kind === 'video') {
          out.layers = out.layers || {};
          out.layers[r.rid || '-'] = { frameWidth: r.frameWidth || 0, bytesSent: r.bytesSent || 0 };
        }
        const prev = out.outbound[r.kind];
        if (!prev || (r.frameWidth || 0) >= (prev.frameWidth || 0)) {
          out.outbound[r.kind] = { frameWidth: r.frameWidth || 0, frameHeight: r.frameHeight || 0, packetsSent: r.packetsSent || 0 };
        }
      }
    });
    return out;
  });
}

/** /metrics as { name: sum over labels }. */
export async function metrics(base) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const name = line.split(/[{ ]/)[0];
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    out[name] = (out[name] || 0) + value;
  }
  return out;
}

/** Gauges that must all be zero once every session has ended. */
export const LEAK_GAUGES = ['sfu_rooms', 'sfu_participants', 'sfu_rtc_instances', 'sfu_registry_entries', 'sfu_tracks'];

export async function waitForNoSessions(base, timeoutMs = 15000) {
  return waitFor('all sessions, rooms and registry entries gone', async () => {
    const m = await metrics(base);
    return LEAK_GAUGES.every((g) => m[g] === 0) ? m : false;
  }, timeoutMs, 250);
}

export async function mintToken(base, room, identity, { publish = false, subscribe = false } = {}) {
  const q = new URLSearchParams({ room, identity, publish: publish ? '1' : '0', subscribe: subscribe ? '1' : '0' });
  const resp = await fetch(`${base}/dev/token?${q}`);
  if (!resp.ok) throw new Error(`dev token: ${resp.status}`);
  return (await resp.json()).token;
}

/** Report a measured figure (collected by the closing note). */
export function reportMetric(name, value, unit) {
  console.log(`METRIC ${name}=${value}${unit ? ' ' + unit : ''}`);
}

/** Run a command (argv) and return its output; throws on failure. */
export function sh(...argv) {
  return execFileSync(argv[0], argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * A second host: a network namespace joined to this one by a veth pair.
 * This side gets 10.213.0.1/30, the peer 10.213.0.2/30. `hostIf` is this
 * side's interface: shape it with tc (egress = the peer's downlink).
 */
export function createPeerHost(t, suffix) {
  const base = process.env.SFU_E2E_NS || `sfue2e-${process.pid}`;
  const ns = `${base}-${suffix}`;
  const tag = `${process.pid % 10000}${suffix}`.slice(0, 8);
  const hostIf = `va${tag}`;
  const peerIf = `vb${tag}`;
  sh('ip', 'netns', 'add', ns);
  t.after(() => { try { sh('ip', 'netns', 'del', ns); } catch { /* already gone */ } });
  sh('ip', 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', peerIf);
  sh('ip', 'link', 'set', peerIf, 'netns', ns);
  sh('ip', 'addr', 'add', '10.213.0.1/30', 'dev', hostIf);
  sh('ip', 'link', 'set', hostIf, 'up');
  sh('ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', '10.213.0.2/30', 'dev', peerIf);
  sh('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', peerIf, 'up');
  sh('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
  return {
    ns, hostIf, hostIp: '10.213.0.1', peerIp: '10.213.0.2',
    /** Cap the peer's downlink (tbf), or lift the cap with null. */
    capDownlink(kbit) {
      try { sh('tc', 'qdisc', 'del', 'dev', hostIf, 'root'); } catch { /* no qdisc yet */ }
      if (kbit) sh('tc', 'qdisc', 'add', 'dev', hostIf, 'root', 'tbf', 'rate', `${kbit}kbit`, 'burst', '5kb', 'latency', '300ms');
    },
    /** Random loss of packets arriving at the peer (iptables statistic), or none. */
    loss(probability) {
      try { sh('ip', 'netns', 'exec', ns, 'iptables', '-F', 'INPUT'); } catch { /* empty */ }
      if (probability) {
        sh('ip', 'netns', 'exec', ns, 'iptables', '-A', 'INPUT', '-p', 'udp', '-m', 'statistic',
          '--mode', 'random', '--probability', String(probability), '-j', 'DROP');
      }
    },
  };
}

/** An HS256 LiveKit-style access token, as `sfu token` mints it. */
export function signToken(key, secret, room, identity, { publish = false, subscribe = false } = {}) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({
    iss: key, sub: identity, nbf: now, exp: now + 3600,
    video: { room, roomJoin: true, canPublish: publish, canSubscribe: subscribe },
  })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/**
 * A client behind a NAT: namespace `<ns>-<suffix>c` (192.168.215.2/24) routes
 * through a router namespace `<ns>-<suffix>r`, which masquerades it onto
 * 10.215.0.2/30 towards this namespace (10.215.0.1, where the server
 * listens). The server sees the router's address, never the client's.
 *
 * With `oneToOne`, the router also forwards everything arriving at its
 * public address to the private host, as a cloud VM's 1:1 NAT does: the
 * host is reachable at 10.215.0.2 but only knows 192.168.215.2. With
 * `portMap` ([{ proto, from, to }]) it forwards only those ports, mapped
 * (from the public port `from` to the host's `to`), as a Kubernetes
 * NodePort does.
 */
export function createNattedHost(t, suffix, { oneToOne = false, portMap = [] } = {}) {
  const base = process.env.SFU_E2E_NS || `sfue2e-${process.pid}`;
  const router = `${base}-${suffix}r`;
  const client = `${base}-${suffix}c`;
  const tag = `${process.pid % 10000}${suffix}`.slice(0, 7);
  const [hostIf, wanIf, lanIf, clientIf] = [`na${tag}`, `nb${tag}`, `nc${tag}`, `nd${tag}`];
  for (const ns of [router, client]) {
    sh('ip', 'netns', 'add', ns);
    t.after(() => { try { sh('ip', 'netns', 'del', ns); } catch { /* already gone */ } });
    sh('ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
  }
  // This namespace <-> router (the "internet" side).
  sh('ip', 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', wanIf);
  sh('ip', 'link', 'set', wanIf, 'netns', router);
  sh('ip', 'addr', 'add', '10.215.0.1/30', 'dev', hostIf);
  sh('ip', 'link', 'set', hostIf, 'up');
  sh('ip', 'netns', 'exec', router, 'ip', 'addr', 'add', '10.215.0.2/30', 'dev', wanIf);
  sh('ip', 'netns', 'exec', router, 'ip', 'link', 'set', wanIf, 'up');
  // Router <-> client (the private LAN).
  sh('ip', 'link', 'add', lanIf, 'type', 'veth', 'peer', 'name', clientIf);
  sh('ip', 'link', 'set', lanIf, 'netns', router);
  sh('ip', 'link', 'set', clientIf, 'netns', client);
  sh('ip', 'netns', 'exec', router, 'ip', 'addr', 'add', '192.168.215.1/24', 'dev', lanIf);
  sh('ip', 'netns', 'exec', router, 'ip', 'link', 'set', lanIf, 'up');
  sh('ip', 'netns', 'exec', client, 'ip', 'addr', 'add', '192.168.215.2/24', 'dev', clientIf);
  sh('ip', 'netns', 'exec', client, 'ip', 'link', 'set', clientIf, 'up');
  sh('ip', 'netns', 'exec', client, 'ip', 'route', 'add', 'default', 'via', '192.168.215.1');
  sh('ip', 'netns', 'exec', router, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1');
  sh('ip', 'netns', 'exec', router, 'iptables', '-t', 'nat', '-A', 'POSTROUTING', '-o', wanIf, '-j', 'MASQUERADE');
  if (oneToOne) {
    sh('ip', 'netns', 'exec', router, 'iptables', '-t', 'nat', '-A', 'PREROUTING', '-i', wanIf,
      '-j', 'DNAT', '--to-destination', '192.168.215.2');
  }
  for (const { proto, from, to } of portMap) {
    sh('ip', 'netns', 'exec', router, 'iptables', '-t', 'nat', '-A', 'PREROUTING', '-i', wanIf,
      '-p', proto, '--dport', String(from), '-j', 'DNAT', '--to-destination', `192.168.215.2:${to}`);
  }
  return { router, client, hostIp: '10.215.0.1', publicIp: '10.215.0.2', privateIp: '192.168.215.2' };
}

/**
 * The conference page for `identity` in `room`, joining at once with a small
 * single-layer camera and a token signed with `key`/`secret`.
 */
export function meetingUrl(base, room, identity, key, secret) {
  const token = signToken(key, secret, room, identity, { publish: true, subscribe: true });
  return `${base}/room/${room}?autojoin=1&name=${identity}&resolution=320x240&simulcast=0&token=${token}`;
}

/** Video frames a conference page decoded, summed over everyone it receives. */
export const framesDecodedInMeeting = (page) => page.evaluate(async () => {
  const s = await window.room.stats();
  return Object.values(s).reduce((n, e) => n + e.framesDecoded, 0);
});

export function turnMissing() {
  try {
    execFileSync('turnserver', ['--version'], { stdio: 'ignore' });
    return false;
  } catch {
    return 'turnserver (coturn) not installed: scripts/install-test-deps.sh installs it';
  }
}

/**
 * Start Debian's coturn on `ip:port` (STUN, and TURN with the REST-API
 * shared `secret`); resolves when it listens. Killed when `t` ends.
 */
export async function startCoturn(t, ip, port, secret) {
  const args = [
    '-n', `--listening-ip=${ip}`, `--relay-ip=${ip}`, `--listening-port=${port}`,
    '--min-port=40000', '--max-port=40999',
    '--use-auth-secret', `--static-auth-secret=${secret}`, '--realm=sfu.test',
    '--no-tls', '--no-dtls', '--no-cli', '--fingerprint', `--allowed-peer-ip=${ip}`,
    '--log-file=stdout', '--simple-log', '--verbose',
  ];
  const proc = spawn('turnserver', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout.on('data', (d) => { log += d; });
  proc.stderr.on('data', (d) => { log += d; });
  t.after(() => proc.kill('SIGKILL'));
  const start = Date.now();
  while (!/UDP listener opened on/.test(log)) {
    if (proc.exitCode !== null) throw new Error(`coturn exited: ${log.slice(-500)}`);
    if (Date.now() - start > 10000) throw new Error(`coturn did not start: ${log.slice(-500)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { log: () => log };
}
