"""Publish a synthetic stream over WHIP with FFmpeg 8's own WHIP muxer (PyAV),
shaped like OBS's output: H.264 (x264, no B-frames, zerolatency) + Opus, no
trickle ICE.

usage: ffmpeg_whip.py URL TOKEN SECONDS [WIDTHxHEIGHT] [--bframes]
(FFmpeg's WHIP muxer rejects B-frames itself: --bframes shows its error.)
Exits 0 after SECONDS of real-time streaming; non-zero with the error if the
server refused the session or the muxer failed.
"""

import math
import sys
import time
from fractions import Fraction

import av


def main() -> int:
    url, token, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    size = next((a for a in sys.argv[4:] if "x" in a and not a.startswith("--")), "640x360")
    width, height = (int(v) for v in size.split("x"))
    bframes = "--bframes" in sys.argv
    fps = 30

    out = av.open(
        url,
        mode="w",
        format="whip",
        options={"authorization": token, "strict": "experimental"},
    )
    video = out.add_stream("libx264", rate=fps)
    video.width, video.height = width, height
    video.pix_fmt = "yuv420p"
    video.bit_rate = 800_000
    x264 = {"tune": "zerolatency", "preset": "veryfast", "g": str(fps * 2)}
    if bframes:
        # B-frames the way an OBS profile with bframes=2 produces them.
        x264 = {"preset": "veryfast", "bf": "2", "g": str(fps * 2)}
        video.profile = "high"
    else:
        x264["bf"] = "0"
        video.profile = "baseline"
    video.options = x264
    audio = out.add_stream("libopus", rate=48000)
    audio.layout = "stereo"

    # A few precomputed pictures (moving bars) keep Python cheap per frame.
    pictures = []
    for shift in range(0, 64, 4):
        row = bytes(((x + shift * 4) * 255 // width) & 0xFF for x in range(width))
        pictures.append(row * height)
    chroma = bytes([128]) * ((width // 2) * (height // 2))

    samples = 960
    tone = [int(8000 * math.sin(2 * math.pi * 440 * i / 48000)) for i in range(48000)]

    start = time.monotonic()
    frame_no = 0
    audio_no = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            break
        while frame_no / fps <= elapsed:
            frame = av.VideoFrame(width, height, "yuv420p")
            frame.planes[0].update(pictures[frame_no % len(pictures)])
            frame.planes[1].update(chroma)
            frame.planes[2].update(chroma)
            frame.pts = frame_no
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
            frame_no += 1
        while audio_no * samples / 48000 <= elapsed:
            af = av.AudioFrame(format="s16", layout="stereo", samples=samples)
            chunk = bytearray()
            for i in range(samples):
                v = tone[(audio_no * samples + i) % 48000].to_bytes(2, "little", signed=True)
                chunk += v + v
            af.planes[0].update(bytes(chunk))
            af.sample_rate = 48000
            af.pts = audio_no * samples
            af.time_base = Fraction(1, 48000)
            for packet in audio.encode(af):
                out.mux(packet)
            audio_no += 1
        time.sleep(0.005)
    out.close()
    print(f"published {frame_no} video frames, {audio_no} audio frames", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # report the muxer's error text to the test
        print(f"ffmpeg whip failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
