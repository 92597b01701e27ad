"""Encode a test pattern into an Annex B elementary stream file, as OBS's
encoders hand their frames to libdatachannel: H.264 (libx264, Constrained
Baseline 42e01f, the profile OBS always signals) or H.265 (libx265), no
B-frames, an access unit delimiter before every picture (so a reader can
split pictures without parsing slices), parameter sets repeated before every
keyframe, a keyframe every second.

    python3 encode_annexb.py {h264|h265} WIDTH HEIGHT SECONDS OUT_FILE

Prints one line: the codec, size and number of pictures written.
"""
import fractions
import sys

import av

FPS = 30


def main():
    codec, width, height, seconds, out_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    if codec == 'h264':
        encoder, fmt = 'libx264', 'h264'
        options = {'preset': 'ultrafast', 'tune': 'zerolatency', 'profile': 'baseline', 'level': '3.1',
                   'x264-params': f'keyint={FPS}:min-keyint={FPS}:scenecut=0:bframes=0:aud=1:repeat-headers=1'}
    elif codec == 'h265':
        encoder, fmt = 'libx265', 'hevc'
        options = {'preset': 'ultrafast', 'tune': 'zerolatency',
                   'x265-params': f'keyint={FPS}:min-keyint={FPS}:scenecut=0:bframes=0:aud=1:repeat-headers=1:log-level=error'}
    else:
        sys.exit(f'unknown codec {codec!r}: h264 or h265')
    source = av.open(f'testsrc2=size={width}x{height}:rate={FPS}', format='lavfi')
    out = av.open(out_path, 'w', format=fmt)
    stream = out.add_stream(encoder, rate=FPS, options=options)
    stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
    stream.bit_rate = width * height * 3  # ~2.7 Mbit/s at 720p, ~170 kbit/s at 180p
    pictures = 0
    total = int(seconds * FPS)
    for n, frame in enumerate(source.decode(video=0)):
        if n >= total:
            break
        frame = frame.reformat(format='yuv420p')
        frame.pts, frame.time_base = n, fractions.Fraction(1, FPS)
        # The source's frames come marked as intra pictures, which libx264
        # takes as forced keyframes: let the encoder choose.
        frame.pict_type = av.video.frame.PictureType.NONE
        for packet in stream.encode(frame):
            out.mux(packet)
            pictures += 1
    for packet in stream.encode(None):
        out.mux(packet)
        pictures += 1
    out.close()
    print(f'{codec} {width}x{height} {pictures} pictures -> {out_path}', flush=True)


if __name__ == '__main__':
    main()
