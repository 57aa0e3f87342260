#!/usr/bin/env python3
"""bench/score-masks on tiny label videos (FFV1, made with ffmpeg) whose IoUs are worked out by
hand: two classes, a threshold, PGMs of other sizes (nearest resize), raw GRAY8, missing and
unreadable frames, K > 2 with ignored labels, the CSV, and the errors of bad input.

    test_score_masks.py SCORE_MASKS TMPDIR
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

SCORER = None
TMP_ROOT = None

# A 4x4 label: class 1 is the top-right 2x2 block (grey 200; the background is grey 100, so both
# sides of the default threshold 128 are exercised).
LABEL = [
    [100, 100, 200, 200],
    [100, 100, 200, 200],
    [100, 100, 100, 100],
    [100, 100, 100, 100],
]
# The label as class indices.
PERFECT = [[1 if v >= 128 else 0 for v in row] for row in LABEL]
# One background pixel (0,1) predicted as foreground:
#   class 1: intersection 4, union 5 -> 0.8;  class 0: intersection 11, union 12 -> 11/12;
#   frame mIoU = (11/12 + 0.8) / 2 = 0.858333.
ONE_OFF = [
    [0, 1, 1, 1],
    [0, 0, 1, 1],
    [0, 0, 0, 0],
    [0, 0, 0, 0],
]
ONE_OFF_MIOU = (11 / 12 + 0.8) / 2


def pgm(rows):
    height, width = len(rows), len(rows[0])
    return b"P5\n# a comment\n%d %d\n255\n" % (width, height) + bytes(v for r in rows for v in r)


def label_video(path, frames):
    """Writes frames (lists of rows of grey values) as an FFV1 grey video."""
    height, width = len(frames[0]), len(frames[0][0])
    raw = bytes(v for f in frames for r in f for v in r)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "gray",
                    "-s", "%dx%d" % (width, height), "-r", "10", "-i", "-", "-c:v", "ffv1",
                    path], input=raw, check=True)


class ScoreMasks(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=TMP_ROOT)
        self.preds = os.path.join(self.dir, "pred")
        os.mkdir(self.preds)

    def tearDown(self):
        shutil.rmtree(self.dir)

    def write(self, name, data):
        with open(os.path.join(self.preds, name), "wb") as f:
            f.write(data)

    def labels(self, frames):
        path = os.path.join(self.dir, "labels.mkv")
        label_video(path, frames)
        return path

    def score(self, labels, *options):
        run = subprocess.run([SCORER, labels, self.preds, *options], capture_output=True,
                             text=True, check=True)
        lines = run.stdout.splitlines()
        self.assertEqual(len(lines), 1, run.stdout)
        return json.loads(lines[0])

    def assertFigures(self, result, **expected):
        for key, value in expected.items():
            self.assertAlmostEqual(result[key], value, places=4, msg=key)

    def test_two_classes_hand_computed(self):
        labels = self.labels([LABEL])
        self.write("00000.pgm", pgm(ONE_OFF))
        self.assertFigures(self.score(labels), frames=1, labels=1, coverage=1.0,
                           miou=ONE_OFF_MIOU, fg_iou=0.8, fg_frames=1)

    def test_threshold(self):
        # Above every grey level of the label, nothing is foreground: class 0 has intersection
        # 11, union 16; class 1 (5 predicted pixels) intersection 0 -> mIoU 11/32; no fg frame.
        labels = self.labels([LABEL])
        self.write("00000.pgm", pgm(ONE_OFF))
        self.assertFigures(self.score(labels, "--threshold", "250"), miou=11 / 32, fg_iou=0,
                           fg_frames=0)

    def test_other_sizes_are_resized_nearest(self):
        # Frame 0: 2x2 upscaled to 4x4 gives the label exactly. Frame 1: 8x8 downscaled reads the
        # pixels (2y, 2x) only, so foreground on the odd rows and columns is never seen. Frame 2:
        # 4 wide, 2 high: label row y reads row y/2, so row 0 [0,1,1,1] covers rows 0 and 1:
        # class 1 intersection 4 union 6, class 0 intersection 10 union 12.
        labels = self.labels([LABEL] * 3)
        self.write("00000.pgm", pgm([[0, 1], [0, 0]]))
        big = [[PERFECT[y // 2][x // 2] if y % 2 == 0 and x % 2 == 0 else 1 for x in range(8)]
               for y in range(8)]
        self.write("00001.pgm", pgm(big))
        self.write("00002.pgm", pgm([[0, 1, 1, 1], [0, 0, 0, 0]]))
        result = self.score(labels, "--csv", os.path.join(self.dir, "frames.csv"))
        with open(os.path.join(self.dir, "frames.csv")) as f:
            rows = f.read().splitlines()
        self.assertEqual(rows[0], "frame,miou,fg_iou")
        self.assertEqual(rows[1:3], ["0,1.0000,1.0000", "1,1.0000,1.0000"])
        frame2 = (4 / 6 + 10 / 12) / 2
        self.assertEqual(rows[3], "2,%.4f,%.4f" % (frame2, 4 / 6))
        self.assertFigures(result, frames=3, miou=(2 + frame2) / 3, fg_iou=(2 + 4 / 6) / 3)

    def test_missing_and_unreadable_frames_score_zero(self):
        # Five label frames; predictions: 0 perfect (PGM), 1 missing, 2 one pixel off (raw GRAY8
        # of the label size, named with other digits before the frame number), 3 neither PGM nor
        # of the label size, 4 a PGM whose pixels are cut short.
        labels = self.labels([LABEL] * 5)
        self.write("00000.pgm", pgm(PERFECT))
        self.write("cam7-frame00002.gray", bytes(v for r in ONE_OFF for v in r))
        self.write("00003.pgm", b"not a mask")
        self.write("00004.pgm", pgm(PERFECT)[:-3])
        result = self.score(labels, "--csv", os.path.join(self.dir, "frames.csv"))
        # Flips: 1 pixel of 16 changes between the two predictions read; labels never change.
        self.assertFigures(result, frames=2, labels=5, coverage=0.4,
                           miou=(1 + ONE_OFF_MIOU) / 5, fg_iou=(1 + 0.8) / 2, fg_frames=2,
                           pred_flip=1 / 16, label_flip=0)
        with open(os.path.join(self.dir, "frames.csv")) as f:
            rows = f.read().splitlines()
        self.assertEqual(rows[2], "1,0.0000,-1.0000")

    def test_names_without_digits_go_in_name_order(self):
        labels = self.labels([LABEL, LABEL])
        self.write("b.pgm", pgm(PERFECT))     # rank 1: frame 1
        self.write("a.pgm", pgm(ONE_OFF))     # rank 0: frame 0
        self.write(".hidden", pgm(ONE_OFF))   # skipped
        self.assertFigures(self.score(labels), frames=2, miou=(ONE_OFF_MIOU + 1) / 2)

    def test_label_flip(self):
        # The foreground block moves one column left: 4 of 16 pixels change class.
        moved = [[100, 200, 200, 100], [100, 200, 200, 100], [100] * 4, [100] * 4]
        labels = self.labels([LABEL, moved])
        self.assertFigures(self.score(labels), frames=0, labels=2, miou=0, label_flip=4 / 16)

    def test_more_classes_with_ignored_labels(self):
        # K = 3: 255 and 7 (>= K) are ignored whatever is predicted there; a prediction of 9 is
        # no class: it only adds to the union of the true class.
        label = [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 7, 7]]
        pred = [[0, 1, 1, 1], [0, 0, 1, 2], [2, 9, 9, 1], [2, 2, 0, 0]]
        # class 0: 3 right of its 4 pixels, nothing else predicted 0 outside the ignored ones
        # -> 0.75; class 1: 3 right, union 4 + (0,1) = 5 -> 0.6; class 2: 3 right ((2,1) is 9),
        # union 4 + (1,3) = 5 -> 0.6.
        labels = self.labels([label])
        self.write("0.pgm", pgm(pred))
        self.assertFigures(self.score(labels, "--classes", "3"), miou=(0.75 + 0.6 + 0.6) / 3,
                           fg_iou=0.6, fg_frames=1)

    def test_bad_input_says_what_is_wrong(self):
        labels = self.labels([LABEL])
        cases = [
            ([os.path.join(self.dir, "none.mkv"), self.preds], "none.mkv"),
            ([labels, os.path.join(self.dir, "nodir")], "nodir"),
            ([labels, self.preds, "--classes", "1"], "--classes"),
            ([labels, self.preds, "--threshold", "x"], "--threshold"),
            ([labels, self.preds, "--colour", "3"], "--colour"),
            ([labels], "LABELS PRED_DIR"),
        ]
        for args, mention in cases:
            run = subprocess.run([SCORER, *args], capture_output=True, text=True)
            self.assertEqual(run.returncode, 2, args)
            self.assertEqual(run.stdout, "", args)
            self.assertIn(mention, run.stderr, args)


if __name__ == "__main__":
    SCORER, TMP_ROOT = sys.argv[1], sys.argv[2]
    os.makedirs(TMP_ROOT, exist_ok=True)
    unittest.main(argv=sys.argv[:1], verbosity=2)
