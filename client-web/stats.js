// Live getStats() readout: bitrate, resolution, frame rate, decoded frames,
// loss and audio packets, refreshed every second into a <pre> element.

export function startStatsReadout(getPc, element, direction) {
  let last = null;
  const timer = setInterval(async () => {
    const pc = getPc();
    if (!pc) { element.textContent = ''; last = null; return; }
    const report = await pc.getStats();
    const now = performance.now();
    let video = null;
    let audio = null;
    report.forEach((r) => {
      if (r.type !== `${direction}-rtp`) return;
      if (r.kind === 'video' && (!video || (r.frameWidth || 0) > (video.frameWidth || 0))) video = r;
      if (r.kind === 'audio') audio = r;
    });
    const bytes = (r) => (r ? (direction === 'inbound' ? r.bytesReceived : r.bytesSent) || 0 : 0);
    const total = bytes(video) + bytes(audio);
    const kbps = last ? Math.round(((total - last.total) * 8) / (now - last.time)) : 0;
    last = { total, time: now };
    const lines = [`state       ${pc.connectionState}`, `bitrate     ${kbps} kbit/s`];
    if (video) {
      lines.push(`resolution  ${video.frameWidth || 0}x${video.frameHeight || 0}`);
      lines.push(`fps         ${Math.round(video.framesPerSecond || 0)}`);
      if (direction === 'inbound') {
        lines.push(`decoded     ${video.framesDecoded || 0} frames`);
        lines.push(`lost        ${video.packetsLost || 0} packets, ${video.freezeCount || 0} freezes`);
      } else {
        lines.push(`encoded     ${video.framesEncoded || 0} frames`);
      }
    } else if (direction === 'inbound') {
      lines.push('video       waiting for publisher');
    }
    if (audio) {
      lines.push(direction === 'inbound'
        ? `audio       ${audio.packetsReceived || 0} packets`
        : `audio       ${audio.packetsSent || 0} packets`);
    }
    element.textContent = lines.join('\n');
  }, 1000);
  return () => clearInterval(timer);
}
