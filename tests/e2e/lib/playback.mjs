// What a viewer sees, sampled inside its page: a timer there reads the
// player's inbound video (and audio) getStats() every `intervalMs`, so the
// samples keep their spacing whatever Node and playwright are doing, and
// requestVideoFrameCallback records when the <video> element presents a
// frame. Node reads the samples afterwards and measures windows of them
// (the longest stretch without a newly decoded frame, freezes, loss).
// Used by layer_switch, uplink_loss and capped_viewer.

/** Start sampling the page's window.sfu.pc (a player). Idempotent. */
export async function startSampler(page, intervalMs = 100) {
  await page.evaluate((ms) => {
    if (window.sampler) return;
    const s = { samples: [], presented: [], timer: null, busy: false };
    window.sampler = s;
    // One row: [Date.now(), framesDecoded, frameWidth, freezeCount,
    // totalFreezesDuration (s), packetsLost, packetsReceived, nackCount,
    // pliCount, framesDropped, keyFramesDecoded, audio packetsReceived,
    // audio packetsLost, retransmittedPacketsReceived (RTX padding probes
    // count too)].
    s.timer = setInterval(async () => {
      const pc = window.sfu && window.sfu.pc;
      if (!pc || s.busy) return;
      s.busy = true;
      try {
        const best = {};
        (await pc.getStats()).forEach((r) => {
          if (r.type !== 'inbound-rtp') return;
          // An old SSRC's stats may linger: keep the one that received last.
          const seen = best[r.kind];
          if (!seen || (r.lastPacketReceivedTimestamp || 0) > (seen.lastPacketReceivedTimestamp || 0)) best[r.kind] = r;
        });
        const v = best.video;
        const a = best.audio || {};
        if (v) {
          const n = (r, k) => r[k] || 0;
          s.samples.push([Date.now(), n(v, 'framesDecoded'), n(v, 'frameWidth'), n(v, 'freezeCount'),
            n(v, 'totalFreezesDuration'), n(v, 'packetsLost'), n(v, 'packetsReceived'), n(v, 'nackCount'),
            n(v, 'pliCount'), n(v, 'framesDropped'), n(v, 'keyFramesDecoded'), n(a, 'packetsReceived'), n(a, 'packetsLost'),
            n(v, 'retransmittedPacketsReceived')]);
        }
      } finally { s.busy = false; }
    }, ms);
    // Frames the <video> element presents (the picture a user sees).
    const video = document.querySelector('video');
    if (video && video.requestVideoFrameCallback) {
      const onFrame = (now, meta) => {
        s.presented.push([Date.now(), meta.width, meta.presentedFrames]);
        video.requestVideoFrameCallback(onFrame);
      };
      video.requestVideoFrameCallback(onFrame);
    }
  }, intervalMs);
}

const COLUMNS = ['t', 'framesDecoded', 'frameWidth', 'freezeCount', 'freezeSeconds', 'packetsLost', 'packetsReceived',
  'nackCount', 'pliCount', 'framesDropped', 'keyFramesDecoded', 'audioPacketsReceived', 'audioPacketsLost',
  'rtxReceived'];

/** The samples so far: { samples: [{t, framesDecoded, ...}], presented: [[t, width, n]] }. */
export async function readSamples(page) {
  const raw = await page.evaluate(() => (window.sampler
    ? { samples: window.sampler.samples, presented: window.sampler.presented } : { samples: [], presented: [] }));
  return {
    samples: raw.samples.map((row) => Object.fromEntries(COLUMNS.map((c, i) => [c, row[i]]))),
    presented: raw.presented,
  };
}

/**
 * Figures of the samples in [from, to] (Date.now() values): longest stretch
 * without a newly decoded frame (ms, resolution = the sampling interval),
 * longest gap between presented frames (ms, when the page reports them),
 * and deltas of the counters. Null when fewer than two samples fall inside.
 */
