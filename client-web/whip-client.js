// WHIP/WHEP client shared by the publish page and the player page.
// One class, one RTCPeerConnection per session: POST the offer (after ICE
// gathering, so no trickle is needed), apply the answer, DELETE on stop.

/** Value of `name=".."` (or unquoted `name=..`) in one Link header entry. */
function linkParam(part, name) {
  const m = part.match(new RegExp(`;\\s*${name}\\s*=\\s*(?:"([^"]*)"|([^;,\\s]*))`, 'i'));
  return m ? (m[1] ?? m[2]) : null;
}

/** The entries of a (comma-joined) Link header: [{ url, part }]. */
function linkEntries(linkHeader) {
  if (!linkHeader) return [];
  return linkHeader.split(/,(?=\s*<)/).flatMap((part) => {
    const m = part.match(/<([^>]+)>/);
    return m ? [{ url: m[1], part }] : [];
  });
}

/** Parse RFC 9725 `Link: <url>; rel="ice-server"; username=..; credential=..` headers. */
export function parseIceServers(linkHeader) {
  const servers = [];
  for (const { url, part } of linkEntries(linkHeader)) {
    if (linkParam(part, 'rel') !== 'ice-server') continue;
    const server = { urls: url };
    const username = linkParam(part, 'username');
    const credential = linkParam(part, 'credential');
    if (username !== null) server.username = username;
    if (credential !== null) server.credential = credential;
    servers.push(server);
  }
  return servers;
}

/** The URL of the WHEP extension `rel` announced in a Link header, if any. */
export function parseExtensionLink(linkHeader, base, rel) {
  for (const { url, part } of linkEntries(linkHeader)) {
    if ((linkParam(part, 'rel') || '') === rel) return new URL(url, base).toString();
  }
  return null;
}
const SSE_EXTENSION = 'urn:ietf:params:whep:ext:core:server-sent-events';
const LAYER_EXTENSION = 'urn:ietf:params:whep:ext:core:layer';

/** Get a token: ?token=..., else the server's /dev/token (development mode only).
 *  Resolves to null when the server has no /dev/token: the user must paste one. */
export async function obtainToken({ room, identity, publish, subscribe }) {
  const fromUrl = new URLSearchParams(location.search).get('token');
  if (fromUrl) return fromUrl;
  const q = new URLSearchParams({ room, publish: publish ? '1' : '0', subscribe: subscribe ? '1' : '0' });
  if (identity) q.set('identity', identity);
  const resp = await fetch(`/dev/token?${q}`);
  if (resp.status === 404) return null;
  if (!resp.ok) throw new Error(`token: ${resp.status}: ${(await resp.text()).trim() || resp.statusText}`);
  return (await resp.json()).token;
}

/** Map pc.connectionState onto the page states 'connecting'|'connected'|'failed'|'closed'. */
export function pageState(connectionState) {
  if (connectionState === 'new' || connectionState === 'disconnected') return 'connecting';
  return connectionState;
}

/** Resolve when ICE gathering completes, or after `timeoutMs` with what exists so far. */
function waitForIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); pc.removeEventListener('icegatheringstatechange', check); resolve(); };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

const DEPENDENCY_DESCRIPTOR = 'https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension';

/** `sdp` with the dependency descriptor extension on every video section
 *  that lacks it, at an id no section uses (unchanged when none is free). */
function withDependencyDescriptor(sdp) {
  if (sdp.includes(DEPENDENCY_DESCRIPTOR)) return sdp;
  const used = new Set([...sdp.matchAll(/^a=extmap:(\d+)/gm)].map((m) => Number(m[1])));
  const id = [...Array(14).keys()].map((i) => i + 1).find((i) => !used.has(i));
  if (!id) return sdp;
  return sdp.split(/(?=^m=)/m).map((section) => (section.startsWith('m=video')
    ? section.replace(/(^a=mid:.*\r?\n)/m, `$1a=extmap:${id} ${DEPENDENCY_DESCRIPTOR}\r\n`)
    : section)).join('');
}

/** Put `mimeType` first among the video codecs `transceiver` offers (its
 *  retransmission format stays listed); unchanged where the browser lacks it. */
function preferCodec(transceiver, mimeType) {
  const codecs = RTCRtpSender.getCapabilities?.('video')?.codecs || [];
  const wanted = codecs.filter((c) => c.mimeType.toLowerCase() === mimeType.toLowerCase());
  if (!wanted.length || !transceiver.setCodecPreferences) return;
  transceiver.setCodecPreferences([...wanted, ...codecs.filter((c) => !wanted.includes(c))]);
}

/** A WHIP (publish) or WHEP (play) session. */
export class Session {
  /**
   * @param {{kind: 'whip'|'whep', room: string, token: string, onState?: (s: string) => void,
   *          simulcast?: boolean, maxWidth?: number, scalabilityMode?: string,
   *          videoCodec?: string, dependencyDescriptor?: boolean}} opts
   *  scalabilityMode: send one scalable video stream (e.g. 'L3T3_KEY');
   *  videoCodec: the codec to prefer for video (a mimeType, 'video/VP9').
   *  dependencyDescriptor (WHEP, default true): add the AV1 dependency
   *  descriptor to the offer when the browser leaves it out.
   *  onState receives pc.connectionState values, and 'closed' after stop().
   */
  constructor(opts) {
    this.kind = opts.kind;
    this.simulcast = !!opts.simulcast;
    this.maxWidth = opts.maxWidth || null;
    this.scalabilityMode = opts.scalabilityMode || null;
    this.videoCodec = opts.videoCodec || null;
    this.dependencyDescriptor = opts.dependencyDescriptor !== false;
    this.room = opts.room;
    this.token = opts.token;
    this.onState = opts.onState || (() => {});
    this.pc = null;
    this.resource = null;
    this.eventsUrl = null;
    this.layerUrl = null;
  }

