"""Publish over WHIP, or play over WHEP, with GStreamer's webrtcbin (PyGObject).

usage: gstreamer_whip.py publish URL TOKEN SECONDS
       gstreamer_whip.py play URL TOKEN SECONDS

publish: videotestsrc ! vp8enc ! rtpvp8pay and audiotestsrc ! opusenc !
  rtpopuspay into a webrtcbin with sendonly transceivers. webrtcbin signs
  DTLS with its default certificate (RSA-2048, what made the server's old
  DTLS stack refuse GStreamer) and offers a=setup:actpass, so it is the
  DTLS client.
play: recvonly VP8 and Opus transceivers; each received stream is decoded
  (decodebin) and its decoded frames counted.

The WHIP/WHEP exchange is done here (Debian's simple-whip-client crashes):
the offer is POSTed once ICE gathering completes (no trickle), with the
token as Bearer; the answer is applied; the session is DELETEd at the end.
On a loopback URL the ICE agent is given 127.0.0.1 (libnice leaves loopback
out of its host candidates, and the e2e namespace has only lo).

Prints one JSON line per second ({"t": ..., "connection": ..., "video": N,
"audio": N}: frames sent or decoded) and a last line {"done": true, ...}.
Exits 0 when the peer connection reached "connected" (and, playing, video
and audio frames were decoded), 1 otherwise, 2 when the server refused the
offer. Needs Debian's python3-gi, python3-gst-1.0, gir1.2-gst-plugins-bad-1.0,
gir1.2-nice-0.1 and the GStreamer base/good/bad/nice/libav plugins: run it
with /usr/bin/python3 (Debian's PyGObject is not in other interpreters).
"""

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("Nice", "0.1")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC, Nice  # noqa: E402

VP8_CAPS = "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000"
OPUS_CAPS = "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,encoding-params=(string)2"

PUBLISH = f"""
webrtcbin name=wb bundle-policy=max-bundle
videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1
  ! videoconvert ! identity name=vcount
  ! vp8enc deadline=1 keyframe-max-dist=30 target-bitrate=400000 cpu-used=8
  ! rtpvp8pay pt=96 ! {VP8_CAPS} ! wb.
audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! identity name=acount
  ! opusenc ! rtpopuspay pt=111 ! {OPUS_CAPS} ! wb.
"""

Direction = GstWebRTC.WebRTCRTPTransceiverDirection


def log(**fields):
    print(json.dumps(fields), flush=True)


