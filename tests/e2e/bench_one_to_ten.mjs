// Benchmark (not part of the test suite): one Chromium publisher, ten
// Chromium WHEP players; reports the server's CPU time and memory over a
// steady 30 s window from /proc/<pid>. Run: tests/e2e/run.sh bench_one_to_ten.mjs
// (node --test runs it; it asserts only that all players decode).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startServer, launchBrowser, openPage, rtpStats, waitFor, reportMetric, sleep } from './lib/harness.mjs';

const PLAYERS = Number(process.env.PLAYERS || 10);
const WINDOW_MS = Number(process.env.WINDOW_MS || 30000);

function procStats(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime + stime
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number((status.match(new RegExp(`${k}:\\s+(\\d+)`)) || [0, 0])[1]);
  return { cpuSeconds: ticks / 100, rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
}

test(`1 publisher -> ${PLAYERS} players: server CPU and memory`, async (t) => {
  const server = await startServer(t, 'bench', ['--log', 'warn']);
  const browser = await launchBrowser(t);
  const room = 'bench';
  const publisher = await openPage(browser, `${server.base}/?room=${room}&autostart=1&resolution=1280x720`, 'publisher');
  const players = [];
  for (let i = 0; i < PLAYERS; i++) {
    players.push(await openPage(browser, `${server.base}/play?room=${room}&autostart=1`, `p${i}`));
  }
  for (const [i, p] of players.entries()) {
    await waitFor(`player ${i} decodes`, async () => (await rtpStats(p))?.inbound.video?.framesDecoded > 0, 30000, 200);
  }
  await sleep(5000); // let bandwidth estimation settle
  const before = procStats(server.pid);
  const decodedBefore = await Promise.all(players.map(async (p) => (await rtpStats(p)).inbound.video.framesDecoded));
  await sleep(WINDOW_MS);
  const after = procStats(server.pid);
  const stats = await Promise.all(players.map(rtpStats));
  const pub = await rtpStats(publisher);
  const fps = stats.map((s, i) => (s.inbound.video.framesDecoded - decodedBefore[i]) / (WINDOW_MS / 1000));
  const cpu = (after.cpuSeconds - before.cpuSeconds) / (WINDOW_MS / 1000);
  reportMetric('publisher_resolution', `${pub.outbound.video.frameWidth}x${pub.outbound.video.frameHeight}`);
  reportMetric('players_min_fps', Math.min(...fps).toFixed(1));
  reportMetric('server_cpu_percent_of_one_core', (cpu * 100).toFixed(1), '%');
  reportMetric('server_rss_mb', (after.rssKb / 1024).toFixed(1), 'MB');
  reportMetric('server_peak_rss_mb', (after.hwmKb / 1024).toFixed(1), 'MB');
  const m = await (await fetch(`${server.base}/metrics`)).text();
  const sent = Number((m.match(/^sfu_packets_sent_total (\d+)/m) || [0, 0])[1]);
  reportMetric('server_packets_sent_total', sent);
  for (const s of stats) assert.ok(s.inbound.video.framesDecoded > 0);
});
