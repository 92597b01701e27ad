"""Publish a synthetic stream over WHIP with FFmpeg 8's own WHIP muxer (PyAV),
shaped like OBS's output: H.264 (libx264, tune=zerolatency, no B-frames) +
Opus, no trickle ICE.

usage: ffmpeg_whip.py URL TOKEN SECONDS [WIDTHxHEIGHT] [--profile P] [--bframes] [--verbose]
       ffmpeg_whip.py --describe

  --profile P  H.264 profile: high (OBS's x264 default, the default here),
               main or baseline
  --bframes    B-frames as an OBS profile with bframes=2 makes them (FFmpeg's
               WHIP muxer refuses these itself: shows its error)
  --verbose    FFmpeg's own log at verbose level on stderr
  --describe   print the PyAV/FFmpeg build, the WHIP muxer's options and
               the H.264 encoders and TLS library this wheel has, then exit

Exits 0 after SECONDS of real-time streaming (closing the muxer DELETEs the
session); 2 with FFmpeg's error text on stderr if the server refused the
session or the muxer failed. Needs only the `av` wheel (no numpy).
"""

import glob
import logging
import math
import os
import sys
import time
from fractions import Fraction

import av
import av.logging

H264_ENCODERS = ["libx264", "libopenh264"]  # in order of preference


def h264_encoder() -> str:
    for name in H264_ENCODERS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - not in this build
            continue
    raise SystemExit(f"no software H.264 encoder among {H264_ENCODERS} in this PyAV build")


def whip_options() -> list[tuple[str, str, str, str]]:
    """The WHIP muxer's private options (name, type, default, help), read from
    the wheel's libavformat through its AVClass (PyAV does not expose them)."""
    import ctypes as C

    libs = os.path.join(os.path.dirname(av.__file__), "..", "av.libs")
    fmt = C.CDLL(glob.glob(os.path.join(libs, "libavformat*"))[0])
    util = C.CDLL(glob.glob(os.path.join(libs, "libavutil*"))[0])

    class DefaultVal(C.Union):
        _fields_ = [("i64", C.c_int64), ("dbl", C.c_double), ("str", C.c_char_p)]

    class AVOption(C.Structure):
        _fields_ = [("name", C.c_char_p), ("help", C.c_char_p), ("offset", C.c_int), ("type", C.c_int),
                    ("default_val", DefaultVal), ("min", C.c_double), ("max", C.c_double),
                    ("flags", C.c_int), ("unit", C.c_char_p)]

    class AVOutputFormat(C.Structure):
        _fields_ = [("name", C.c_char_p), ("long_name", C.c_char_p), ("mime_type", C.c_char_p),
                    ("extensions", C.c_char_p), ("audio_codec", C.c_int), ("video_codec", C.c_int),
                    ("subtitle_codec", C.c_int), ("flags", C.c_int), ("codec_tag", C.c_void_p),
                    ("priv_class", C.c_void_p)]

    fmt.av_guess_format.restype = C.POINTER(AVOutputFormat)
    util.av_opt_next.restype = C.POINTER(AVOption)
    util.av_opt_next.argtypes = [C.c_void_p, C.c_void_p]
    # AVOptionType since FFmpeg 7 starts at 1 (FLAGS).
    types = {1: "flags", 2: "int", 3: "int64", 4: "double", 5: "float", 6: "string", 11: "const", 18: "bool"}
    cls = C.c_void_p(fmt.av_guess_format(b"whip", None, None).contents.priv_class)
    out = []
    opt = util.av_opt_next(C.byref(cls), None)
    while opt:
        o = opt.contents
        kind = types.get(o.type, str(o.type))
        default = o.default_val.str if kind == "string" else o.default_val.i64
        out.append((o.name.decode(), kind, repr(default), (o.help or b"").decode()))
        opt = util.av_opt_next(C.byref(cls), opt)
    return out


