#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_element (corpus/element/): every property of distillseg with a
valid and an invalid value, settings that start and settings start must refuse, teacher URLs good
and bad, and caps of every sink format and output mode, odd sizes and absurd ones, in the form
fuzz_element.c reads (byte 0: path, byte 1: output mode, then text). Run it again after changing
that form; the files are committed."""
import os
import sys

PROPERTIES = {
    "set": ["teacher-url=http://127.0.0.1:8000", "teacher-model=isnet", "teacher-timeout=100",
            "teacher-timeout=99", "teacher-encoding=jpeg", "teacher-encoding=png",
            "teacher-max-side=16384", "teacher-inflight=0", "teacher-confidence=0.25",
            "teacher-confidence=nan", "num-classes=255", "inference-width=8192",
            "checkpoint-interval=4294967295", "min-stride=100000", "max-stride=1",
            "accuracy-threshold=1e-300", "max-updates=1001", "learning-rate=1e-7",
            "learning-rate=-inf", "optimizer=sgd", "optimizer=1", "train=no", "sync=TRUE",
            "output=overlay", "output=2", "threads=256", "train-threads=3", "train-nice=19",
            "stats-interval=0", "checkpoint=/nonexistent", "teacher-token-file=",
            "teacher-ca-file=x.pem", "name=fuzz", "no-such-property=1", "=", "train"],
    "start": ["min-stride=9\nmax-stride=8", "inference-width=64", "inference-height=64",
              "inference-width=64\ninference-height=48", "num-classes=3",
              "teacher-url=http://127.0.0.1:1,https://[::1]:8443/",
              "teacher-url=ftp://example.com", "teacher-url=http://user:secret@h:1",
              "teacher-url=http://h:1/?q=1", "teacher-url=http://h:1/#top", "teacher-url= , ",
              "teacher-url=http://h:1\nteacher-model=a/b c", "teacher-url=http://h:1\nsync=true",
              "output=mask\ntrain=false\nmax-updates=0"],
}

FORMATS = ["RGB", "BGR", "RGBx", "BGRx", "xRGB", "xBGR", "RGBA", "BGRA", "I420", "NV12"]
CAPS = ["video/x-raw,format=%s,width=%d,height=%d,framerate=30/1" % (f, w, h)
        for f in FORMATS for (w, h) in ((16, 12), (3, 5))]
CAPS += [
    "video/x-raw,format=RGB,width=1,height=1,framerate=0/1",
    "video/x-raw,format=I420,width=1,height=4096,framerate=30/1",
    "video/x-raw,format=NV12,width=4096,height=1,framerate=30/1,pixel-aspect-ratio=3/1",
    "video/x-raw,format=RGB,width=100000,height=100000,framerate=30/1",
    "video/x-raw,format=BGRx,width=2147483647,height=2,framerate=30/1",
    "video/x-raw,format=GRAY8,width=16,height=16,framerate=30/1",
    "video/x-raw(memory:DMABuf),format=RGB,width=16,height=16,framerate=30/1",
    "video/x-raw,format=RGB,width=16,height=16",
    "video/x-raw,format=RGB,width=0,height=16,framerate=30/1",
    "video/x-raw,format={RGB,I420},width=[1,64],height=16,framerate=30/1",
    "video/x-raw,format=I420,width=16,height=16,framerate=30/1,interlace-mode=interleaved",
    "video/x-raw,format=I420,width=16,height=16,framerate=30/1,colorimetry=bt709,chroma-site=jpeg",
    "video/x-raw; audio/x-raw,rate=48000",
    "ANY", "EMPTY", "video/x-raw,format=RGB,width=16,height=16,framerate=30/1,views=2",
]


def main(folder):
    os.makedirs(folder, exist_ok=True)
    for old in os.listdir(folder):
        os.unlink(os.path.join(folder, old))
    seeds = []
    for path, texts in PROPERTIES.items():
        for text in texts:
            seeds.append(bytes([2 if path == "start" else 0, 0]) + text.encode())
    seeds.append(b"\0\0" + "\n".join(PROPERTIES["set"]).encode())
    for mode in range(3):
        for caps in CAPS:
            seeds.append(bytes([1, mode]) + caps.encode())
    for i, seed in enumerate(seeds):
        with open(os.path.join(folder, "seed-%03d" % i), "wb") as f:
            f.write(seed)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "element"))
