// FFmpeg 8's own WHIP muxer (through PyAV) publishes H.264 + Opus like OBS:
// no trickle, libx264 High profile without B-frames (FFmpeg's muxer itself
// refuses B-frames; the server's B-frame detection is tested with str0m
// peers in sfu/tests/media.rs). Chromium plays it over WHEP.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  startServer, launchBrowser, openPage, rtpStats, waitFor, waitForNoSessions, metrics, mintToken, reportMetric, sleep,
} from './lib/harness.mjs';

const script = join(dirname(fileURLToPath(import.meta.url)), 'ffmpeg_whip.py');

function publish(t, base, room, token, seconds, extra = []) {
  const proc = spawn('python3', [script, `${base}/whip/${room}`, token, String(seconds), '640x360', ...extra],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (d) => { output += d; });
  proc.stderr.on('data', (d) => { output += d; });
  const done = new Promise((resolve) => proc.on('exit', (code) => resolve({ code, output })));
  t.after(() => proc.kill('SIGKILL'));
  return done;
}

test('FFmpeg WHIP ingest (H.264 + Opus, no trickle) plays in Chromium over WHEP', async (t) => {
  const server = await startServer(t, 'ffmpeg');
  const browser = await launchBrowser(t);
  const room = 'ffmpeg-room';
  const player = await openPage(browser, `${server.base}/play?room=${room}&autostart=1`, 'player');
  await waitFor('player connected', async () => (await rtpStats(player))?.state === 'connected');

  const token = await mintToken(server.base, room, 'ffmpeg', { publish: true });
  const startedAt = Date.now();
  const run = publish(t, server.base, room, token, 12);
  await waitFor('player decodes FFmpeg video', async () => (await rtpStats(player))?.inbound.video?.framesDecoded > 0, 20000, 20);
  reportMetric('ffmpeg_start_to_first_decoded_frame_ms', Date.now() - startedAt, 'ms');
  const first = await rtpStats(player);
  await sleep(3000);
  const s = await rtpStats(player);
  console.log('player stats', JSON.stringify(s.inbound));
  assert.ok(s.inbound.video.framesDecoded > first.inbound.video.framesDecoded + 45, 'about 30 fps keep arriving');
  assert.equal(s.inbound.video.frameWidth, 640);
  assert.equal(s.inbound.video.frameHeight, 360);
  assert.ok(s.inbound.audio.packetsReceived > 50, 'Opus audio arrives');
  const m = await metrics(server.base);
  assert.equal(m.sfu_publisher_bframes ?? 0, 0, 'no B-frames in a zerolatency x264 stream');

  const { code, output } = await run;
  assert.equal(code, 0, `ffmpeg publisher failed: ${output}`);
  await player.context().close();
  await waitForNoSessions(server.base);
});