def describe() -> int:
    print(f"PyAV {av.__version__}, FFmpeg {av.ffmpeg_version_info}")
    print(f"whip muxer: {'whip' in av.formats_available}")
    for name in H264_ENCODERS + ["h264_nvenc", "h264_qsv", "h264_vaapi", "h264_v4l2m2m", "libopus"]:
        try:
            av.codec.Codec(name, "w")
            print(f"encoder {name}: yes")
        except Exception:  # noqa: BLE001
            print(f"encoder {name}: no")
    libs = os.listdir(os.path.join(os.path.dirname(av.__file__), "..", "av.libs"))
    tls = [n.split("-")[0] for n in libs if n.startswith(("libgnutls", "libssl", "libmbedtls"))]
    print(f"TLS library bundled: {tls or 'none found'}")
    try:
        for name, kind, default, help_ in whip_options():
            print(f"  -{name:18} {kind:7} default={default:8} {help_}")
    except Exception as e:  # noqa: BLE001 - introspection is best effort
        print(f"(could not read the muxer's options: {e})")
    return 0


def arg(flag: str, default: str) -> str:
    return sys.argv[sys.argv.index(flag) + 1] if flag in sys.argv else default


def main() -> int:
    if "--describe" in sys.argv:
        return describe()
    url, token, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    size = next((a for a in sys.argv[4:] if "x" in a and not a.startswith("-")), "640x360")
    width, height = (int(v) for v in size.split("x"))
    profile = arg("--profile", "high")
    bframes = "--bframes" in sys.argv
    if "--verbose" in sys.argv:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(name)s: %(message)s")
        av.logging.set_level(av.logging.VERBOSE)
    else:
        av.logging.set_level(av.logging.ERROR)
    fps = 30

    # "authorization": the Bearer token; the muxer is experimental in FFmpeg 8.
    out = av.open(url, mode="w", format="whip", options={"authorization": token, "strict": "experimental"})
    encoder = h264_encoder()
    video = out.add_stream(encoder, rate=fps)
    video.width, video.height = width, height
    video.pix_fmt = "yuv420p"
    video.bit_rate = 800_000
    gop = str(fps * 2)
    if encoder == "libx264":
        opts = {"tune": "zerolatency", "preset": "veryfast", "g": gop, "bf": "2" if bframes else "0"}
        video.profile = profile
    else:  # libopenh264 makes no B-frames (constrained baseline)
        opts = {"g": gop}
    video.options = opts
    audio = out.add_stream("libopus", rate=48000)
    audio.layout = "stereo"
    print(f"publishing {width}x{height}@{fps} {encoder} profile={profile} opts={opts} + opus to {url}", flush=True)

    # Precomputed pictures (moving bars, testsrc-like) keep Python cheap per frame.
    pictures = []
    for shift in range(0, 64, 4):
        row = bytes(((x + shift * 4) * 255 // width) & 0xFF for x in range(width))
        pictures.append(row * height)
    cw, ch = width // 2, height // 2
    chroma_u = bytes((x * 255 // cw) & 0xFF for x in range(cw)) * ch
    chroma_v = bytes([96]) * (cw * ch)

    # One second of a 440 Hz tone, stereo s16, cut into 50 frames of 20 ms.
    samples = 960
    second = bytearray()
    for i in range(48000):
        v = int(8000 * math.sin(2 * math.pi * 440 * i / 48000)).to_bytes(2, "little", signed=True)
        second += v + v
    chunks = [bytes(second[k * samples * 4:(k + 1) * samples * 4]) for k in range(48000 // samples)]

    start = time.monotonic()
    frame_no = audio_no = 0
    while (elapsed := time.monotonic() - start) < seconds:
        while frame_no / fps <= elapsed:
            frame = av.VideoFrame(width, height, "yuv420p")
            frame.planes[0].update(pictures[frame_no % len(pictures)])
            frame.planes[1].update(chroma_u)
            frame.planes[2].update(chroma_v)
            frame.pts = frame_no
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
            frame_no += 1
        while audio_no * samples / 48000 <= elapsed:
            af = av.AudioFrame(format="s16", layout="stereo", samples=samples)
            af.planes[0].update(chunks[audio_no % len(chunks)])
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
