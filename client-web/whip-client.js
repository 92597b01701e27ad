// WHIP/WHEP client shared by the publish page and the player page.
// One class, one RTCPeerConnection per session: POST the offer (after ICE
// gathering, so no trickle is needed), apply the answer, DELETE on stop.

/** Parse RFC 9725 `Link: <url>; rel="ice-server"; username=..; credential=..` headers. */
export function parseIceServers(linkHeader) {
  if (!linkHeader) return [];
  const servers = [];
  for (const part of linkHeader.split(/,(?=\s*<)/)) {
    const m = part.match(/<([^>]+)>/);
    if (!m || !/rel="?ice-server"?/.test(part)) continue;
    const server = { urls: m[1] };
    const user = part.match(/username="([^"]*)"/);
    const cred = part.match(/credential="([^"]*)"/);
    if (user) server.username = user[1];
    if (cred) server.credential = cred[1];
    servers.push(server);
  }
  return servers;
}

/** The WHEP server-sent-events URL announced in a Link header, if any. */
export function parseEventsLink(linkHeader, base) {
  if (!linkHeader) return null;
  for (const part of linkHeader.split(/,(?=\s*<)/)) {
    const m = part.match(/<([^>]+)>/);
    if (m && /server-sent-events/.test(part)) return new URL(m[1], base).toString();
  }
  return null;
}

/** Get a token: ?token=..., else the server's /dev/token (development mode only). */
export async function obtainToken({ room, identity, publish, subscribe }) {
  const fromUrl = new URLSearchParams(location.search).get('token');
  if (fromUrl) return fromUrl;
  const q = new URLSearchParams({ room, publish: publish ? '1' : '0', subscribe: subscribe ? '1' : '0' });
  if (identity) q.set('identity', identity);
  const resp = await fetch(`/dev/token?${q}`);
  if (resp.status === 404) return null; // production server: the user must paste a token
  if (!resp.ok) throw new Error(`token: ${resp.status} ${await resp.text()}`);
  return (await resp.json()).token;
}

function waitForIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); pc.removeEventListener('icegatheringstatechange', check); resolve(); };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/** A WHIP (publish) or WHEP (play) session. */
export class Session {
  /**
   * @param {{kind: 'whip'|'whep', room: string, token: string, onState?: (s: string) => void,
   *          simulcast?: boolean, maxWidth?: number}} opts
   */
  constructor(opts) {
    this.kind = opts.kind;
    this.simulcast = !!opts.simulcast;
    this.maxWidth = opts.maxWidth || null;
    this.room = opts.room;
    this.token = opts.token;
    this.onState = opts.onState || (() => {});
    this.pc = null;
    this.resource = null;
    this.eventsUrl = null;
  }

  /** Publish `stream` (WHIP) or start receiving (WHEP). Resolves once the answer is applied. */
  async start(stream) {
    const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle' });
    this.pc = pc;
    pc.addEventListener('connectionstatechange', () => this.onState(pc.connectionState));
    if (this.kind === 'whip') {
      for (const track of stream.getTracks()) {
        const init = { direction: 'sendonly', streams: [stream] };
        if (track.kind === 'video' && this.simulcast) {
          // Three layers, listed high to low as libwebrtc expects.
          init.sendEncodings = [
            { rid: 'f', maxBitrate: 2_500_000 },
            { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
            { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
          ];
        }
        pc.addTransceiver(track, init);
      }
    } else {
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
    }
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc, 2000);
    const url = new URL(`/${this.kind}/${encodeURIComponent(this.room)}`, location.href);
    if (this.maxWidth) url.searchParams.set('maxWidth', String(this.maxWidth));
    const resp = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/sdp', authorization: `Bearer ${this.token}` },
      body: pc.localDescription.sdp,
    });
    const body = await resp.text();
    if (resp.status !== 201) {
      pc.close();
      this.pc = null;
      throw new Error(`${resp.status}: ${body.trim() || resp.statusText}`);
    }
    this.resource = new URL(resp.headers.get('location'), url).toString();
    this.eventsUrl = parseEventsLink(resp.headers.get('link'), url);
    const servers = parseIceServers(resp.headers.get('link'));
    if (servers.length) pc.setConfiguration({ iceServers: servers, bundlePolicy: 'max-bundle' });
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    return pc;
  }

  /** End the session (DELETE the resource) and close the connection. */
  async stop({ keepalive = false } = {}) {
    const resource = this.resource;
    this.resource = null;
    if (this.pc) { this.pc.close(); this.pc = null; }
    if (resource) {
      try {
        await fetch(resource, { method: 'DELETE', keepalive, headers: { authorization: `Bearer ${this.token}` } });
      } catch (_) { /* the server also times the session out */ }
    }
    this.onState('closed');
  }
}

/** The object tests read: window.sfu = { pc, state, error, resource }. */
export function exposeForTests() {
  const state = { pc: null, state: 'idle', error: null, resource: null };
  window.sfu = state;
  return state;
}
