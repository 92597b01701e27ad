// Debian's headless Chromium driven by playwright-core (no browser download),
// plus bounded polling and the getStats() figures the tests assert on.
// Pages of the web client expose window.sfu = { pc, state, error, resource }.

import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const artifacts = join(here, '..', 'artifacts');
mkdirSync(artifacts, { recursive: true });

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

/** Every Chromium the tests start gets these flags (change them here). */
export const BROWSER_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Poll `fn` (Node side, may be async) until it returns something truthy and
 * return that; throw after `timeoutMs` with `what` and the last value seen.
 */
export async function poll(what, fn, timeoutMs = 15000, intervalMs = 100) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() >= end) break;
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

/**
 * Bounded polling on a page: `predicateFn(page)` runs in Node (it may call
 * page.evaluate or the stats helpers below) until it returns a truthy value.
 */
export async function waitFor(page, predicateFn, timeoutMs = 15000, { what = 'condition', intervalMs = 100 } = {}) {
  let lastError = null;
  try {
    return await poll(what, async () => {
      try { return await predicateFn(page); } catch (e) {
        if (page.isClosed()) throw e;
        lastError = e; // e.g. evaluate during a navigation: try again
        return false;
      }
    }, timeoutMs, intervalMs);
  } catch (e) {
    if (lastError) e.message += ` (last error: ${lastError.message.split('\n')[0]})`;
    throw e;
  }
}

/**
 * Launch Chromium; it is closed when test `t` ends (if given). `netns`: run
 * the browser inside that network namespace; `origin`: a non-loopback server
 * origin to treat as secure (getUserMedia); `args`: more flags. The browser
 * starts through a small wrapper script that records its process id, so
 * killBrowser() can make it vanish like a crashed or unplugged machine.
 */
let launches = 0;
export async function launchBrowser(t, { netns = null, origin = null, args = [] } = {}) {
  const tag = `${process.pid}-${++launches}`;
  const pidFile = join(artifacts, `chromium-${tag}.pid`);
  const executablePath = join(artifacts, `chromium-${tag}.sh`);
  const prefix = netns ? `ip netns exec ${netns} ` : '';
  writeFileSync(executablePath, `#!/bin/sh\necho $$ > '${pidFile}'\nexec ${prefix}${CHROMIUM} "$@"\n`);
  chmodSync(executablePath, 0o755);
  const browser = await chromium.launch({
    executablePath,
    args: [...BROWSER_ARGS, ...(origin ? [`--unsafely-treat-insecure-origin-as-secure=${origin}`] : []), ...args],
    timeout: 30000,
  });
  browser.pidFile = pidFile;
  const cleanup = () => { for (const f of [pidFile, executablePath]) rmSync(f, { force: true }); };
  browser.on('disconnected', cleanup);
  if (t) t.after(async () => { await browser.close().catch(() => {}); cleanup(); });
  return browser;
}

/** SIGKILL the browser: no DELETE, no DTLS close_notify, its peers just stop
 * hearing from it (the server must notice through its session timeout). */
export function killBrowser(browser) {
  const pid = Number(readFileSync(browser.pidFile, 'utf8').trim());
  process.kill(pid, 'SIGKILL');
  return pid;
}

/**
 * Open `url` in a fresh context (own cookies/storage, like another person).
 * Console errors and page errors are printed with `label`. The returned page
 * has `page.navigatedAt` (Date.now() just before goto); `beforeGoto(page)`
 * may attach listeners first.
 */
export async function openPage(browser, url, label, { beforeGoto = null } = {}) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.log(`[${label}] console: ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`[${label}] page error: ${e.message}`));
  if (beforeGoto) await beforeGoto(page);
  page.navigatedAt = Date.now();
  await page.goto(url, { timeout: 15000 });
  return page;
}

/** Close a page's whole context (ends its sessions as a closed tab does). */
export async function closePage(page) {
  await page.context().close().catch(() => {});
}

// getStats() of window.sfu.pc reduced to plain numbers, in the page.
async function statsOf(page, type, kind) {
  return page.evaluate(async ([type, kind]) => {
    const pc = window.sfu && window.sfu.pc;
    if (!pc) return null;
    let best = null;
    (await pc.getStats()).forEach((r) => {
      if (r.type !== type || r.kind !== kind) return;
      // Simulcast publishers have one outbound-rtp per layer: keep the widest;
      // a player has one inbound-rtp per kind (keep the busiest to be safe).
      const score = type === 'outbound-rtp' ? (r.frameWidth || 0) : (r.packetsReceived || 0);
      if (!best || score > best.score) best = { score, r };
    });
    if (!best) return null;
    const r = best.r;
    const n = (k) => r[k] || 0;
    if (type === 'outbound-rtp') {
      return { frameWidth: n('frameWidth'), frameHeight: n('frameHeight'), framesEncoded: n('framesEncoded'),
        packetsSent: n('packetsSent'), bytesSent: n('bytesSent'), rid: r.rid || null };
    }
    if (kind === 'video') {
      return { framesDecoded: n('framesDecoded'), frameWidth: n('frameWidth'), frameHeight: n('frameHeight'),
        freezeCount: n('freezeCount'), totalFreezesDuration: n('totalFreezesDuration'), nackCount: n('nackCount'),
        packetsLost: n('packetsLost'), packetsReceived: n('packetsReceived'), pliCount: n('pliCount'),
        framesDropped: n('framesDropped') };
    }
    return { packetsReceived: n('packetsReceived'), totalSamplesReceived: n('totalSamplesReceived'),
      packetsLost: n('packetsLost') };
  }, [type, kind]);
}

/** Inbound video of the page's pc: {framesDecoded, frameWidth, frameHeight,
 * freezeCount, totalFreezesDuration, nackCount, packetsLost, ...} or null. */
export const inboundVideoStats = (page) => statsOf(page, 'inbound-rtp', 'video');
/** Inbound audio of the page's pc: {packetsReceived, totalSamplesReceived} or null. */
export const inboundAudioStats = (page) => statsOf(page, 'inbound-rtp', 'audio');
/** Outbound video of a publisher page (widest layer): {frameWidth, frameHeight, ...} or null. */
export const outboundVideoStats = (page) => statsOf(page, 'outbound-rtp', 'video');

/** window.sfu.state and pc.connectionState of a client page. */
export async function sfuState(page) {
  return page.evaluate(() => (window.sfu
    ? { state: window.sfu.state, error: window.sfu.error || null, pc: window.sfu.pc ? window.sfu.pc.connectionState : null }
    : null));
}

/** Frames decoded so far by the page's player (0 before any). */
export async function framesDecoded(page) {
  return (await inboundVideoStats(page))?.framesDecoded ?? 0;
}

/** Print a measured figure; runners collect lines starting with METRIC. */
export function reportMetric(name, value, unit) {
  console.log(`METRIC ${name}=${value}${unit ? ' ' + unit : ''}`);
}
