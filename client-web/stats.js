// Live getStats() readout: bitrate, resolution, frame rate, decoded frames,
// loss, audio packets and level, refreshed every second into a <pre> element.

/** Reduce a stats report to plain numbers for one direction ('inbound'|'outbound'). */
export function summarize(report, direction) {
  const s = { bytes: 0, video: null, audio: null, layers: 0, videoLost: 0, audioLevel: null };
  report.forEach((r) => {
    if (r.type === 'media-source' && r.kind === 'audio' && direction === 'outbound') s.audioLevel = r.audioLevel ?? null;
    if (r.type !== `${direction}-rtp`) return;
    s.bytes += (direction === 'inbound' ? r.bytesReceived : r.bytesSent) || 0;
    if (r.kind === 'audio') {
      s.audio = r;
      if (direction === 'inbound') s.audioLevel = r.audioLevel ?? null;
    } else if (r.kind === 'video') {
      // A simulcast publisher has one outbound-rtp per layer: show the widest.
      s.layers += 1;
      if (!s.video || (r.frameWidth || 0) > (s.video.frameWidth || 0)) s.video = r;
    }
  });
  s.framesDecoded = (s.video && s.video.framesDecoded) || 0;
  return s;
}

/**
 * Every second, render getPc()'s stats into `element`. `onSample(summary)`
 * (optional) gets each summary, or null when there is no connection.
 * Returns a function that stops the readout.
 */
export function startStatsReadout(getPc, element, direction, onSample = () => {}) {
  let last = null;
  let busy = false;
  const tick = async () => {
    const pc = getPc();
    if (!pc) { element.textContent = ''; last = null; onSample(null); return; }
    if (busy) return;
    busy = true;
    let report;
    try { report = await pc.getStats(); } catch (_) { return; } finally { busy = false; }
    if (pc !== getPc()) return; // stopped or replaced meanwhile
    const s = summarize(report, direction);
    const now = performance.now();
    const kbps = last && last.pc === pc ? Math.max(0, Math.round(((s.bytes - last.bytes) * 8) / (now - last.time))) : 0;
    last = { pc, bytes: s.bytes, time: now };
    element.textContent = render(pc, s, kbps, direction);
    onSample(s);
  };
  const timer = setInterval(tick, 1000);
  return () => clearInterval(timer);
}

function render(pc, s, kbps, direction) {
  const v = s.video;
  const lines = [`state       ${pc.connectionState}`, `bitrate     ${kbps} kbit/s`];
  if (v) {
    lines.push(`resolution  ${v.frameWidth || 0}x${v.frameHeight || 0}${s.layers > 1 ? ` (${s.layers} layers)` : ''}`);
    lines.push(`fps         ${Math.round(v.framesPerSecond || 0)}`);
    if (direction === 'inbound') {
      lines.push(`decoded     ${v.framesDecoded || 0} frames`);
      lines.push(`lost        ${v.packetsLost || 0} video, ${(s.audio && s.audio.packetsLost) || 0} audio packets`);
      lines.push(`freezes     ${v.freezeCount || 0}`);
    } else {
      lines.push(`encoded     ${v.framesEncoded || 0} frames`);
    }
  }
  if (direction === 'inbound' && !s.framesDecoded) lines.push('video       waiting for publisher');
  if (s.audio) {
    const packets = direction === 'inbound' ? s.audio.packetsReceived : s.audio.packetsSent;
    lines.push(`audio       ${packets || 0} packets`);
  }
  if (s.audioLevel !== null) lines.push(`audio level ${meter(s.audioLevel)} ${s.audioLevel.toFixed(2)}`);
  return lines.join('\n');
}

/** A ten-cell text meter for a 0..1 audio level. */
function meter(level) {
  const n = Math.min(10, Math.round(Math.sqrt(Math.max(0, level)) * 10));
  return '█'.repeat(n) + '░'.repeat(10 - n);
}
