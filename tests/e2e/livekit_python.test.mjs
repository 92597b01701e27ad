// LiveKit's Python SDK (PyPI `livekit`, a self-contained Rust core) with
// LiveKit's signalling in both modes: one process publishes over one peer
// connection (/rtc/v1), another receives on two (/rtc, the server offering
// its subscriber connection); the publisher publishes
// synthetic video (a solid colour, simulcast) and a 440 Hz tone, another
// subscribes and decodes them: picture size, colour, audio samples, and a
// data packet round trip (the publisher echoes to the sender it sees).
// The SDK's WebRTC stack gathers no loopback candidates, so both processes
// run in a second namespace behind a veth pair and the server listens on
// this side's veth address.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from './lib/server.mjs';
import { createPeerHost, signToken } from './lib/harness.mjs';

const script = join(dirname(fileURLToPath(import.meta.url)), 'livekit_python.py');
const KEY = 'e2e-key';
const SECRET = 'e2e-secret-for-livekit-python';
const ROOM = 'lk-python';

function sdkMissing() {
  const r = spawnSync('python3', ['-c', 'import livekit.rtc'], { encoding: 'utf8' });
  return r.status === 0 ? null : `the livekit Python SDK is not installed: ${r.stderr.trim().split('\n').pop()}`;
}

/** Run the script; resolves { code, stdout } when it exits (killed when the test ends). */
function run(t, ns, args, label, signalling = 'single') {
  const child = spawn('ip', ['netns', 'exec', ns, 'env', `LIVEKIT_SIGNALLING=${signalling}`, 'python3', script, ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => child.kill('SIGKILL'));
  let stdout = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => {
    for (const line of String(d).split('\n')) if (line.trim()) console.log(`# [${label}] ${line.slice(0, 300)}`);
  });
  return new Promise((res) => child.on('exit', (code) => res({ code, stdout })));
}

test('the Python SDK publishes video, audio and data that the Python SDK decodes on two peer connections', { skip: sdkMissing() ?? false }, async (t) => {
  const peer = createPeerHost(t, 'py');
  const server = await startServer(t, 'livekit-python', {
    host: peer.hostIp, extraArgs: ['--api-key', KEY, '--api-secret', SECRET],
  });
  const ws = server.base.replace('http', 'ws');
  const tok = (id) => signToken(KEY, SECRET, ROOM, id, { publish: true, subscribe: true });
  const publisher = run(t, peer.ns, ['publish', ws, tok('py-camera'), '25'], 'publisher');
  const { stdout } = await run(t, peer.ns, ['subscribe', ws, tok('py-viewer'), '20', 'py-camera'], 'subscriber', 'dual');
  const line = stdout.trim().split('\n').pop();
  const seen = JSON.parse(line);
  console.log(`# the subscriber saw ${line}`);
  assert.ok(seen.frames > 30, `video frames decoded: ${seen.frames}`);
  assert.ok([[640, 360], [320, 180], [160, 90]].some(([w, h]) => seen.width === w && seen.height === h),
    `a published size: ${seen.width}x${seen.height}`);
  const [r, g, b] = seen.rgb;
  assert.ok(Math.abs(r - 200) <= 16 && Math.abs(g - 40) <= 16 && Math.abs(b - 40) <= 16, `the colour sent: ${seen.rgb}`);
  assert.ok(seen.audio_frames > 50, `audio frames: ${seen.audio_frames}`);
  assert.ok(seen.audio_rms > 1000, `the tone, not silence: rms ${seen.audio_rms}`);
  assert.equal(seen.echo_from, 'py-camera', 'the data packet came back from the publisher');
  await publisher;
});