class Session:
    def __init__(self, mode, url, token, seconds):
        self.mode, self.url, self.token, self.seconds = mode, url, token, seconds
        self.counts = {"video": 0, "audio": 0}
        self.connection = "new"
        self.connected_once = False
        self.offering = False
        self.location = None
        self.refused = None
        self.started = time.monotonic()
        self.loop = GLib.MainLoop()
        if mode == "publish":
            self.pipe = Gst.parse_launch(PUBLISH)
            self.wb = self.pipe.get_by_name("wb")
            for name, kind in (("vcount", "video"), ("acount", "audio")):
                pad = self.pipe.get_by_name(name).get_static_pad("src")
                pad.add_probe(Gst.PadProbeType.BUFFER, self.count, kind)
        else:
            self.pipe = Gst.Pipeline.new("play")
            self.wb = Gst.ElementFactory.make("webrtcbin", "wb")
            self.wb.set_property("bundle-policy", "max-bundle")
            self.pipe.add(self.wb)
            for caps in (VP8_CAPS, OPUS_CAPS):
                self.wb.emit("add-transceiver", Direction.RECVONLY, Gst.Caps.from_string(caps))
            self.wb.connect("pad-added", self.on_incoming)
        host = urllib.parse.urlparse(url).hostname or ""
        if host.startswith("127.") or host == "localhost":
            # Kept for the session: PyGObject unrefs what this property
            # returns one time too many when its wrapper is collected.
            self.ice = self.wb.get_property("ice-agent")
            self.agent = self.ice.get_property("agent")
            addr = Nice.Address.new()
            addr.set_from_string("127.0.0.1")
            self.agent.add_local_address(addr)
        self.wb.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.wb.connect("notify::ice-gathering-state", self.on_gathering)
        self.wb.connect("notify::connection-state", self.on_connection)
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_error)

    # --- counting ---
    def count(self, _pad, _info, kind):
        self.counts[kind] += 1
        return Gst.PadProbeReturn.OK

    def on_incoming(self, _wb, pad):
        if pad.direction != Gst.PadDirection.SRC:
            return
        decode = Gst.ElementFactory.make("decodebin")
        decode.connect("pad-added", self.on_decoded)
        self.pipe.add(decode)
        decode.sync_state_with_parent()
        pad.link(decode.get_static_pad("sink"))

    def on_decoded(self, _decodebin, pad):
        caps = pad.get_current_caps() or pad.query_caps(None)
        kind = "video" if caps.to_string().startswith("video") else "audio"
        sink = Gst.ElementFactory.make("fakesink")
        sink.set_property("sync", False)
        queue = Gst.ElementFactory.make("queue")
        self.pipe.add(queue)
        self.pipe.add(sink)
        queue.link(sink)
        queue.sync_state_with_parent()
        sink.sync_state_with_parent()
        pad.link(queue.get_static_pad("sink"))
        pad.add_probe(Gst.PadProbeType.BUFFER, self.count, kind)

    # --- signalling ---
    def on_negotiation_needed(self, _wb):
        # Fired once per linked sink pad: one offer, made from the main loop
        # once the pipeline has settled.
        if not self.offering:
            self.offering = True
            GLib.idle_add(self.create_offer)

    def create_offer(self):
        wb = self.wb
        if self.mode == "publish":
            for i in range(2):
                t = wb.emit("get-transceiver", i)
                if t is not None:
                    t.set_property("direction", Direction.SENDONLY)
        wb.emit("create-offer", None, Gst.Promise.new_with_change_func(self.on_offer, wb))
        return False

    def on_offer(self, promise, wb):
        promise.wait()
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None else None
        if offer is None:
            # Seen once in a few dozen runs (webrtcbin 1.22): try again.
            log(event=f"create-offer failed, retrying: {reply.to_string() if reply else None}")
            GLib.timeout_add(100, self.create_offer)
            return
        wb.emit("set-local-description", offer, Gst.Promise.new())

    def on_gathering(self, wb, _pspec):
        if wb.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(self.post_offer)

    def post_offer(self):
        if self.location is not None or self.refused is not None:
            return False
        sdp = self.wb.get_property("local-description").sdp.as_text()
        req = urllib.request.Request(
            self.url,
            data=sdp.encode(),
            method="POST",
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                answer = resp.read().decode()
                self.location = urllib.parse.urljoin(self.url, resp.headers.get("Location") or "")
        except urllib.error.HTTPError as e:
            self.refused = f"{e.code} {e.read().decode(errors='replace')[:200]}"
            log(error=f"offer refused: {self.refused}")
            self.loop.quit()
            return False
        _, msg = GstSdp.SDPMessage.new_from_text(answer)
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        self.wb.emit("set-remote-description", desc, Gst.Promise.new())
        log(event="answer applied", location=self.location)
        return False

    def on_connection(self, wb, _pspec):
        state = wb.get_property("connection-state").value_nick
        self.connection = state
        self.connected_once |= state == "connected"
        log(event="connection-state", state=state)

    def on_error(self, _bus, msg):
        err, debug = msg.parse_error()
        log(error=f"{err.message}", debug=debug)
        self.loop.quit()

    def tick(self):
        t = round(time.monotonic() - self.started, 1)
        log(t=t, connection=self.connection, **self.counts)
        if t >= self.seconds:
            self.loop.quit()
            return False
        return True

    def delete(self):
        if not self.location:
            return
        req = urllib.request.Request(
            self.location, method="DELETE", headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            urllib.request.urlopen(req, timeout=5).close()
        except urllib.error.URLError as e:
            log(event="DELETE failed", error=str(e))

    def run(self):
        self.pipe.set_state(Gst.State.PLAYING)
        GLib.timeout_add(1000, self.tick)
        self.loop.run()
        self.delete()
        self.pipe.set_state(Gst.State.NULL)
        ok = self.connected_once
        if self.mode == "play":
            ok = ok and self.counts["video"] > 0 and self.counts["audio"] > 0
        log(done=True, mode=self.mode, connected=self.connected_once, **self.counts)
        if self.refused is not None:
            return 2
        return 0 if ok else 1


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("publish", "play"):
        print(__doc__, file=sys.stderr)
        return 64
    Gst.init(None)
    mode, url, token, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    return Session(mode, url, token, seconds).run()


if __name__ == "__main__":
    sys.exit(main())
