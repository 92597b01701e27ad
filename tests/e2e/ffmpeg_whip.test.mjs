// FFmpeg 8's own WHIP muxer (through PyAV, ffmpeg_whip.py) publishes H.264 +
// Opus like OBS: no trickle, libx264 tune=zerolatency without B-frames
// (FFmpeg's muxer refuses B-frames itself: "Unsupported B frames by RTC"; the
// server's B-frame detection is tested with str0m peers in sfu/tests/media.rs).
// FFmpeg (GnuTLS build in the wheel) offers a=setup:passive and a self-signed
// ECDSA P-224 DTLS certificate (CN=lavf). Chromium plays it over WHEP.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, metricTotal } from './lib/server.mjs';
import {
  launchBrowser, openPage, closePage, poll, waitFor, inboundVideoStats, inboundAudioStats, sfuState, reportMetric, sleep,
} from './lib/browser.mjs';

const script = join(dirname(fileURLToPath(import.meta.url)), 'ffmpeg_whip.py');
const PYTHON = process.env.PYTHON || 'python3';
const GAUGES_ZERO_WHEN_EMPTY = ['sfu_rooms', 'sfu_participants', 'sfu_rtc_instances', 'sfu_registry_entries'];

/** Run ffmpeg_whip.py; resolves { code, output } when it exits (killed when the test ends). */
function publish(t, url, token, seconds, extra = []) {
  const proc = spawn(PYTHON, [script, url, token, String(seconds), '640x360', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (d) => { output += d; });
  proc.stderr.on('data', (d) => { output += d; });
  const done = new Promise((resolve) => {
    proc.on('error', (e) => resolve({ code: -1, output: `${output}\nspawn failed: ${e.message}` }));
    proc.on('exit', (code, signal) => resolve({ code: code ?? signal, output }));
  });
  t.after(() => proc.kill('SIGKILL'));
  return done;
}

async function assertServerEmpty(server, timeoutMs = 10000) {
  return poll('no rooms, participants or sessions left', async () => {
    const m = await server.metrics();
    return GAUGES_ZERO_WHEN_EMPTY.every((g) => metricTotal(m, g) === 0) ? m : false;
  }, timeoutMs, 250);
}

for (const profile of ['high', 'baseline']) {
  test(`FFmpeg WHIP ingest (H.264 ${profile} + Opus, no trickle) plays in Chromium over WHEP`, async (t) => {
    const server = await startServer(t, `ffmpeg-${profile}`);
    const browser = await launchBrowser(t);
    const room = `ffmpeg-${profile}`;
    const player = await openPage(browser, `${server.base}/play?room=${room}&autostart=1`, 'player');
    await waitFor(player, async (p) => (await sfuState(p))?.pc === 'connected', 15000, { what: 'player connected' });

    const token = await server.mintToken(room, 'ffmpeg', { publish: true });
    const startedAt = Date.now();
    const run = publish(t, `${server.base}/whip/${room}`, token, 10, ['--profile', profile]);
    const first = await waitFor(player, async (p) => {
      const v = await inboundVideoStats(p);
      return v?.framesDecoded > 0 ? v : false;
    }, 20000, { what: 'player decodes FFmpeg video', intervalMs: 20 });
    reportMetric(`ffmpeg_${profile}_start_to_first_decoded_frame_ms`, Date.now() - startedAt, 'ms');
    await sleep(3000);
    const video = await inboundVideoStats(player);
    const audio = await inboundAudioStats(player);
    console.log(`player (${profile}): video ${JSON.stringify(video)} audio ${JSON.stringify(audio)}`);
    assert.ok(video.framesDecoded > first.framesDecoded + 45, `about 30 fps keep arriving (${first.framesDecoded} -> ${video.framesDecoded})`);
    assert.equal(video.frameWidth, 640);
    assert.equal(video.frameHeight, 360);
    assert.ok(audio?.packetsReceived > 50, 'Opus audio arrives');
    assert.ok(audio.totalSamplesReceived > 0, 'Opus audio is played out');
    const m = await server.metrics();
    assert.equal(metricTotal(m, 'sfu_publisher_bframes') ?? 0, 0, 'no B-frames in a zerolatency x264 stream');

    const { code, output } = await run;
    assert.equal(code, 0, `ffmpeg publisher failed: ${output}`);
    await closePage(player);
    await assertServerEmpty(server);
  });
}

test('FFmpeg with a wrong token is refused (401) and says so', async (t) => {
  const server = await startServer(t, 'ffmpeg-refused');
  const { code, output } = await publish(t, `${server.base}/whip/refused`, 'not-a-token', 2);
  const error = output.split('\n').find((l) => l.startsWith('ffmpeg whip failed')) ?? output.slice(-400);
  console.log(`FFmpeg's error: ${error}`);
  assert.equal(code, 2, output);
  assert.match(error, /401/);
  await assertServerEmpty(server, 2000);
});