export function measureWindow({ samples, presented }, from, to) {
  const inside = samples.filter((s) => s.t >= from && s.t <= to);
  if (inside.length < 2) return null;
  const first = inside[0];
  const last = inside[inside.length - 1];
  let lastProgress = first.t;
  let lastDecoded = first.framesDecoded;
  let longestStallMs = 0;
  let stallEndedAt = null;
  let longestSampleGapMs = 0;
  let prevT = first.t;
  for (const s of inside) {
    longestSampleGapMs = Math.max(longestSampleGapMs, s.t - prevT);
    prevT = s.t;
    if (s.framesDecoded > lastDecoded) {
      if (s.t - lastProgress > longestStallMs) { longestStallMs = s.t - lastProgress; stallEndedAt = s.t; }
      lastDecoded = s.framesDecoded;
      lastProgress = s.t;
    }
  }
  // A stall still going on at the end of the window counts too.
  if (last.t - lastProgress > longestStallMs) { longestStallMs = last.t - lastProgress; stallEndedAt = null; }
  const shown = presented.filter(([t]) => t >= from && t <= to);
  let longestPresentGapMs = null;
  if (shown.length >= 2) {
    longestPresentGapMs = 0;
    for (let i = 1; i < shown.length; i++) longestPresentGapMs = Math.max(longestPresentGapMs, shown[i][0] - shown[i - 1][0]);
    longestPresentGapMs = Math.max(longestPresentGapMs, shown[0][0] - from, to - shown[shown.length - 1][0]);
  }
  const d = (k) => last[k] - first[k];
  return {
    ms: last.t - first.t,
    longestStallMs,
    stallEndedAt,
    longestSampleGapMs,
    longestPresentGapMs,
    decoded: d('framesDecoded'),
    freezes: d('freezeCount'),
    freezeSeconds: Number(d('freezeSeconds').toFixed(3)),
    lost: d('packetsLost'),
    received: d('packetsReceived'),
    nacks: d('nackCount'),
    plis: d('pliCount'),
    dropped: d('framesDropped'),
    keyframes: d('keyFramesDecoded'),
    audioReceived: d('audioPacketsReceived'),
    audioLost: d('audioPacketsLost'),
    rtxReceived: d('rtxReceived'),
    widths: [...new Set(inside.map((s) => s.frameWidth))],
    endWidth: last.frameWidth,
  };
}

/** Times (Date.now()) at which the decoded width changed: [{ t, from, to }]. */
export function widthChanges({ samples }, from = 0, to = Infinity) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const [a, b] = [samples[i - 1], samples[i]];
    if (b.t < from || b.t > to) continue;
    if (a.frameWidth && b.frameWidth && a.frameWidth !== b.frameWidth) out.push({ t: b.t, from: a.frameWidth, to: b.frameWidth });
  }
  return out;
}

/**
 * What the server decides for one subscriber, sampled every second from the
 * admin API: [ms since start, downlink estimate, ...row(video line)], by
 * default row = [target rid, width flowing, paused, switches up, switches
 * down]. stop() ends it and returns them; last() is the latest video line.
 */
const DECISION_ROW = (video) => [video?.target, video?.layer?.width, video?.paused, video?.switchesUp, video?.switchesDown];
export function sampleDecisions(base, room, identity, auth, { everyMs = 1000, row = DECISION_ROW } = {}) {
  const decisions = [];
  let latest = null;
  const start = Date.now();
  const timer = setInterval(async () => {
    try {
      const r = await fetch(`${base}/api/rooms/${room}/participants/${identity}/subscriptions`,
        { headers: { authorization: auth }, signal: AbortSignal.timeout(2000) });
      const v = await r.json();
      const video = (v.subscriptions || []).find((x) => x.kind === 'video');
      if (video) latest = video;
      decisions.push([Date.now() - start, v.downlinkEstimateBps, ...row(video)]);
    } catch (e) { decisions.push([Date.now() - start, `error: ${e.message}`]); }
  }, everyMs);
  let stopped = false;
  return {
    stop: () => { if (!stopped) { stopped = true; clearInterval(timer); } return decisions; },
    last: () => latest,
  };
}

/** Stretches of at least `minMs` without a newly decoded frame in [from, to]: [{ at, ms }]. */
export function stalls({ samples }, from, to, minMs) {
  const inside = samples.filter((s) => s.t >= from && s.t <= to);
  const out = [];
  let lastProgress = inside.length ? inside[0].t : 0;
  let lastDecoded = inside.length ? inside[0].framesDecoded : 0;
  for (const s of inside) {
    if (s.framesDecoded > lastDecoded) {
      if (s.t - lastProgress >= minMs) out.push({ at: lastProgress, ms: s.t - lastProgress });
      lastDecoded = s.framesDecoded;
      lastProgress = s.t;
    }
  }
  return out;
}