  /** Publish `stream` (WHIP) or start receiving (WHEP). Resolves to the
   *  RTCPeerConnection once the answer is applied; on failure everything is
   *  torn down and the error carries the server's reason ("401: token expired"). */
  async start(stream) {
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    this.pc = pc;
    pc.addEventListener('connectionstatechange', () => { if (this.pc === pc) this.onState(pc.connectionState); });
    try {
      this.addTransceivers(pc, stream);
      const offer = await pc.createOffer();
      // Chromium offers the AV1 dependency descriptor on sending video
      // lines only, but its receiver needs it to decode scalable AV1 (it
      // tells where each layer's frame ends, which layers were dropped).
      if (this.kind === 'whep' && this.dependencyDescriptor) offer.sdp = withDependencyDescriptor(offer.sdp);
      await pc.setLocalDescription(offer);
      await waitForIceGathering(pc, 2000);
      const url = new URL(`/${this.kind}/${encodeURIComponent(this.room)}`, location.href);
      if (this.maxWidth) url.searchParams.set('maxWidth', String(this.maxWidth));
      let resp;
      try {
        resp = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/sdp', authorization: `Bearer ${this.token}` },
          body: pc.localDescription.sdp,
        });
      } catch (e) {
        throw new Error(`cannot reach the server (${e.message})`);
      }
      const body = await resp.text();
      if (resp.status !== 201) throw new Error(`${resp.status}: ${body.trim() || resp.statusText}`);
      const where = resp.headers.get('location');
      if (!where) throw new Error('the server sent no Location header');
      this.resource = new URL(where, url).toString();
      const link = resp.headers.get('link');
      this.eventsUrl = parseExtensionLink(link, url, SSE_EXTENSION);
      this.layerUrl = parseExtensionLink(link, url, LAYER_EXTENSION);
      // Candidates are already gathered (no trickle), so advertised STUN/TURN
      // servers only take effect on a later ICE restart; keep them anyway.
      const servers = parseIceServers(link);
      if (servers.length) pc.setConfiguration({ iceServers: servers, bundlePolicy: 'max-bundle' });
      await pc.setRemoteDescription({ type: 'answer', sdp: body });
      return pc;
    } catch (e) {
      await this.stop({ silent: true });
      throw e;
    }
  }

  addTransceivers(pc, stream) {
    if (this.kind === 'whep') {
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
      return;
    }
    for (const track of stream.getTracks()) {
      const init = { direction: 'sendonly', streams: [stream] };
      if (track.kind === 'video' && this.simulcast) {
        // Three layers, listed high to low as libwebrtc expects.
        init.sendEncodings = [
          { rid: 'f', maxBitrate: 2_500_000 },
          { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
          { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
        ];
      } else if (track.kind === 'video' && this.scalabilityMode) {
        init.sendEncodings = [{ scalabilityMode: this.scalabilityMode }];
      }
      const transceiver = pc.addTransceiver(track, init);
      if (track.kind === 'video' && this.videoCodec) preferCodec(transceiver, this.videoCodec);
    }
  }

  /** Open a server-sent event stream of `names` (the WHEP extension: POST
   *  the list, then listen at the Location); null when the server has none. */
  async openEvents(names) {
    if (!this.eventsUrl) return null;
    const resp = await fetch(this.eventsUrl, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(names),
    });
    const where = resp.status === 201 && resp.headers.get('location');
    return where ? new EventSource(new URL(where, this.eventsUrl).toString()) : null;
  }

  /** Ask for a video layer (the WHEP layer extension): { rid, spatialLayerId,
   *  temporalLayerId, maxWidth, ... }; {} hands the choice back to the server.
   *  Resolves to null on success, else the server's reason. */
  async selectLayer(selection) {
    if (!this.layerUrl) return 'the server offers no layer selection';
    const resp = await fetch(this.layerUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${this.token}` },
      body: JSON.stringify(selection),
    });
    return resp.ok ? null : `${resp.status}: ${(await resp.text()).trim()}`;
  }

  /** End the session (DELETE the resource) and close the connection.
   *  `keepalive` lets the DELETE outlive the page (pagehide). */
  async stop({ keepalive = false, silent = false } = {}) {
    const { resource, pc } = this;
    this.resource = null;
    this.pc = null;
    if (resource) {
      const deleted = fetch(resource, { method: 'DELETE', keepalive, headers: { authorization: `Bearer ${this.token}` } })
        .catch(() => { /* the server also times the session out */ });
      // Close only after the answer (bounded; not when the page is going away):
      // on DTLS close the server may drop the session first and answer 404.
      if (!keepalive) await Promise.race([deleted, new Promise((r) => setTimeout(r, 2000))]);
    }
    if (pc) pc.close();
    if (!silent) this.onState('closed');
  }
}

/** The object tests read: window.sfu = { pc, state, error, resource }. */
export function exposeForTests() {
  const state = { pc: null, state: 'idle', error: null, resource: null };
  window.sfu = state;
  return state;
}

/**
 * Show a page's state and errors in `stateEl` / `errorEl` and mirror them
 * into `t` (window.sfu). `setState` takes a page state or a
 * pc.connectionState (shown as is, e.g. "disconnected").
 */
export function statusView(t, stateEl, errorEl) {
  function setState(s) {
    t.state = pageState(s);
    stateEl.textContent = s;
    stateEl.className = `state ${t.state}`;
    if (s === 'failed' && !t.error) showError('connection failed (ICE/DTLS): is the media port reachable?');
  }
  function showError(e) {
    t.error = String(e.message || e);
    errorEl.textContent = t.error;
    setState('failed');
  }
  return { setState, showError };
}
