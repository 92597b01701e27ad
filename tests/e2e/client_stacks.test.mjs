// Third-party WebRTC client stacks against the server, each a real round
// trip with frames decoded on the other end (one server for all of them).
// The code each one runs is README.md's quick start for it.
//
// 1. werift (npm `werift`, WebRTC in pure TypeScript) publishes over WHIP
//    from Node: VP8 and Opus encoded by FFmpeg 8 (PyAV's libvpx and libopus,
//    the wheel scripts/install-test-deps.sh installs; the README gives the
//    same settings as an ffmpeg command line) and sent as RTP to loopback UDP
//    ports, read there and written into werift tracks (writeRtp, as werift's
//    own examples do); the server's picture loss indications reach the
//    encoder as forced keyframes. Chromium plays it with the /play page.
// 2. @eyevinn/webrtc-player (npm) plays over WHEP in Chromium, bundled for the
//    browser with esbuild as its users would; the server's own publish page is
//    the publisher. Its token goes in its `authKey` argument, which it sends
//    verbatim as the Authorization header ('Bearer ...').
// 3. whip-whep (npm, Medooze's WHIP and WHEP clients) in Chromium: its
//    WHIPClient publishes the fake camera, its WHEPClient plays it; then its
//    WHEP extras: the event stream it opens, layer selection, ICE restart,
//    and stop().
//
// The libraries' pages come from another origin (a static server on another
// loopback port), so their requests are cross-origin (CORS), as on a real
// site. Every library gets an empty ICE server list (werift and the Eyevinn
// player would otherwise ask a public STUN server). Each client's own
// stop/unload sends the DELETE; at the end nothing may be left.
//
// MEASURED (6 runs, 2-core machine, sfu build of 2026-12-07 16:05; the file
// takes 13.6-14.6 s with Chromium's start, the test itself 9.8-10.7 s):
//   werift          WHIP POST -> first frame decoded by /play: 239-479 ms
//                   (one PLI from the server -> one forced keyframe);
//                   640x360 VP8 + Opus played, 47-51 frames by the check
//                   1.5 s later, no loss; DELETE 200
//   Eyevinn player  WHEP POST -> first frame 97-234 ms (navigation -> first
//                   frame 381-528 ms: it waits for ICE gathering, then
//                   POSTs without trickle); 640x360 + audio; its requests:
//                   POST 201, DELETE 200 (unload()) and nothing else: no
//                   event stream, no layer selection, no PATCH
//   whip-whep       WHEP POST -> first frame 166-358 ms; 640x360 + audio
// What the libraries trip over (printed by the test, not asserted):
//   - Fixed since (asserted now): the WHEP answer gave a publisher's audio
//     and video two different stream ids (a=msid) even when the publisher
//     sent them in one stream, so a player that shows event.streams[0] of
//     its video track (as whip-whep's README does) played no audio. The
//     answer now puts them in one stream (the page here still takes every
//     track, which works either way).
//   - whip-whep's stop() closes its peer connection first and sends the
//     DELETE after: the server has already ended the session on the DTLS
//     close ("participant left reason=closed", a few ms before), so both DELETEs
//     (WHIP and WHEP) get 404.
//   - Fixed since (asserted now): whip-whep's unselectLayer() sends DELETE
//     {resource}/layer, which got 405 (Allow: POST); the server now takes it
//     as POST {} (back to its own choice).
//   - whip-whep's WHEPClient subscribes to the event types the Link header
//     lists, but relays only unnamed messages (EventSource.onmessage): the
//     server's named events (active, viewercount, layers) reach the stream,
//     none reach its listeners.
//   - whip-whep's restart() (PATCH, If-Match: *) gets 200 with new
//     credentials and two candidates (UDP and passive TCP); the library
//     splices them into the remote description with Array.join()'s comma
//     and Chromium refuses the result ("Invalid SDP line": ",a=candidate:").
//   - werift with its default bundle policy (a transport per m-line until
//     the answer bundles them) kept a UDP socket open after close(): the
//     file's Node process did not exit (until the runner's 240 s timeout).
//     With 'max-bundle' it does.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { MediaStreamTrack, RTCPeerConnection } from 'werift';
import { startServer, metricTotal } from './lib/server.mjs';
import {
  launchBrowser, openPage, closePage, poll, waitFor, inboundVideoStats, inboundAudioStats, outboundVideoStats, sfuState, reportMetric, sleep,
} from './lib/browser.mjs';
import { signToken } from './lib/harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, 'node_modules');
const KEY = 'e2e';
const SECRET = 'e2e-client-stacks-secret';
const PYTHON = process.env.PYTHON || 'python3';
const GAUGES_ZERO_WHEN_EMPTY = ['sfu_rooms', 'sfu_participants', 'sfu_rtc_instances', 'sfu_registry_entries', 'sfu_tracks'];
const [WIDTH, HEIGHT] = [640, 360];

