// Start the real server binary (SFU_BIN) for one test, wait until it is
// healthy, keep its output in artifacts/<name>-server.log, kill it when the
// test ends (pass or fail). Helpers for /dev/token and /metrics.

import { spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const artifacts = join(here, '..', 'artifacts');
mkdirSync(artifacts, { recursive: true });

/**
 * THE command line of the server under test (the one place to change when
 * the CLI changes). `extra` is appended (e.g. ['--log', 'debug']).
 */
export function serveArgs({ httpAddr, mediaAddr = '127.0.0.1', sessionTimeoutSecs = 5, extra = [] }) {
  return [
    'serve',
    '--http-addr', httpAddr,
    '--media-addr', mediaAddr,
    '--session-timeout-secs', String(sessionTimeoutSecs),
    ...extra,
  ];
}

/** Environment of the server process (plain logs, no colour codes). */
export const SERVER_ENV = { NO_COLOR: '1', RUST_LOG_STYLE: 'never' };

export function serverBin() {
  const bin = process.env.SFU_BIN || resolve(here, '..', '..', '..', 'target', 'release', 'sfu');
  return bin;
}

export async function freePort(host = '127.0.0.1') {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, host, () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Children still alive when Node exits (e.g. a test runner timeout) die too.
const children = new Set();
process.on('exit', () => { for (const c of children) { try { c.kill('SIGKILL'); } catch { /* gone */ } } });

/**
 * Start the server; killed when test `t` ends (t.after) or via stop().
 * Options: host (HTTP + media address, default 127.0.0.1), mediaAddr,
 * sessionTimeoutSecs (default 5), extraArgs, env, healthTimeoutMs; netns
 * (run it in that network namespace, then also give `port`) and reachAt
 * (the address the test reaches it at, default host).
 * Returns { base, port, pid, proc, logPath, stop(), mintToken(), metrics(), logTail(),
 * waitForLog(pattern, timeoutMs) -> the first match, or null when it has not appeared in time }.
 */
export async function startServer(t, name, {
  host = '127.0.0.1', mediaAddr = host, sessionTimeoutSecs = 5, extraArgs = [], env = {}, healthTimeoutMs = 15000,
  netns = null, port: fixedPort = null, reachAt = host,
} = {}) {
  const port = fixedPort ?? await freePort(host);
  const bin = serverBin();
  const logPath = join(artifacts, `${name}-server.log`);
  const log = createWriteStream(logPath);
  const args = serveArgs({ httpAddr: `${host}:${port}`, mediaAddr, sessionTimeoutSecs, extra: extraArgs });
  log.write(`# ${bin} ${args.join(' ')}\n`);
  // `ip netns exec` execs the server, so the child's pid is the server's.
  const [cmd, argv] = netns ? ['ip', ['netns', 'exec', netns, bin, ...args]] : [bin, args];
  const proc = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...SERVER_ENV, ...env } });
  children.add(proc);
  let exited = null;
  proc.on('error', (e) => { exited = `spawn failed: ${e.message}`; });
  proc.on('exit', (code, signal) => { exited = `exited with ${signal || code}`; children.delete(proc); });
  proc.stdout.pipe(log, { end: false });
  proc.stderr.pipe(log, { end: false });

  const stop = async () => {
    if (exited === null) {
      proc.kill('SIGKILL');
      await Promise.race([new Promise((r) => proc.once('exit', r)), sleep(3000)]);
    }
    children.delete(proc);
    log.end();
  };
  if (t) t.after(stop);

  const base = `http://${reachAt}:${port}`;
  const logTail = (n = 30) => {
    try { return readFileSync(logPath, 'utf8').split('\n').slice(-n).join('\n'); } catch { return ''; }
  };
  const end = Date.now() + healthTimeoutMs;
  for (;;) {
    if (exited !== null) { await stop(); throw new Error(`server ${exited} before /healthz answered:\n${logTail()}`); }
    try {
      const r = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(1000) });
      if (r.status === 200) break;
    } catch { /* not listening yet */ }
    if (Date.now() >= end) { await stop(); throw new Error(`server /healthz not 200 within ${healthTimeoutMs} ms:\n${logTail()}`); }
    await sleep(100);
  }
  // The log reaches its file through a pipe and Node's write stream, so a
  // line the server printed before answering /healthz may not be on disk yet.
  const waitForLog = async (pattern, timeoutMs = 5000) => {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const found = readFileSync(logPath, 'utf8').match(pattern);
      if (found) return found[0];
      if (Date.now() >= until) return null;
      await sleep(100);
    }
  };
  return {
    base, port, pid: proc.pid, proc, logPath, stop, logTail, waitForLog,
    mintToken: (room, identity, perms) => mintToken(base, room, identity, perms),
    metrics: () => metrics(base),
  };
}

/** A development token from GET /dev/token (loopback servers only). */
export async function mintToken(base, room, identity, { publish = false, subscribe = false } = {}) {
  const q = new URLSearchParams({ room, identity, publish: publish ? '1' : '0', subscribe: subscribe ? '1' : '0' });
  const resp = await fetch(`${base}/dev/token?${q}`, { signal: AbortSignal.timeout(5000) });
  if (!resp.ok) throw new Error(`GET /dev/token: ${resp.status} ${await resp.text()}`);
  return (await resp.json()).token;
}

/** Prometheus text -> { 'name{labels}': value } ('name' alone when unlabelled). */
export function parsePrometheus(text) {
  const out = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    // name{a="b",c="d"} value [timestamp]; label values may contain spaces.
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+\S+)?$/);
    if (!m) continue;
    out[`${m[1]}${m[2] || ''}`] = Number(m[3]);
  }
  return out;
}

/** GET /metrics, parsed by parsePrometheus. */
export async function metrics(base) {
  const resp = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(5000) });
  if (!resp.ok) throw new Error(`GET /metrics: ${resp.status}`);
  return parsePrometheus(await resp.text());
}

/** `name{a="b",c="d"}` -> [name, { a: 'b', c: 'd' }]. */
function splitSeries(series) {
  const brace = series.indexOf('{');
  if (brace < 0) return [series, {}];
  const labels = {};
  for (const m of series.slice(brace + 1, -1).matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]] = m[2];
  return [series.slice(0, brace), labels];
}

/**
 * Sum of every series of `query` — a metric name, optionally with labels
 * that must match (`sfu_participants{kind="whep"}`); other labels (such as
 * `node`) are summed over. Undefined if absent.
 */
export function metricTotal(m, query) {
  const [name, want] = splitSeries(query);
  let sum;
  for (const [k, v] of Object.entries(m)) {
    const [kName, labels] = splitSeries(k);
    if (kName !== name) continue;
    if (Object.entries(want).every(([l, val]) => labels[l] === val)) sum = (sum ?? 0) + v;
  }
  return sum;
}
