// libdatachannel peers (npm node-datachannel, the WebRTC stack inside OBS
// Studio) over WHIP and WHEP, for the interop tests.
//
// obsPublish builds its offer with the calls OBS 32's whip-output.cpp makes
// (audio mid "0" Opus 111 with an ssrc line; video mid "1" at payload type
// 96 with the mid and rtp-stream-id extensions at ids 1 and 2; with several
// encoders, rids "0".."N-1", "0" the full size, and no ssrc lines; nack,
// pli and goog-remb feedback only: no RTX, no transport-cc) and sends what
// OBS's packetizers send: one SSRC per layer (base + 1 + index), every
// packet tagged with mid and rid, single NAL unit packets and FU-A / FU
// fragments. It never answers a keyframe request (neither does OBS): a
// keyframe comes every second from the encoder. The node bindings have no
// addRid(), so the rid and simulcast lines go in through parseSdpLine, in
// the place libdatachannel prints them (sfu/tests/fixtures/obs/SOURCE.md).
//
// whepView plays over WHEP with libdatachannel: one recvonly video line of
// the given codec, every RTP packet handed to the caller.

import { readFileSync } from 'node:fs';
import nodeDataChannel from 'node-datachannel';
import { pictures, packetize, rtpPacket } from './rtp_video.mjs';

const { PeerConnection, Video, Audio } = nodeDataChannel;

const FPS = 30;
const MID_EXT = 1;
const RID_EXT = 2;
/** An Opus packet of 20 ms of silence (TOC 0xf8: CELT fullband 20 ms, mono). */
const OPUS_SILENCE = Buffer.from([0xf8, 0xff, 0xfe]);

const CODEC_CALLS = {
  h264: (v) => v.addH264Codec(96),
  h265: (v) => v.addH265Codec(96),
};

function randomId(n) {
  const chars = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
  return Array.from({ length: n }, () => chars[Math.floor(Math.random() * chars.length)]).join('');
}

/** Resolves when `pc` reaches `state`, rejects after `ms`. */
function connected(pc, ms, what) {
  return new Promise((resolve, reject) => {
    if (pc.state() === 'connected') { resolve(); return; }
    const timer = setTimeout(() => reject(new Error(`${what}: not connected within ${ms} ms (state ${pc.state()})`)), ms);
    pc.onStateChange((s) => {
      if (s === 'connected') { clearTimeout(timer); resolve(); }
      if (s === 'failed' || s === 'closed') { clearTimeout(timer); reject(new Error(`${what}: ${s}`)); }
    });
  });
}

/** `fn` run on the first call only; later calls get the first call's promise. */
function once(fn) {
  let result = null;
  return () => { result ??= fn(); return result; };
}