// The media source for werift: FFmpeg (PyAV) encodes testsrc2 as VP8 and a
// sine as Opus in real time and sends each as RTP to a loopback UDP port.
// A line "k" on stdin forces the next video frame to be a keyframe.
const MEDIA_SOURCE_PY = String.raw`
import sys, time, threading, fractions, av
vport, aport, W, H = (int(a) for a in sys.argv[1:5])
FPS = 30
force = threading.Event()
def read_stdin():
    for line in sys.stdin:
        if line.startswith('k'):
            force.set()
threading.Thread(target=read_stdin, daemon=True).start()
vin = av.open(f'testsrc2=size={W}x{H}:rate={FPS}', format='lavfi')
ain = av.open('sine=frequency=440:sample_rate=48000', format='lavfi')
vout = av.open(f'rtp://127.0.0.1:{vport}?pkt_size=1200', 'w', format='rtp')
aout = av.open(f'rtp://127.0.0.1:{aport}?pkt_size=1200', 'w', format='rtp')
vs = vout.add_stream('libvpx', rate=FPS, options={
    'deadline': 'realtime', 'cpu-used': '8', 'lag-in-frames': '0', 'auto-alt-ref': '0', 'error-resilient': '1'})
vs.width, vs.height, vs.pix_fmt, vs.bit_rate, vs.gop_size = W, H, 'yuv420p', 800_000, FPS
aus = aout.add_stream('libopus', rate=48000, layout='stereo')
aus.bit_rate = 64_000
resample = av.AudioResampler(format='s16', layout='stereo', rate=48000, frame_size=960)
vframes, aframes = vin.decode(video=0), ain.decode(audio=0)
pending, start, vt, at, n = [], time.monotonic(), 0.0, 0.0, 0
print(f'media source: VP8 {W}x{H}@{FPS} -> 127.0.0.1:{vport}, Opus -> 127.0.0.1:{aport}', flush=True)
while True:
    if vt <= at:
        f = next(vframes).reformat(format='yuv420p')
        f.pts, f.time_base = n, fractions.Fraction(1, FPS)
        n += 1
        if force.is_set():
            force.clear()
            f.pict_type = av.video.frame.PictureType.I
        d = start + vt - time.monotonic()
        if d > 0:
            time.sleep(d)
        for p in vs.encode(f):
            vout.mux(p)
        vt += 1 / FPS
    else:
        while not pending:
            pending.extend(resample.resample(next(aframes)))
        f = pending.pop(0)
        d = start + at - time.monotonic()
        if d > 0:
            time.sleep(d)
        for p in aus.encode(f):
            aout.mux(p)
        at += f.samples / 48000
`;

/** `promise`, or an error naming `what` after `ms`. */
function within(ms, what, promise) {
  let timer;
  const late = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms); });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

const udpSocket = () => new Promise((resolve, reject) => {
  const s = createSocket('udp4');
  s.once('error', reject);
  s.bind(0, '127.0.0.1', () => resolve(s));
});

/**
 * werift publishes VP8 + Opus (from MEDIA_SOURCE_PY) to `whipUrl`. Resolves
 * once the answer is applied, with { pc, resource, postAt, plis, stop() }.
 */
