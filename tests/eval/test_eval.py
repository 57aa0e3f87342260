#!/usr/bin/env python3
"""bench/eval on a short clip of vtest (its first frames, scaled down and re-encoded, with the
labels cut and scaled to match), with the replay teacher over loopback HTTP and the real
pipeline: the JSON lines are well-formed and agree with each other.

    test_eval.py SOURCE_ROOT BUILD_ROOT TMPDIR
"""
import json
import os
import shutil
import subprocess
import sys
import unittest

VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
FRAMES, WIDTH, HEIGHT = 40, 192, 144
KEYS = ("run", "video", "miou", "fg_iou", "teacher_fraction", "updates", "student_ms")

SOURCE = BUILD = TMP = None


def make_clip(directory):
    video = os.path.join(directory, "clip.mkv")
    labels = os.path.join(directory, "labels.mkv")
    scale = "scale=%d:%d" % (WIDTH, HEIGHT)
    for src, dst, pix in ((VTEST, video, "yuv420p"),
                          (os.path.join(SOURCE, "data", "vtest", "labels.mkv"), labels, "gray")):
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", src, "-frames:v", str(FRAMES),
                        "-vf", scale, "-pix_fmt", pix, "-c:v", "ffv1", dst], check=True)
    return video, labels


class Eval(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = os.path.join(TMP, "clip")
        shutil.rmtree(cls.dir, ignore_errors=True)
        os.makedirs(cls.dir)
        cls.video, cls.labels = make_clip(cls.dir)

    def eval(self, *options, expect_exit=0):
        argv = [os.path.join(SOURCE, "bench", "eval"), self.video, self.labels, "--build-dir",
                BUILD, "--out", os.path.join(TMP, "out"),
                "--set", "inference-width=%d" % WIDTH, "--set", "inference-height=%d" % HEIGHT,
                *options]
        run = subprocess.run(argv, capture_output=True, text=True, timeout=240)
        self.assertEqual(run.returncode, expect_exit, run.stderr)
        return run, [json.loads(line) for line in run.stdout.splitlines()]

    def check_line(self, line, run):
        for key in KEYS:
            self.assertIn(key, line)
        self.assertEqual(line["run"], run)
        self.assertEqual(line["video"], self.video)
        self.assertEqual(line["label_frames"], FRAMES)
        self.assertEqual(line["frames_scored"], FRAMES)  # a mask for every frame
        for key in ("miou", "fg_iou", "teacher_fraction", "miou_second_half"):
            self.assertGreaterEqual(line[key], 0)
            self.assertLessEqual(line[key], 1)
        self.assertAlmostEqual(line["teacher_fraction"],
                               line["teacher_queries"] / line["frames"], places=5)

    def test_sync_runs_and_baselines(self):
        _, lines = self.eval()
        self.assertEqual([l["run"] for l in lines], ["student", "hold", "pretrained-only",
                                                     "scratch"])
        student, hold, pretrained, scratch = lines
        for line in lines:
            self.check_line(line, line["run"])
            self.assertEqual(line["mode"], "sync")
        self.assertEqual(student["frames"], FRAMES)
        self.assertGreater(student["teacher_queries"], 0)
        self.assertEqual(student["teacher_errors"], 0)
        self.assertGreater(student["updates"], 0)
        self.assertGreater(student["student_ms"], 0)
        # hold asks the teacher every k = frames / queries frames: the student's fraction.
        self.assertEqual(hold["hold_every"], round(FRAMES / student["teacher_queries"]))
        self.assertEqual(hold["teacher_queries"], -(-FRAMES // hold["hold_every"]))
        self.assertIsNone(hold["student_ms"])
        # never trained, no teacher
        self.assertEqual((pretrained["teacher_queries"], pretrained["updates"]), (0, 0))
        self.assertGreater(scratch["teacher_queries"], 0)
        self.assertGreater(scratch["updates"], 0)

    def test_hold_every_frame_is_the_labels(self):
        _, lines = self.eval("--runs", "hold", "--hold-every", "1")
        self.assertEqual(len(lines), 1)
        self.check_line(lines[0], "hold")
        self.assertEqual((lines[0]["miou"], lines[0]["fg_iou"], lines[0]["teacher_fraction"],
                          lines[0]["miou_second_half"]), (1.0, 1.0, 1.0, 1.0))

    def test_keep_frames_keeps_each_frames_score(self):
        csv = os.path.join(TMP, "out", "clip-hold-k4-frames.csv")
        if os.path.exists(csv):
            os.remove(csv)
        _, lines = self.eval("--runs", "hold", "--hold-every", "4", "--keep-frames")
        with open(csv) as f:
            rows = [line.split(",") for line in f.read().splitlines()[1:]]
        self.assertEqual([int(r[0]) for r in rows], list(range(FRAMES)))
        per_frame = [float(r[1]) for r in rows]
        # Frames 0, 4, 8, ... show their own labels; the JSON line's means are of these rows.
        self.assertEqual(per_frame[::4], [1.0] * (FRAMES // 4))
        self.assertAlmostEqual(lines[0]["miou"], sum(per_frame) / FRAMES, places=3)
        late = per_frame[FRAMES // 2:]
        self.assertAlmostEqual(lines[0]["miou_second_half"], sum(late) / len(late), places=3)

    def test_async_with_a_late_teacher(self):
        # 250 ms at 10 fps, the element holding frames back 100 ms for it: a teacher mask shows
        # 2 frames after its own.
        _, lines = self.eval("--async", "--latency-ms", "250", "--runs", "student,hold",
                             "--set", "teacher-wait=100")
        student, hold = lines
        for line in lines:
            self.check_line(line, line["run"])
            self.assertEqual((line["mode"], line["latency_ms"]), ("async", 250))
        self.assertEqual(hold["hold_delay_frames"], 2)
        self.assertLess(hold["miou"], 1.0)

    def test_sweep_plots_student_and_hold(self):
        out = os.path.join(TMP, "out")
        png = os.path.join(out, "eval-clip.png")
        if os.path.exists(png):
            os.remove(png)
        _, lines = self.eval("--sweep", "0.5,0.95")
        students = [l for l in lines if l["run"] == "student"]
        holds = [l for l in lines if l["run"] == "hold"]
        self.assertEqual([l["accuracy_threshold"] for l in students], [0.5, 0.95])
        self.assertEqual([l["hold_every"] for l in holds], [1, 2, 4, 8, 16, 32, 64])
        for line in lines:
            self.check_line(line, line["run"])
        self.assertEqual(holds[0]["miou"], 1.0)
        self.assertEqual(holds[-1]["teacher_queries"], 1)
        # Holding a mask longer never helps on this moving scene.
        self.assertGreaterEqual(holds[0]["miou"], holds[3]["miou"])
        self.assertGreaterEqual(holds[3]["miou"], holds[-1]["miou"])
        with open(png, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_bad_input_says_what_is_wrong(self):
        for options, mention in ((["--runs", "student,nope"], "nope"),
                                 (["--set", "sync=false"], "sync"),
                                 (["--set", "oops"], "PROP=VALUE"),
                                 (["--build-dir", os.path.join(TMP, "nobuild")], "build first")):
            run, lines = self.eval(*options, expect_exit=2)
            self.assertEqual(lines, [])
            self.assertIn(mention, run.stderr)


if __name__ == "__main__":
    SOURCE, BUILD, TMP = sys.argv[1], sys.argv[2], sys.argv[3]
    if not os.path.exists(VTEST) or not shutil.which("node"):
        print("skipped: needs %s (opencv-doc) and node (scripts/setup-deps)" % VTEST)
        sys.exit(77)
    os.makedirs(TMP, exist_ok=True)
    unittest.main(argv=sys.argv[:1], verbosity=2)
