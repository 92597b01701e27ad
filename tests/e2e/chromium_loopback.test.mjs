// Self-check of the test environment, no SFU involved: inside the private
// network namespace (only `lo`), can Chromium do WebRTC at all? Two
// RTCPeerConnections in one page, the fake camera + microphone on one side,
// must connect over 127.0.0.1 and decode frames. If this fails, the other
// end-to-end tests cannot pass whatever the server does.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import {
  launchBrowser, openPage, waitFor, inboundVideoStats, inboundAudioStats, reportMetric, sleep,
} from './lib/browser.mjs';

// Served from http://127.0.0.1 (a secure context, so getUserMedia works).
const PAGE = `<!doctype html><title>loopback</title><script type="module">
const media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 }, audio: true });
const a = new RTCPeerConnection();
const b = new RTCPeerConnection();
window.sfu = { pc: b, state: 'connecting', candidates: [] };
a.onicecandidate = (e) => { if (e.candidate) { window.sfu.candidates.push('a ' + e.candidate.candidate); b.addIceCandidate(e.candidate); } };
b.onicecandidate = (e) => { if (e.candidate) { window.sfu.candidates.push('b ' + e.candidate.candidate); a.addIceCandidate(e.candidate); } };
b.ontrack = (e) => {
  if (e.track.kind !== 'video') return;
  const v = document.createElement('video');
  v.muted = true; v.autoplay = true; v.srcObject = e.streams[0] || new MediaStream([e.track]);
  document.body.append(v);
};
b.onconnectionstatechange = () => { window.sfu.state = b.connectionState; };
for (const track of media.getTracks()) a.addTrack(track, media);
await a.setLocalDescription();
await b.setRemoteDescription(a.localDescription);
await b.setLocalDescription();
await a.setRemoteDescription(b.localDescription);
</script>`;

test('Chromium does WebRTC over loopback in this network namespace (no server)', async (t) => {
  const http = createServer((req, res) => { res.setHeader('content-type', 'text/html'); res.end(PAGE); });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  t.after(() => http.close());
  const url = `http://127.0.0.1:${http.address().port}/`;

  const browser = await launchBrowser(t);
  const page = await openPage(browser, url, 'loopback');
  await waitFor(page, (p) => p.evaluate(() => window.sfu?.state === 'connected'), 15000, { what: 'pc connected' });
  const connectedMs = Date.now() - page.navigatedAt;
  const first = await waitFor(page, async (p) => {
    const v = await inboundVideoStats(p);
    return v?.framesDecoded > 0 ? v : false;
  }, 15000, { what: 'first decoded frame' });
  reportMetric('loopback_nav_to_first_decoded_frame_ms', Date.now() - page.navigatedAt, 'ms');
  reportMetric('loopback_nav_to_connected_ms', connectedMs, 'ms');
  await sleep(2000);
  const video = await inboundVideoStats(page);
  const audio = await inboundAudioStats(page);
  const pair = await page.evaluate(async () => {
    const stats = await window.sfu.pc.getStats();
    let out = null;
    stats.forEach((r) => {
      if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') {
        const l = stats.get(r.localCandidateId); const rm = stats.get(r.remoteCandidateId);
        out = `${l.protocol} ${l.candidateType} ${l.address}:${l.port} -> ${rm.candidateType} ${rm.address}:${rm.port}`;
      }
    });
    return out;
  });
  console.log('selected candidate pair:', pair);
  console.log('inbound video', JSON.stringify(video), 'audio', JSON.stringify(audio));
  assert.ok(video.framesDecoded > first.framesDecoded + 20, `frames keep decoding (${first.framesDecoded} -> ${video.framesDecoded})`);
  assert.equal(video.frameWidth, 640);
  assert.equal(video.frameHeight, 360);
  assert.ok(audio.packetsReceived > 0, 'audio packets arrive');
  assert.match(pair ?? '', /127\.0\.0\.1/, 'the pair is on loopback');
});