async function weriftPublish(t, whipUrl, token) {
  const video = new MediaStreamTrack({ kind: 'video' });
  const audio = new MediaStreamTrack({ kind: 'audio' });
  const [vsock, asock] = [await udpSocket(), await udpSocket()];
  vsock.on('message', (rtp) => video.writeRtp(rtp));
  asock.on('message', (rtp) => audio.writeRtp(rtp));
  const source = spawn(PYTHON, ['-c', MEDIA_SOURCE_PY, String(vsock.address().port), String(asock.address().port),
    String(WIDTH), String(HEIGHT)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let sourceLog = '';
  source.stdout.on('data', (d) => { sourceLog += d; });
  source.stderr.on('data', (d) => { sourceLog += d; });
  source.stdin.on('error', () => { /* exited */ });
  t.after(() => source.kill('SIGKILL'));

  // Host candidates on loopback only: werift skips internal interfaces
  // unless named (as Chromium needs --allow-loopback-in-peer-connection).
  const pc = new RTCPeerConnection({
    iceServers: [], iceAdditionalHostAddresses: ['127.0.0.1'], bundlePolicy: 'max-bundle',
  });
  t.after(() => within(5000, 'werift close()', pc.close()).catch(() => {}));
  const states = [];
  pc.connectionStateChange.subscribe((s) => states.push(s));
  const vt = pc.addTransceiver(video, { direction: 'sendonly' });
  pc.addTransceiver(audio, { direction: 'sendonly' });
  const plis = { count: 0 };
  vt.sender.onPictureLossIndication.subscribe(() => { plis.count++; source.stdin.write('k\n'); });

  await pc.setLocalDescription(await pc.createOffer());
  const offer = pc.localDescription.sdp;
  const postAt = Date.now();
  const resp = await fetch(whipUrl, {
    method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` }, body: offer,
    signal: AbortSignal.timeout(10000),
  });
  const answer = await resp.text();
  assert.equal(resp.status, 201, `werift's WHIP POST: ${resp.status} ${answer}`);
  const resource = new URL(resp.headers.get('location'), whipUrl).href;
  await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  const stop = async () => {
    const del = await fetch(resource, { method: 'DELETE', headers: { Authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(5000) });
    await within(5000, 'werift close()', pc.close()).catch(() => {});
    source.kill('SIGKILL');
    vsock.close();
    asock.close();
    return del.status;
  };
  return { pc, offer, answer, resource, postAt, plis, states, sourceLog: () => sourceLog, stop };
}

// --- pages of the browser libraries, on an origin of their own ------------

/** Observe every RTCPeerConnection a library makes (for getStats) and the
 * events of every EventSource it opens (by type), changing nothing. */
const RECORD_PCS = `{
  const NativePc = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends NativePc {
    constructor(...args) { super(...args); window.__pcs.push(this); }
  };
  const NativeEs = window.EventSource;
  window.__events = [];
  window.EventSource = class extends NativeEs {
    constructor(...args) {
      super(...args);
      for (const type of ['message', 'active', 'inactive', 'layers', 'viewercount', 'reconnect']) {
        this.addEventListener(type, () => window.__events.push(type));
      }
    }
  };
}`;

const PAGE = (body) => `<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head>
<body><video id="video" autoplay muted playsinline></video>${body}</body></html>`;

/** The Eyevinn player as its users ship it: bundled for the browser. This is
 * the README's quick start, with its URL and token read from the page's query. */
const EYEVINN_ENTRY = `
import { WebRTCPlayer } from '@eyevinn/webrtc-player';
const params = new URLSearchParams(location.search);
const player = new WebRTCPlayer({ video: document.querySelector('video'), type: 'whep', iceServers: [] });
await player.load(new URL(params.get('whep')), 'Bearer ' + params.get('token'));
window.player = player; // player.unload() sends the DELETE
`;

/** The README's quick start pages for whip-whep (the package README's
 * examples, but for the player's ontrack), URL and token from the query. */
const WHIP_WHEP_PUBLISH = `<script type="module">
import { WHIPClient } from './node_modules/whip-whep/whip.js';
const params = new URLSearchParams(location.search);
const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: ${WIDTH}, height: ${HEIGHT} } });
document.querySelector('video').srcObject = stream;
const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: 'sendonly' });
const whip = new WHIPClient();
await whip.publish(pc, params.get('whip'), params.get('token'));
window.whip = whip; // whip.stop() closes the connection and sends the DELETE
</script>`;

const WHIP_WHEP_PLAY = `<script type="module">
import { WHEPClient } from './node_modules/whip-whep/whep.js';
const params = new URLSearchParams(location.search);
const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
pc.addTransceiver('audio');
pc.addTransceiver('video');
// Every track into one stream (the answer puts audio and video in one media
// stream, so the package README's event.streams[0] works as well).
const stream = new MediaStream();
document.querySelector('video').srcObject = stream;
pc.ontrack = (event) => stream.addTrack(event.track);
const whep = new WHEPClient();
window.whepMessages = [];
whep.addEventListener('message', (e) => window.whepMessages.push(e.data));
await whep.view(pc, params.get('whep'), params.get('token'));
window.whep = whep;
</script>`;

/**
 * A static web server on another loopback port: the libraries' pages, from
 * `files` (path -> [contentType, body]), which each subtest sets. (Pages that
 * playwright's page.route fulfils count as public to Chromium, whose Local
 * Network Access then blocks their requests to the server on loopback.)
 */
async function startAppServer(t) {
  const files = {};
  const srv = createServer((req, res) => {
    const file = files[new URL(req.url, 'http://x').pathname];
    res.writeHead(file ? 200 : 404, file ? { 'Content-Type': file[0] } : {});
    res.end(file ? file[1] : '');
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => { srv.closeAllConnections(); srv.close(resolve); }));
  return { origin: `http://127.0.0.1:${srv.address().port}`, files };
}

/** The stream id (msid) of each media line of `sdp`: 'audio:<id> video:<id>'. */
function streamsOf(sdp) {
  return (sdp || '').split(/\r?\nm=/).slice(1).map((section) => {
    const msid = section.match(/a=msid:(\S+)/);
    return `${section.split(' ')[0]}:${msid ? msid[1] : '(none)'}`;
  }).join(' ');
}

/**
 * Keep what `page` asks the server (every origin but `skipOrigin`):
 * page.requests ('METHOD /path status', ids as :id, refusals with their
 * Allow header and body), page.sent ({ method, url, at }: when each left),
 * page.sdp ({ path, offer, answer }: the stream ids of each WHIP/WHEP
 * offer and answer), page.restarts ({ ifMatch, fragment, answer } of each
 * PATCH answered 200: ICE restarts), page.errors (uncaught errors in the page).
 */
function watchRequests(page, skipOrigin = null) {
  Object.assign(page, { requests: [], sent: [], sdp: [], restarts: [], errors: [] });
  const mine = (r) => !skipOrigin || !r.url().startsWith(skipOrigin);
  const short = (url) => new URL(url).pathname.replace(/[0-9a-f]{16,}/g, ':id');
  const answered = new Set();
  page.on('request', (r) => { if (mine(r)) page.sent.push({ method: r.method(), url: r.url(), at: Date.now() }); });
  page.on('response', async (r) => {
    if (!mine(r)) return;
    const req = r.request();
    answered.add(req);
    const i = page.requests.push(`${req.method()} ${short(r.url())} ${r.status()}`) - 1;
    if (r.status() >= 400) {
      const allow = r.headers().allow;
      const body = (await r.text().catch(() => '')).trim().slice(0, 200);
      page.requests[i] += `${allow ? ` (Allow: ${allow})` : ''}${body ? ` "${body}"` : ''}`;
    } else if (req.method() === 'PATCH' && r.status() === 200) {
      page.restarts.push({ ifMatch: req.headers()['if-match'], fragment: req.postData(), answer: await r.text().catch(() => '') });
    } else if (req.method() === 'POST' && r.status() === 201 && /^\/(whip|whep)\/[^/]+$/.test(new URL(r.url()).pathname)) {
      page.sdp.push({ path: short(r.url()), offer: streamsOf(req.postData()), answer: streamsOf(await r.text().catch(() => '')) });
    }
  });
  // A fetch whose body nobody reads ends as ERR_ABORTED after its response: not a failure.
  page.on('requestfailed', (r) => { if (mine(r) && !answered.has(r)) page.requests.push(`${r.method()} ${short(r.url())} failed: ${r.failure()?.errorText}`); });
  page.on('pageerror', (e) => page.errors.push(e.message));
}

/** A page of the app server at `path`, with `files` served there. */
async function openAppPage(browser, app, files, path, label) {
  Object.assign(app.files, files);
  return openPage(browser, `${app.origin}${path}`, label, {
    beforeGoto: async (p) => {
      await p.addInitScript(RECORD_PCS);
      watchRequests(p, app.origin);
    },
  });
}

/** When the page first sent `method` to a URL containing `part` (0 if never). */
const sentAt = (page, method, part) => page.sent.find((r) => r.method === method && r.url.includes(part))?.at ?? 0;

/** What a library's page receives: getStats() of its newest open peer
 * connection and what its <video> element shows. */
const appStats = (page) => page.evaluate(async () => {
  const pc = (window.__pcs || []).filter((p) => p.connectionState !== 'closed').pop();
  if (!pc) return null;
  let v = null;
  let a = null;
  let out = null;
  (await pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video' && (!v || r.packetsReceived > v.packetsReceived)) v = r;
    if (r.type === 'inbound-rtp' && r.kind === 'audio' && (!a || r.packetsReceived > a.packetsReceived)) a = r;
    if (r.type === 'outbound-rtp' && r.kind === 'video' && (!out || (r.framesEncoded || 0) > (out.framesEncoded || 0))) out = r;
  });
  const el = document.querySelector('video');
  return {
    pc: pc.connectionState,
    framesDecoded: v?.framesDecoded || 0, frameWidth: v?.frameWidth || 0, frameHeight: v?.frameHeight || 0,
    audioPackets: a?.packetsReceived || 0, audioSamples: a?.totalSamplesReceived || 0,
    framesEncoded: out?.framesEncoded || 0, sentWidth: out?.frameWidth || 0, sentHeight: out?.frameHeight || 0,
    element: el && { width: el.videoWidth, height: el.videoHeight, frames: el.getVideoPlaybackQuality().totalVideoFrames },
  };
});

async function assertServerEmpty(server, timeoutMs = 10000) {
  let last = null;
  return poll('no rooms, participants, sessions or tracks left', async () => {
    const m = await server.metrics();
    last = Object.fromEntries(GAUGES_ZERO_WHEN_EMPTY.map((g) => [g, metricTotal(m, g)]));
    return GAUGES_ZERO_WHEN_EMPTY.every((g) => metricTotal(m, g) === 0) ? m : false;
  }, timeoutMs, 250).catch((e) => { e.message += ` (gauges: ${JSON.stringify(last)})`; throw e; });
}

test('third-party stacks: werift WHIP from Node, @eyevinn/webrtc-player WHEP, whip-whep WHIP + WHEP', async (t) => {
  const startedAt = Date.now();
  const server = await startServer(t, 'client-stacks', { extraArgs: ['--api-key', KEY, '--api-secret', SECRET] });
  const tok = (room, identity, perms) => signToken(KEY, SECRET, room, identity, perms);
  const browser = await launchBrowser(t);
  const app = await startAppServer(t);
  const rows = [];
  const diag = (page) => ` (requests: ${page.requests.join(', ')}; page errors: ${page.errors.join(' | ') || 'none'})`;
  const firstFrame = (page, what, stats) => waitFor(page, async (p) => {
    const v = await stats(p);
    return v?.framesDecoded > 0 ? { v, at: Date.now() } : false;
  }, 15000, { what, intervalMs: 20 }).catch((e) => { e.message += diag(page); throw e; });

  await t.test('werift publishes VP8 + Opus over WHIP from Node; Chromium plays it', async (st) => {
    const room = 'werift';
    const player = await openPage(browser, `${server.base}/play?room=${room}&autostart=1&token=${tok(room, 'viewer', { subscribe: true })}`,
      'werift-player', { beforeGoto: (p) => watchRequests(p) });
    st.after(() => closePage(player));
    await waitFor(player, async (p) => (await sfuState(p))?.pc === 'connected', 15000, { what: 'player connected' });

    const pub = await weriftPublish(st, `${server.base}/whip/${room}`, tok(room, 'werift', { publish: true }));
    console.log(`werift offer: ${pub.offer.split('\r\n').filter((l) => l.startsWith('a=candidate:')).join(' | ')}; streams ${streamsOf(pub.offer)}`);
    const first = await firstFrame(player, 'Chromium decodes werift\'s video', inboundVideoStats).catch((e) => {
      e.message += ` (werift: ${pub.states}, PLIs ${pub.plis.count}; media source: ${pub.sourceLog().slice(-400)})`;
      throw e;
    });
    const ttff = first.at - pub.postAt;
    reportMetric('werift_whip_post_to_first_decoded_frame_ms', ttff, 'ms');
    await sleep(1500);
    const video = await inboundVideoStats(player);
    const audio = await inboundAudioStats(player);
    console.log(`werift -> Chromium /play: video ${JSON.stringify(video)} audio ${JSON.stringify(audio)}; werift ${pub.states}, ` +
      `PLIs ${pub.plis.count}; /play's WHEP ${JSON.stringify(player.sdp)}`);
    reportMetric('werift_plis_turned_into_keyframes', pub.plis.count);
    assert.ok(video.framesDecoded > first.v.framesDecoded + 20, `about 30 fps keep being decoded (${first.v.framesDecoded} -> ${video.framesDecoded})`);
    assert.equal(`${video.frameWidth}x${video.frameHeight}`, `${WIDTH}x${HEIGHT}`, 'decoded at the size werift sends');
    assert.ok(audio?.packetsReceived > 40, `werift's Opus arrives (${JSON.stringify(audio)})`);
    assert.ok(audio.totalSamplesReceived > 0, 'and is played out');
    const deleted = await pub.stop();
    assert.equal(deleted, 200, 'DELETE of werift\'s resource');
    await waitFor(player, (p) => p.evaluate(() => window.sfu.publisher === 'offline'), 5000, { what: 'player told the publisher left' });
    rows.push(['werift 0.25.2 (Node)', 'WHIP publish -> Chromium /play', 'ok', video.framesDecoded, ttff,
      `VP8 ${video.frameWidth}x${video.frameHeight} + Opus played; ${pub.plis.count} PLI -> keyframe; DELETE ${deleted}`]);
  });

  await t.test('@eyevinn/webrtc-player plays over WHEP in Chromium', async (st) => {
    const room = 'eyevinn';
    const bundle = await build({
      stdin: { contents: EYEVINN_ENTRY, resolveDir: here, sourcefile: 'player.js' },
      bundle: true, format: 'esm', platform: 'browser', write: false, logLevel: 'warning',
    });
    const files = {
      '/player.html': ['text/html', PAGE('<script type="module" src="player.bundle.js"></script>')],
      '/player.bundle.js': ['text/javascript', bundle.outputFiles[0].text],
    };
    const publisher = await openPage(browser,
      `${server.base}/?room=${room}&autostart=1&resolution=${WIDTH}x${HEIGHT}&token=${tok(room, 'camera', { publish: true })}`,
      'eyevinn-publisher', { beforeGoto: (p) => watchRequests(p) });
    st.after(() => closePage(publisher));
    await waitFor(publisher, async (p) => (await sfuState(p))?.pc === 'connected', 15000, { what: 'publisher connected' });

    const q = new URLSearchParams({ whep: `${server.base}/whep/${room}`, token: tok(room, 'eyevinn', { subscribe: true }) });
    const player = await openAppPage(browser, app, files, `/player.html?${q}`, 'eyevinn-player');
    st.after(() => closePage(player));
    const first = await firstFrame(player, 'the Eyevinn player decodes a frame', appStats);
    const ttff = first.at - sentAt(player, 'POST', '/whep/');
    reportMetric('eyevinn_whep_post_to_first_decoded_frame_ms', ttff, 'ms');
    reportMetric('eyevinn_navigation_to_first_decoded_frame_ms', first.at - player.navigatedAt, 'ms');
    await sleep(1500);
    const s = await appStats(player);
    const sent = await outboundVideoStats(publisher);
    console.log(`Eyevinn player: ${JSON.stringify(s)}; publisher sends ${sent.frameWidth}x${sent.frameHeight}; ` +
      `publisher's WHIP ${JSON.stringify(publisher.sdp)}, player's WHEP ${JSON.stringify(player.sdp)}`);
    assert.ok(s.framesDecoded > first.v.framesDecoded + 20, `frames keep being decoded (${first.v.framesDecoded} -> ${s.framesDecoded})`);
    assert.equal(`${s.frameWidth}x${s.frameHeight}`, `${sent.frameWidth}x${sent.frameHeight}`, 'decoded at the size the publisher sends');
    assert.ok(s.element.width > 0 && s.element.frames > 0, `the player's <video> shows it (${JSON.stringify(s.element)})`);
    assert.ok(s.audioPackets > 40 && s.audioSamples > 0, `audio arrives and is played out (${s.audioPackets} packets, ${s.audioSamples} samples)`);
    // Its unload(): DELETE with the same Authorization header, then it closes the peer connection.
    await within(5000, 'unload()', player.evaluate(() => window.player.unload()));
    await waitFor(player, async () => player.requests.some((r) => r.startsWith('DELETE /whep/')), 5000, { what: 'the player\'s DELETE' });
    console.log(`Eyevinn player's requests: ${player.requests.join(', ')}`);
    assert.ok(player.requests.includes('DELETE /whep/eyevinn/:id 200'), `DELETE answered 200${diag(player)}`);
    // The publisher sent audio and video in one stream (one msid); what did the player get?
    const oneStream = (streams) => new Set(streams.split(' ').map((m) => m.split(':')[1])).size === 1;
    const [whipOffer, whepAnswer] = [publisher.sdp[0]?.offer ?? '', player.sdp[0]?.answer ?? ''];
    console.log(`msid: the publisher's audio and video in one stream: ${oneStream(whipOffer)} (${whipOffer}); ` +
      `in the player's WHEP answer: ${oneStream(whepAnswer)} (${whepAnswer})`);
    assert.ok(oneStream(whepAnswer), `the WHEP answer puts audio and video in one stream (${whepAnswer})`);
    const extensions = player.requests.filter((r) => /\/(sse|layer)\b/.test(r));
    reportMetric('eyevinn_whep_extension_requests', extensions.length);
    rows.push(['@eyevinn/webrtc-player 0.13.0 (Chromium)', 'WHEP play <- Chromium publish page', 'ok', s.framesDecoded, ttff,
      `${s.frameWidth}x${s.frameHeight} + audio played; requests: ${player.requests.join(', ')}`]);
  });

  await t.test('whip-whep: its WHIPClient publishes and its WHEPClient plays, in Chromium', async (st) => {
    const room = 'whipwhep';
    const lib = (f) => ['text/javascript', readFileSync(join(modules, 'whip-whep', f), 'utf8')];
    const files = {
      '/publish.html': ['text/html', PAGE(WHIP_WHEP_PUBLISH)],
      '/play.html': ['text/html', PAGE(WHIP_WHEP_PLAY)],
      '/node_modules/whip-whep/whip.js': lib('whip.js'),
      '/node_modules/whip-whep/whep.js': lib('whep.js'),
    };
    const pq = new URLSearchParams({ whip: `${server.base}/whip/${room}`, token: tok(room, 'whip-whep-pub', { publish: true }) });
    const publisher = await openAppPage(browser, app, files, `/publish.html?${pq}`, 'whip-whep-publisher');
    st.after(() => closePage(publisher));
    await waitFor(publisher, async (p) => (await appStats(p))?.framesEncoded > 0, 15000, { what: 'WHIPClient publishing' })
      .catch((e) => { e.message += diag(publisher); throw e; });

    const vq = new URLSearchParams({ whep: `${server.base}/whep/${room}`, token: tok(room, 'whip-whep-view', { subscribe: true }) });
    const player = await openAppPage(browser, app, files, `/play.html?${vq}`, 'whip-whep-player');
    st.after(() => closePage(player));
    const first = await firstFrame(player, 'WHEPClient decodes a frame', appStats);
    const ttff = first.at - sentAt(player, 'POST', '/whep/');
    reportMetric('whip_whep_whep_post_to_first_decoded_frame_ms', ttff, 'ms');
    reportMetric('whip_whep_navigation_to_first_decoded_frame_ms', first.at - player.navigatedAt, 'ms');
    await sleep(1500);
    const s = await appStats(player);
    const pub = await appStats(publisher);
    console.log(`whip-whep player: ${JSON.stringify(s)}; publisher sends ${pub.sentWidth}x${pub.sentHeight}; ` +
      `publisher's WHIP ${JSON.stringify(publisher.sdp)}, player's WHEP ${JSON.stringify(player.sdp)}`);
    assert.ok(s.framesDecoded > first.v.framesDecoded + 20, `frames keep being decoded (${first.v.framesDecoded} -> ${s.framesDecoded})`);
    assert.equal(`${s.frameWidth}x${s.frameHeight}`, `${pub.sentWidth}x${pub.sentHeight}`, 'decoded at the size WHIPClient sends');
    assert.ok(s.element.width > 0 && s.element.frames > 0, `the <video> shows it (${JSON.stringify(s.element)})`);
    assert.ok(s.audioPackets > 40 && s.audioSamples > 0, `audio arrives and is played out (${s.audioPackets} packets, ${s.audioSamples} samples)`);

    // The extensions its Link parsing found: the event stream (opened with
    // the types the Link header lists) and the layer URL.
    const ext = await waitFor(player, (p) => p.evaluate(() => (window.__events.includes('active') ? {
      eventSource: !!window.whep.eventSource, layerUrl: !!window.whep.layerUrl,
      streamEvents: [...new Set(window.__events)], messagesToListeners: window.whepMessages.length,
    } : false)), 5000, { what: 'the event stream says active' }).catch((e) => { e.message += diag(player); throw e; });
    console.log(`whip-whep WHEP extensions: ${JSON.stringify(ext)}`);
    assert.ok(player.requests.includes('POST /whep/whipwhep/:id/sse 201'), `WHEPClient created an event stream${diag(player)}`);
    assert.ok(player.requests.includes('GET /whep/whipwhep/:id/sse/:id 200'), 'and opened it');
    await within(5000, 'selectLayer({})', player.evaluate(() => window.whep.selectLayer({})));
    assert.ok(player.requests.includes('POST /whep/whipwhep/:id/layer 200'), `selectLayer({}) accepted${diag(player)}`);
    await within(5000, 'unselectLayer()', player.evaluate(() => window.whep.unselectLayer()));
    await waitFor(player, async () => player.requests.find((r) => r.startsWith('DELETE /whep/whipwhep/:id/layer')), 5000,
      { what: 'unselectLayer()\'s DELETE answered' });
    assert.ok(player.requests.includes('DELETE /whep/whipwhep/:id/layer 200'), `unselectLayer() accepted${diag(player)}`);

    // ICE restart through the library: PATCH with If-Match: *.
    const restart = await within(5000, 'restart()', player.evaluate(() => window.whep.restart().then(() => 'ok', (e) => `threw: ${e.message}`)));
    assert.ok(player.requests.includes('PATCH /whep/whipwhep/:id 200'), `the ICE restart PATCH answered 200${diag(player)}`);
    const before = (await appStats(player)).framesDecoded;
    await sleep(1000);
    const afterRestart = await appStats(player);
    console.log(`whip-whep restart() PATCH: ${JSON.stringify(player.restarts)}`);
    console.log(`whip-whep restart(): ${restart}; afterwards frames ${before} -> ${afterRestart.framesDecoded}, pc ${afterRestart.pc}`);

    // stop(): the library closes its peer connection, then sends DELETE.
    for (const [page, client] of [[player, 'whep'], [publisher, 'whip']]) {
      await within(5000, `${client}.stop()`, page.evaluate((c) => window[c].stop(), client));
      await waitFor(page, async () => page.requests.find((r) => r.startsWith(`DELETE /${client}/${room}/:id `)), 5000,
        { what: `${client}.stop()'s DELETE answered` });
    }
    const deleteSent = (page, client) => new Date(page.sent.find((r) => r.method === 'DELETE' && new RegExp(`/${client}/${room}/[0-9a-f]+$`).test(r.url)).at).toISOString();
    console.log(`stop() DELETEs sent at ${deleteSent(player, 'whep')} (WHEP), ${deleteSent(publisher, 'whip')} (WHIP); see "participant left" in the server log`);
    console.log(`whip-whep player's requests: ${player.requests.join(', ')}`);
    console.log(`whip-whep publisher's requests: ${publisher.requests.join(', ')}`);
    if (player.errors.length || publisher.errors.length) console.log(`page errors: ${[...player.errors, ...publisher.errors].join(' | ')}`);
    const deletes = [player, publisher].map((p) => p.requests.find((r) => /^DELETE \/wh[ie]p\/[^/]+\/:id /.test(r)));
    rows.push(['whip-whep 1.2.0 (Chromium)', 'WHIPClient publish -> WHEPClient play', 'ok', s.framesDecoded, ttff,
      `${s.frameWidth}x${s.frameHeight} + audio played; ` +
      `events seen by the stream ${ext.streamEvents}, by its listeners ${ext.messagesToListeners}; ` +
      `unselectLayer: ${player.requests.find((r) => r.startsWith('DELETE /whep/whipwhep/:id/layer'))}; restart(): ${restart}; stop(): ${deletes.join(', ')}`]);
  });

  await t.test('nothing is left on the server', async () => {
    await assertServerEmpty(server);
  });

  console.log('\nstack | direction | result | frames decoded | POST to first frame (ms) | notes');
  for (const r of rows) console.log(r.join(' | '));
  reportMetric('client_stacks_test_ms', Date.now() - startedAt, 'ms');
});
