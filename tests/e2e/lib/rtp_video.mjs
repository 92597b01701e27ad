// H.264 and H.265 video as RTP, for peers that hand the SFU packets they
// built themselves (libdatachannel tracks without a media handler, as OBS's
// packetizer would): pictures of an Annex B file (split at access unit
// delimiters), packetized as single NAL unit packets and fragmentation
// units (RFC 6184 FU-A, RFC 7798 FU: what libdatachannel's packetizers
// emit), RTP headers with one-byte header extensions (RFC 8285), and the
// receive side: RTP headers parsed, RFC 7798 payloads turned back into an
// Annex B stream a decoder reads.

const START_CODE = Buffer.from([0, 0, 0, 1]);

/** NAL units of an Annex B buffer (start codes removed). */
export function nalUnits(data) {
  const starts = [];
  for (let i = 0; i + 3 <= data.length; i++) {
    if (data[i] === 0 && data[i + 1] === 0 && data[i + 2] === 1) { starts.push(i + 3); i += 2; }
  }
  return starts.map((s, k) => {
    let end = k + 1 < starts.length ? starts[k + 1] - 3 : data.length;
    while (k + 1 < starts.length && end > s && data[end - 1] === 0) end--;
    return data.subarray(s, end);
  }).filter((n) => n.length > 0);
}

const CODECS = {
  h264: { type: (nal) => nal[0] & 0x1f, aud: 9, keyTypes: [5], headerLength: 1 },
  h265: { type: (nal) => (nal[0] >> 1) & 0x3f, aud: 35, keyTypes: [16, 17, 18, 19, 20, 21], headerLength: 2 },
};

/**
 * The pictures of an Annex B buffer, each { nals, key }: the NAL units from
 * one access unit delimiter to the next (delimiters dropped, as WebRTC
 * senders do).
 */
export function pictures(data, codec) {
  const c = CODECS[codec];
  const out = [];
  for (const nal of nalUnits(data)) {
    if (c.type(nal) === c.aud || out.length === 0) {
      out.push({ nals: [], key: false });
      if (c.type(nal) === c.aud) continue;
    }
    const picture = out[out.length - 1];
    picture.nals.push(nal);
    picture.key ||= c.keyTypes.includes(c.type(nal));
  }
  return out.filter((p) => p.nals.length > 0);
}

/** RTP payloads of one picture: a NAL unit per packet, fragmented past `mtu`. */
export function packetize(picture, codec, mtu = 1200) {
  const payloads = [];
  for (const nal of picture.nals) {
    if (nal.length <= mtu) { payloads.push(nal); continue; }
    const h = CODECS[codec].headerLength;
    const body = nal.subarray(h);
    for (let off = 0; off < body.length; off += mtu - h - 1) {
      const chunk = body.subarray(off, off + mtu - h - 1);
      const first = off === 0;
      const last = off + chunk.length >= body.length;
      let header;
      if (codec === 'h264') {
        // FU indicator (F, NRI, type 28), FU header (S, E, type).
        header = Buffer.from([(nal[0] & 0xe0) | 28, (first ? 0x80 : 0) | (last ? 0x40 : 0) | (nal[0] & 0x1f)]);
      } else {
        // Payload header with type 49 (LayerId and TID kept), FU header.
        const type = (nal[0] >> 1) & 0x3f;
        header = Buffer.from([(nal[0] & 0x81) | (49 << 1), nal[1], (first ? 0x80 : 0) | (last ? 0x40 : 0) | type]);
      }
      payloads.push(Buffer.concat([header, chunk]));
    }
  }
  return payloads;
}

/**
 * An RTP packet. `extensions` is a list of [id, Buffer] written as one-byte
 * header extensions (ids 1-14, values 1-16 bytes).
 */
export function rtpPacket({ pt, seq, timestamp, ssrc, marker, extensions = [], payload }) {
  let ext = Buffer.alloc(0);
  if (extensions.length) {
    const items = Buffer.concat(extensions.map(([id, value]) => Buffer.concat([Buffer.from([(id << 4) | (value.length - 1)]), value])));
    const padded = Buffer.concat([items, Buffer.alloc((4 - (items.length % 4)) % 4)]);
    ext = Buffer.alloc(4 + padded.length);
    ext.writeUInt16BE(0xbede, 0);
    ext.writeUInt16BE(padded.length / 4, 2);
    padded.copy(ext, 4);
  }
  const header = Buffer.alloc(12);
  header[0] = 0x80 | (extensions.length ? 0x10 : 0);
  header[1] = (marker ? 0x80 : 0) | pt;
  header.writeUInt16BE(seq & 0xffff, 2);
  header.writeUInt32BE(timestamp >>> 0, 4);
  header.writeUInt32BE(ssrc >>> 0, 8);
  return Buffer.concat([header, ext, payload]);
}

/** The fixed header of an RTP packet and its payload, or null for RTCP or garbage. */
export function parseRtp(buf) {
  if (buf.length < 12 || buf[0] >> 6 !== 2) return null;
  const pt = buf[1] & 0x7f;
  if (pt >= 64 && pt <= 95) return null; // RTCP (RFC 5761 demultiplexing)
  let off = 12 + (buf[0] & 0x0f) * 4;
  if (buf[0] & 0x10) {
    if (buf.length < off + 4) return null;
    off += 4 + buf.readUInt16BE(off + 2) * 4;
  }
  let end = buf.length;
  if (buf[0] & 0x20) end -= buf[buf.length - 1];
  if (off > end) return null;
  return {
    pt, marker: (buf[1] & 0x80) !== 0, seq: buf.readUInt16BE(2), timestamp: buf.readUInt32BE(4), ssrc: buf.readUInt32BE(8),
    payload: buf.subarray(off, end),
  };
}

/**
 * RFC 7798 payloads back to Annex B: single NAL unit packets, aggregation
 * packets (48) and fragmentation units (49), no DONL. A fragmented NAL unit
 * with a missing piece is dropped whole.
 */
export class H265Depacketizer {
  constructor() { this.chunks = []; this.fragment = null; this.lastSeq = null; }

  push({ seq, payload }) {
    const contiguous = this.lastSeq === null || ((this.lastSeq + 1) & 0xffff) === seq;
    this.lastSeq = seq;
    if (payload.length < 3) return;
    const type = (payload[0] >> 1) & 0x3f;
    if (type === 48) {
      for (let off = 2; off + 2 <= payload.length;) {
        const size = payload.readUInt16BE(off);
        this.emit(payload.subarray(off + 2, off + 2 + size));
        off += 2 + size;
      }
    } else if (type === 49) {
      const fu = payload[2];
      if (fu & 0x80) {
        const header = Buffer.from([(payload[0] & 0x81) | ((fu & 0x3f) << 1), payload[1]]);
        this.fragment = [header, payload.subarray(3)];
      } else if (this.fragment && contiguous) {
        this.fragment.push(payload.subarray(3));
      } else {
        this.fragment = null;
      }
      if (fu & 0x40 && this.fragment) { this.emit(Buffer.concat(this.fragment)); this.fragment = null; }
    } else {
      this.emit(payload);
    }
  }

  emit(nal) { this.chunks.push(START_CODE, Buffer.from(nal)); }

  /** The Annex B stream of everything pushed so far. */
  annexB() { return Buffer.concat(this.chunks); }
}
