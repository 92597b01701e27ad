// Headless Firefox (Debian's firefox-esr) as a second real browser peer,
// driven over W3C WebDriver by geckodriver with Node's fetch: no extra npm
// package. A page object offers the subset of playwright's Page the tests
// use (evaluate, textContent, $, isClosed), so waitFor() works unchanged.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sleep } from './browser.mjs';
import { freePort } from './server.mjs';

const here = dirname(fileURLToPath(import.meta.url));
export const GECKODRIVER = process.env.GECKODRIVER_BIN || join(here, '..', '.tools', 'bin', 'geckodriver');
export const FIREFOX = process.env.FIREFOX_BIN || '/usr/bin/firefox-esr';

/** Why Firefox cannot run here (null when it can). */
export function firefoxMissing() {
  if (!existsSync(FIREFOX)) return `${FIREFOX} not installed (scripts/install-test-deps.sh installs firefox-esr)`;
  if (!existsSync(GECKODRIVER)) return `${GECKODRIVER} not built (scripts/install-test-deps.sh builds it)`;
  return null;
}

/** Prefs: a fake camera and microphone without prompts, autoplay, host
 * candidates on loopback, and nothing that phones home. */
const PREFS = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  // The server's page is plain http on a veth address: allow getUserMedia there.
  'media.devices.insecure.enabled': true,
  'media.getusermedia.insecure.enabled': true,
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  'media.peerconnection.ice.default_address_only': false,
  'media.peerconnection.ice.no_host': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'datareporting.healthreport.uploadEnabled': false,
  'toolkit.telemetry.enabled': false,
  'app.update.enabled': false,
  'app.update.auto': false,
  'browser.safebrowsing.malware.enabled': false,
  'browser.safebrowsing.phishing.enabled': false,
  'browser.shell.checkDefaultBrowser': false,
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
  'browser.newtabpage.enabled': false,
  'extensions.update.enabled': false,
};

async function wd(base, method, path, body) {
  const resp = await fetch(`${base}${path}`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(60000),
  });
  const json = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(`WebDriver ${method} ${path}: ${resp.status} ${JSON.stringify(json.value ?? json)}`);
  return json.value;
}

/**
 * Start geckodriver + Firefox and open one page at `url`. With `netns`, both
 * run inside that network namespace (Marionette, geckodriver's link to
 * Firefox, is a loopback socket, so the two must share one), and
 * geckodriver listens on `host`, the namespace's address the test reaches.
 * Everything is killed when test `t` ends.
 */
export async function openFirefoxPage(t, url, label, { netns = null, host = null } = {}) {
  if (netns && !host) throw new Error('openFirefoxPage: netns needs the address geckodriver listens on');
  const bindHost = host ?? '127.0.0.1';
  // A fresh namespace has no other listeners: any port is free there.
  const port = netns ? 20000 + Math.floor(Math.random() * 20000) : await freePort('127.0.0.1');
  const args = ['--port', String(port), '--host', bindHost, '--log', 'error'];
  const driver = netns
    ? spawn('ip', ['netns', 'exec', netns, GECKODRIVER, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
    : spawn(GECKODRIVER, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let driverErr = '';
  driver.stderr.on('data', (d) => { driverErr = (driverErr + d).slice(-2000); });
  const base = `http://${bindHost}:${port}`;
  let session = null;
  const close = async () => {
    if (session) await wd(base, 'DELETE', `/session/${session}`).catch(() => {});
    session = null;
    driver.kill('SIGKILL');
  };
  if (t) t.after(close);
  for (let i = 0; ; i++) {
    try { await wd(base, 'GET', '/status'); break; } catch (e) {
      if (i > 100) { await close(); throw new Error(`geckodriver did not start: ${e.message} ${driverErr}`); }
      await sleep(100);
    }
  }
  const created = await wd(base, 'POST', '/session', {
    capabilities: {
      alwaysMatch: {
        browserName: 'firefox',
        'moz:firefoxOptions': { binary: FIREFOX, args: ['-headless'], prefs: PREFS },
      },
    },
  });
  session = created.sessionId;
  await wd(base, 'POST', `/session/${session}/url`, { url });

  const page = {
    label,
    closed: false,
    isClosed: () => page.closed,
    /** Run `fn(arg)` in the page (it may return a promise); JSON result. */
    async evaluate(fn, arg) {
      const script = `const done = arguments[arguments.length - 1];
        Promise.resolve().then(() => (${fn.toString()})(arguments[0]))
          .then((v) => done({ ok: v === undefined ? null : v }), (e) => done({ err: String(e && e.stack || e) }));`;
      const r = await wd(base, 'POST', `/session/${session}/execute/async`, { script, args: [arg ?? null] });
      if (r && 'err' in r) throw new Error(`[${label}] ${r.err}`);
      return r ? r.ok : null;
    },
    textContent: (selector) => page.evaluate((s) => document.querySelector(s)?.textContent ?? null, selector),
    $: (selector) => page.evaluate((s) => (document.querySelector(s) ? true : null), selector),
    async close() { page.closed = true; await close(); },
  };
  return page;
}
