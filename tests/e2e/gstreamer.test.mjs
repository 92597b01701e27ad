// GStreamer's webrtcbin (gstreamer_whip.py, PyGObject) publishes VP8 + Opus
// over WHIP; a Chromium player (an independent stack) decodes it at the
// size sent, and a second webrtcbin plays it over WHEP, decoding both. The
// point is DTLS: webrtcbin signs with an RSA-2048 certificate, which the
// server's DTLS (OpenSSL, sfu/src/dtls/) asks for and accepts; the server
// logs each handshake's peer key, checked here. Debian's PyGObject lives in
// /usr/bin/python3 only (PYTHON_GI overrides).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, metricTotal } from './lib/server.mjs';
import { launchBrowser, openPage, closePage, waitFor, inboundVideoStats, inboundAudioStats } from './lib/browser.mjs';

const script = join(dirname(fileURLToPath(import.meta.url)), 'gstreamer_whip.py');
const PYTHON = process.env.PYTHON_GI || '/usr/bin/python3';

/**
 * Run gstreamer_whip.py MODE; resolves { code, output, last, firstVideoAt }
 * (last: its final JSON line; firstVideoAt: the first report with video, s).
 */
function run(t, mode, url, token, seconds) {
  const proc = spawn(PYTHON, [script, mode, url, token, String(seconds)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (d) => { output += d; });
  proc.stderr.on('data', (d) => { output += d; });
  t.after(() => proc.kill('SIGKILL'));
  return new Promise((resolve) => {
    proc.on('error', (e) => resolve({ code: -1, output: `${output}\nspawn failed: ${e.message}`, last: null }));
    proc.on('exit', (code, signal) => {
      const lines = [];
      for (const l of output.split('\n')) {
        try { if (l.startsWith('{')) lines.push(JSON.parse(l)); } catch { /* not JSON */ }
      }
      // The first second whose report has decoded (or sent) video.
      const firstVideoAt = lines.find((l) => l.video > 0 && l.t !== undefined)?.t ?? null;
      resolve({ code: code ?? signal, output, last: lines.at(-1) ?? null, firstVideoAt });
    });
  });
}

test('GStreamer webrtcbin (RSA-2048 DTLS certificate) publishes over WHIP, Chromium and webrtcbin play it over WHEP', async (t) => {
  // The server's default session timeout (30 s), not the suite's 5 s: a
  // receive-only webrtcbin sends only RTCP (GStreamer's rtpsession: every
  // 2.5-7.5 s) and libnice's keepalives (25 s), and a 5 s timeout dropped it.
  const server = await startServer(t, 'gstreamer', {
    sessionTimeoutSecs: 30, extraArgs: ['--log', 'info,sfu::dtls=debug'],
  });
  const room = 'gstreamer';
  const pubToken = await server.mintToken(room, 'webrtcbin', { publish: true });
  const subToken = await server.mintToken(room, 'viewer', { subscribe: true });

  const startedAt = Date.now();
  const publisher = run(t, 'publish', `${server.base}/whip/${room}`, pubToken, 20);
  const rsa = await server.waitForLog(/DTLS connected peer_key=RSA 2048[^\n]*/, 15000);
  assert.ok(rsa, `no RSA-2048 DTLS handshake in the server log:\n${server.logTail()}`);
  console.log(`publisher: ${rsa} after ${Date.now() - startedAt} ms`);

  // Chromium plays webrtcbin's stream (320x240 VP8 + Opus).
  const browser = await launchBrowser(t);
  const page = await openPage(browser, `${server.base}/play?room=${room}&autostart=1&token=${subToken}`, 'chromium');
  t.after(() => closePage(page));
  const seen = await waitFor(page, async (p) => {
    const v = await inboundVideoStats(p);
    return v?.framesDecoded > 30 ? v : false;
  }, 20000, { what: 'Chromium decodes webrtcbin\'s video' });
  assert.equal(`${seen.frameWidth}x${seen.frameHeight}`, '320x240', 'Chromium decodes the size webrtcbin sends');
  const audio = await inboundAudioStats(page);
  assert.ok(audio?.totalSamplesReceived > 0, `Chromium plays webrtcbin's audio: ${JSON.stringify(audio)}`);
  console.log(`chromium: ${JSON.stringify(seen)}`);

  const player = await run(t, 'play', `${server.base}/whep/${room}`, subToken, 10);
  console.log(`player: ${JSON.stringify(player.last)}, video from t=${player.firstVideoAt} s`);
  assert.equal(player.code, 0, `webrtcbin player failed:\n${player.output.slice(-2000)}`);
  // 30 fps video and 50 Opus frames a second for 10 s, less the connection
  // and the first keyframe (284-288 and 474-480 in three runs).
  assert.ok(player.last.video > 240, `video frames decoded: ${player.last.video}`);
  assert.ok(player.last.audio > 400, `audio frames decoded: ${player.last.audio}`);

  const m = await server.metrics();
  assert.equal(metricTotal(m, 'sfu_sessions_created_total{kind="whip"}'), 1);
  assert.equal(metricTotal(m, 'sfu_sessions_created_total{kind="whep"}'), 2);
  assert.ok(metricTotal(m, 'sfu_media_packets_forwarded_total{kind="video"}') > 150);

  const pub = await publisher;
  console.log(`publisher: ${JSON.stringify(pub.last)}`);
  assert.equal(pub.code, 0, `webrtcbin publisher failed:\n${pub.output.slice(-2000)}`);
  const handshakes = (await server.waitForLog(/(DTLS connected peer_key=RSA 2048[^\n]*\n[^]*){2}/, 2000)) !== null;
  assert.ok(handshakes, 'the player\'s handshake was RSA-2048 too');
});
