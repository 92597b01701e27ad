"""LiveKit's Python SDK (PyPI `livekit`, its Rust core unmodified) as a
meeting member, headless, with synthetic media.

usage: livekit_python.py publish URL TOKEN SECONDS
       livekit_python.py subscribe URL TOKEN SECONDS PUBLISHER_IDENTITY

publish: joins, publishes a 640x360 video track of a solid colour (RGB
  200, 40, 40) at 30 fps with simulcast, and a 440 Hz tone (48 kHz mono);
  echoes every data packet it receives back to its sender as
  "echo:<text>"; leaves after SECONDS.
subscribe: joins without publishing, decodes the publisher's video and
  audio for up to SECONDS, sends the publisher a data packet "ping" and
  waits for "echo:ping", then prints one JSON line with what it saw:
  {"width","height","frames","rgb":[r,g,b],"audio_frames","audio_rms",
  "echo_from"} and exits 0 (or 2 with the reason on stderr).

Connects with no ICE servers and the SDK's default signalling (one peer
connection, /rtc/v1), or with LIVEKIT_SIGNALLING=dual its two peer
connection mode (/rtc).
"""

import asyncio
import json
import math
import os
import sys

from livekit import rtc

WIDTH, HEIGHT = 640, 360
COLOUR = (200, 40, 40)


def options() -> rtc.RoomOptions:
    return rtc.RoomOptions(
        auto_subscribe=True,
        rtc_config=rtc.RtcConfiguration(ice_servers=[]),
        single_peer_connection=os.environ.get("LIVEKIT_SIGNALLING") != "dual",
    )


async def publish(url: str, token: str, seconds: float) -> None:
    room = rtc.Room()

    @room.on("data_received")
    def on_data(packet: rtc.DataPacket) -> None:
        if packet.participant is None:
            return
        reply = b"echo:" + packet.data
        asyncio.ensure_future(
            room.local_participant.publish_data(
                reply, reliable=True, destination_identities=[packet.participant.identity]
            )
        )

    await room.connect(url, token, options())
    video = rtc.VideoSource(WIDTH, HEIGHT)
    vtrack = rtc.LocalVideoTrack.create_video_track("camera", video)
    await room.local_participant.publish_track(
        vtrack, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=True)
    )
    audio = rtc.AudioSource(48000, 1)
    atrack = rtc.LocalAudioTrack.create_audio_track("microphone", audio)
    await room.local_participant.publish_track(
        atrack, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    pixel = bytes((*COLOUR, 255))
    frame = rtc.VideoFrame(WIDTH, HEIGHT, rtc.VideoBufferType.RGBA, pixel * (WIDTH * HEIGHT))

    async def video_loop() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while loop.time() - start < seconds:
            video.capture_frame(frame)
            n += 1
            await asyncio.sleep(max(0.0, start + n / 30 - loop.time()))

    async def audio_loop() -> None:
        samples = 480  # 10 ms
        t = 0
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() - start < seconds:
            pcm = bytearray()
            for i in range(samples):
                v = int(8000 * math.sin(2 * math.pi * 440 * (t + i) / 48000))
                pcm += v.to_bytes(2, "little", signed=True)
            t += samples
            await audio.capture_frame(rtc.AudioFrame(bytes(pcm), 48000, 1, samples))

    await asyncio.gather(video_loop(), audio_loop())
    await room.disconnect()


async def subscribe(url: str, token: str, seconds: float, publisher: str) -> int:
    room = rtc.Room()
    seen = {"width": 0, "height": 0, "frames": 0, "rgb": None, "audio_frames": 0,
            "audio_rms": 0.0, "echo_from": None}
    echoed = asyncio.Event()
    tasks = []

    async def read_video(track: rtc.Track) -> None:
        async for event in rtc.VideoStream(track):
            f = event.frame
            seen["frames"] += 1
            seen["width"], seen["height"] = f.width, f.height
            if seen["frames"] % 15 == 0:
                rgba = f.convert(rtc.VideoBufferType.RGBA).data
                mid = (f.height // 2 * f.width + f.width // 2) * 4
                seen["rgb"] = list(rgba[mid:mid + 3])

    async def read_audio(track: rtc.Track) -> None:
        async for event in rtc.AudioStream(track, sample_rate=48000, num_channels=1):
            seen["audio_frames"] += 1
            data = event.frame.data  # int16 samples
            if data.format != "h":
                data = data.cast("B").cast("h")
            if len(data):
                rms = math.sqrt(sum(s * s for s in data) / len(data))
                seen["audio_rms"] = max(seen["audio_rms"], rms)

    @room.on("track_subscribed")
    def on_track(track: rtc.Track, _pub, participant: rtc.RemoteParticipant) -> None:
        if participant.identity != publisher:
            return
        reader = read_video if track.kind == rtc.TrackKind.KIND_VIDEO else read_audio
        tasks.append(asyncio.ensure_future(reader(track)))

    @room.on("data_received")
    def on_data(packet: rtc.DataPacket) -> None:
        if packet.data == b"echo:ping" and packet.participant is not None:
            seen["echo_from"] = packet.participant.identity
            echoed.set()

    await room.connect(url, token, options())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline and not (seen["frames"] > 30 and seen["audio_frames"] > 50):
        await asyncio.sleep(0.1)
    await room.local_participant.publish_data(b"ping", reliable=True, destination_identities=[publisher])
    try:
        await asyncio.wait_for(echoed.wait(), timeout=max(1.0, deadline - loop.time()))
    except asyncio.TimeoutError:
        pass
    print(json.dumps(seen), flush=True)
    for t in tasks:
        t.cancel()
    await room.disconnect()
    return 0


def main() -> int:
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    role, url, token, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    if role == "publish":
        asyncio.run(publish(url, token, seconds))
        return 0
    if role == "subscribe" and len(sys.argv) == 6:
        return asyncio.run(subscribe(url, token, seconds, sys.argv[5]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