/** DELETE the session's resource (its status, or the error), then close `pc`. */
async function endSession(pc, resource, token) {
  const del = await fetch(resource, { method: 'DELETE', headers: { Authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(5000) })
    .then((r) => r.status, (e) => e.message);
  pc.close();
  return del;
}

/**
 * `pc`'s offer POSTed to `url` (WHIP or WHEP, `protocol` names it), the
 * answer applied, connected: { offer, answer, resource }. A refused POST
 * closes `pc` and rejects with its status and body.
 */
async function negotiate(pc, url, token, protocol, what) {
  pc.setLocalDescription();
  const offer = pc.localDescription().sdp;
  const resp = await fetch(url, {
    method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` }, body: offer,
    signal: AbortSignal.timeout(10000),
  });
  const answer = await resp.text();
  if (resp.status !== 201) {
    pc.close();
    const e = new Error(`${protocol} POST ${resp.status}: ${answer}`);
    e.status = resp.status;
    e.body = answer;
    throw e;
  }
  const resource = new URL(resp.headers.get('location'), url).href;
  pc.setRemoteDescription(answer, 'answer');
  await connected(pc, 10000, what);
  return { offer, answer, resource };
}

/**
 * Publish `codec` ('h264' | 'h265') over WHIP as OBS does, one layer per
 * Annex B file in `layerFiles` (full size first), looped. Resolves once
 * connected with { offer, answer, resource, sent(), stop() }; a refused POST
 * rejects with its status and body.
 */
export async function obsPublish(whipUrl, token, codec, layerFiles) {
  const layers = layerFiles.map((f) => pictures(readFileSync(f), codec));
  const pc = new PeerConnection('obs', { iceServers: [] });
  const msid = randomId(16);
  const cname = randomId(16);
  const base = 1 + Math.floor(Math.random() * (2 ** 32 - 3 - layers.length));
  const audio = new Audio('0', 'SendOnly');
  audio.addOpusCodec(111);
  audio.addSSRC(base, cname, msid, `${msid}-audio`);
  const audioTrack = pc.addTrack(audio);
  const video = new Video('1', 'SendOnly');
  if (layers.length === 1) video.addSSRC(base + 1, cname, msid, `${msid}-video`);
  video.parseSdpLine(`a=extmap:${MID_EXT} urn:ietf:params:rtp-hdrext:sdes:mid`);
  video.parseSdpLine(`a=extmap:${RID_EXT} urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id`);
  if (layers.length > 1) {
    video.parseSdpLine(`a=msid:${msid} ${msid}-video`);
    layers.forEach((_, i) => video.parseSdpLine(`a=rid:${i} send`));
    video.parseSdpLine(`a=simulcast:send ${layers.map((_, i) => i).join(';')}`);
  }
  CODEC_CALLS[codec](video);
  const videoTrack = pc.addTrack(video);
  const { offer, answer, resource } = await negotiate(pc, whipUrl, token, 'WHIP', 'libdatachannel publisher');

  const counts = { pictures: 0, packets: 0, audio: 0 };
  const seqs = layers.map(() => Math.floor(Math.random() * 65536));
  let audioSeq = 0;
  let n = 0;
  const tsBase = Math.floor(Math.random() * 2 ** 31);
  const sendPicture = () => {
    layers.forEach((pics, i) => {
      const payloads = packetize(pics[n % pics.length], codec);
      payloads.forEach((payload, k) => {
        const extensions = [[MID_EXT, Buffer.from('1')]];
        if (layers.length > 1) extensions.push([RID_EXT, Buffer.from(String(i))]);
        videoTrack.sendMessageBinary(rtpPacket({
          pt: 96, seq: seqs[i]++, timestamp: tsBase + n * (90000 / FPS), ssrc: base + 1 + i,
          marker: k === payloads.length - 1, extensions, payload,
        }));
        counts.packets++;
      });
    });
    counts.pictures++;
    n++;
  };
  const sendAudio = () => {
    audioTrack.sendMessageBinary(rtpPacket({
      pt: 111, seq: audioSeq++, timestamp: tsBase + counts.audio * 960, ssrc: base, marker: false, payload: OPUS_SILENCE,
    }));
    counts.audio++;
  };
  const videoTimer = setInterval(sendPicture, 1000 / FPS);
  const audioTimer = setInterval(sendAudio, 20);
  sendPicture();
  const stop = once(async () => {
    clearInterval(videoTimer);
    clearInterval(audioTimer);
    return endSession(pc, resource, token);
  });
  return { offer, answer, resource, sent: () => ({ ...counts }), stop };
}

/**
 * Play over WHEP with libdatachannel: one recvonly video line offering
 * `codec` ('h264' | 'h265' | 'vp8'); `onRtp(buffer)` gets every packet of
 * it. Resolves once connected with { answer, resource, stop() }; a refused
 * POST rejects with its status and body.
 */
export async function whepView(whepUrl, token, codec, onRtp) {
  const pc = new PeerConnection('viewer', { iceServers: [] });
  const video = new Video('0', 'RecvOnly');
  if (codec === 'vp8') video.addVP8Codec(96); else CODEC_CALLS[codec](video);
  const track = pc.addTrack(video);
  track.onMessage((msg) => onRtp(msg));
  const { answer, resource } = await negotiate(pc, whepUrl, token, 'WHEP', 'libdatachannel viewer');
  // The track is held here: a track object the garbage collector takes
  // calls no onMessage again (packets then arrive and go nowhere).
  const stop = once(() => { track.close(); return endSession(pc, resource, token); });
  return { answer, resource, track, stop };
}

/** Release libdatachannel's threads so the process can exit. */
export function cleanup() {
  nodeDataChannel.cleanup();
}
