// Benchmark (not part of the test suite): the same meeting of MEMBERS
// Chromium pages (camera 320x240 without simulcast, and microphone; each
// receives everyone) once on the project's meeting page (/room/{name},
// livekit-client since 525e978: the JSON room protocol's figures are in
// BENCHMARKS.md) and once with bare livekit-client pages (LiveKit's
// signalling, /rtc/v1), each against a fresh server (PROTOCOLS=page,livekit
// picks which and in what order); reports the server's CPU time
// and memory over a steady window from /proc/<pid>, and the time until
// every page decodes every other. Run:
//   tests/e2e/run.sh bench_meeting_protocols.mjs   (MEMBERS=10 WINDOW_MS=20000)
// It asserts only that every page decodes the others.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startServer } from './lib/server.mjs';
import { launchBrowser, openPage, poll, reportMetric, sleep } from './lib/browser.mjs';
import { signToken } from './lib/harness.mjs';
import { openLiveKitPage, joinRoom, received } from './lib/livekit.mjs';

const MEMBERS = Number(process.env.MEMBERS || 10);
const WINDOW_MS = Number(process.env.WINDOW_MS || 20000);
const KEY = 'bench-key';
const SECRET = 'bench-secret-for-the-meeting-bench';

function procStats(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number((status.match(new RegExp(`${k}:\\s+(\\d+)`)) || [0, 0])[1]);
  return { cpuSeconds: (Number(fields[11]) + Number(fields[12])) / 100, rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
}

/** Join MEMBERS pages with `join(i)`; wait until each decodes every other with `decoding(page)`. */
async function measure(t, label, server, join, decoding) {
  const started = Date.now();
  const pages = [];
  for (let i = 0; i < MEMBERS; i++) pages.push(await join(i));
  for (const [i, page] of pages.entries()) {
    await poll(`${label}: member ${i} decodes ${MEMBERS - 1} others`, async () => {
      const n = await decoding(page);
      return n >= MEMBERS - 1 ? n : null;
    }, 90000, 500);
  }
  reportMetric(`${label}_all_decoding_ms`, Date.now() - started, 'ms');
  await sleep(5000);
  const before = procStats(server.pid);
  await sleep(WINDOW_MS);
  const after = procStats(server.pid);
  reportMetric(`${label}_server_cpu_percent_of_one_core`, ((after.cpuSeconds - before.cpuSeconds) / (WINDOW_MS / 1000) * 100).toFixed(1), '%');
  reportMetric(`${label}_server_rss_mb`, (after.rssKb / 1024).toFixed(1), 'MB');
  reportMetric(`${label}_server_peak_rss_mb`, (after.hwmKb / 1024).toFixed(1), 'MB');
  for (const page of pages) assert.ok((await decoding(page)) >= MEMBERS - 1);
  await Promise.all(pages.map((p) => p.context().close()));
}

const PROTOCOLS = (process.env.PROTOCOLS || 'page,livekit').split(',');
const token = (room, i) => signToken(KEY, SECRET, room, `m${i}`, { publish: true, subscribe: true });

const runs = {
  async page(t) {
    const server = await startServer(t, 'bench-page', { extraArgs: ['--api-key', KEY, '--api-secret', SECRET, '--log', 'warn'] });
    const browser = await launchBrowser(t, { origin: server.base });
    await measure(t, 'page', server,
      (i) => openPage(browser, `${server.base}/room/bench?autojoin=1&resolution=320x240&simulcast=0&adaptive=0&name=m${i}&token=${token('bench', i)}`, `page-${i}`),
      (page) => page.evaluate(async () => Object.values(await window.room.stats())
        .filter((e) => e.framesDecoded > 0 && e.audioBytes > 0).length));
    await browser.close();
    server.stop();
  },
  async livekit(t) {
    const server = await startServer(t, 'bench-livekit', { extraArgs: ['--api-key', KEY, '--api-secret', SECRET, '--log', 'warn'] });
    const browser = await launchBrowser(t, { origin: server.base });
    const ws = server.base.replace('http', 'ws');
    const room = {
      videoCaptureDefaults: { resolution: { width: 320, height: 240, frameRate: 30 } },
      publishDefaults: { simulcast: false, videoCodec: 'vp8' },
    };
    await measure(t, 'livekit', server,
      async (i) => {
        const page = await openLiveKitPage(browser, server.base, `lk-${i}`);
        await joinRoom(page, ws, token('bench', i), { room });
        return page;
      },
      async (page) => {
        const r = await received(page);
        const people = new Set(Object.keys(r).map((k) => k.split('/')[0]));
        return [...people].filter((p) => r[`${p}/video`]?.framesDecoded > 0 && r[`${p}/audio`]?.samples > 0).length;
      });
    await browser.close();
    server.stop();
  },
};

test(`a meeting of ${MEMBERS}: ${PROTOCOLS.join(', then ')}`, async (t) => {
  for (const p of PROTOCOLS) await runs[p](t);
});
