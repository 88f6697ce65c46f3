"""Tiny datasets in the EXACT official layouts, with real encoded videos / JPEG folders.

Each `make_<dataset>(tmp, ...)` writes the official annotation files and media under
`tmp` and returns `(root, annotations)` — the two paths a dataset config takes. Clips are
a few frames of a vertical bar (class colour) sliding sideways, so frames differ and a
model can even learn something in a few steps. Class names, ids and file names use the
real datasets' quirks (see /work/shared/datasets.md):

    from tests.official_fixtures import make_ucf101
    root, annotations = make_ucf101(tmp_path)
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tempo.data.encode import write_packed_bframes_avi, write_video

# 64 px wide: decord 0.6 mis-sizes its buffer for frames narrower than 64 px (48 px fails)
HEIGHT, WIDTH = 32, 64
FPS = 12
PALETTE = ((230, 40, 40), (40, 200, 40), (40, 80, 230), (230, 200, 40), (200, 40, 200))

K400_CLASSES = (
    "riding a bike",
    "massaging person's head",
    "abseiling",
    "passing American football (in game)",
)
SSV1_CLASSES = (  # head of the real labels file: file order is NOT alphabetical
    "Holding something",
    "Turning something upside down",
    "Turning the camera left while filming something",
    "Stacking number of something",
    "Turning the camera right while filming something",
)
SSV2_CLASSES = (  # (class name, bracketed template, example label, placeholders)
    (
        "Holding something next to something",
        "Holding [something] next to [something]",
        "holding potato next to vicks vaporub bottle",
        ["potato", "vicks vaporub bottle"],
    ),
    (
        "Pushing something from left to right",
        "Pushing [something] from left to right",
        "pushing a pen from left to right",
        ["a pen"],
    ),
    (
        "Pushing something from right to left",
        "Pushing [something] from right to left",
        "pushing a pen from right to left",
        ["a pen"],
    ),
    (
        "Putting number of something onto something",
        "Putting [number of] [something] onto [something]",
        "putting 3 coins onto a book",
        ["3", "coins", "a book"],
    ),
)
# classInd order is the real one (case-insensitive): JumpingJack before JumpRope,
# which Python's sorted() would swap.
UCF_CLASSES = ("ApplyEyeMakeup", "HandstandPushups", "JumpingJack", "JumpRope")
UCF_FILE_CLASS = {"HandstandPushups": "HandStandPushups"}  # the official file-name quirk
UCF_GROUPS = (1, 8, 15)  # split k tests on group UCF_GROUPS[k-1] (g01-07 / g08-14 / g15-21)
HMDB_CLASSES = ("wave", "brush_hair", "cartwheel", "sword_exercise")  # parser sorts them
HMDB_PREFIXES = (
    "April_09",
    "Amazing_Soccer_Freestyle_-_[HD]_(Kinder)",
    "Tom_&_Jerry;_Best!",
    "My home video",
)
HMDB_CODES = ((1, 1, 2), (1, 2, 1), (2, 1, 1), (0, 0, 0))  # per video: code in split 1, 2, 3
DIVING_VOCAB = (
    ["Back", "15som", "05Twis", "FREE"],
    ["Back", "15som", "15Twis", "FREE"],
    ["Forward", "25som", "NoTwis", "PIKE"],
    ["Inward", "25som", "NoTwis", "TUCK"],
)


# -- media -----------------------------------------------------------------------------
def bar_frames(
    num_frames: int, label: int, variant: int = 0, height: int = HEIGHT, width: int = WIDTH
) -> list[np.ndarray]:
    """RGB uint8 frames: a bar of the class colour moving right (speed/phase by variant)."""
    colour = np.array(PALETTE[label % len(PALETTE)], dtype=np.uint8)
    bar = max(width // 8, 2)
    frames = []
    for t in range(num_frames):
        frame = np.full((height, width, 3), 24 + 8 * (variant % 4), dtype=np.uint8)
        x = (3 * variant + t * (2 + variant % 3)) % (width - bar)
        frame[:, x : x + bar] = colour
        frames.append(frame)
    return frames


def write_clip(path: Path, label: int, variant: int = 0, num_frames: int = 8) -> Path:
    """Encode one clip; codec from the suffix (.mp4 h264, .webm vp8, .avi mpeg4 with packed B-frames
    as UCF-101's and HMDB-51's originals come)."""
    frames = bar_frames(num_frames, label, variant)
    if Path(path).suffix == ".avi":
        return write_packed_bframes_avi(Path(path), frames, fps=FPS, gop=4)
    return write_video(path, frames, fps=FPS, gop=4)


def write_frame_folder(
    folder: Path,
    label: int,
    variant: int = 0,
    num_frames: int = 8,
    template: str = "{:05d}.jpg",
    start_index: int = 1,
) -> Path:
    """A folder of JPEG frames named like SSv1 (`00001.jpg` …)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(bar_frames(num_frames, label, variant)):
        Image.fromarray(frame).save(folder / template.format(i + start_index), quality=90)
    return folder


def youtube_id(*seed: object) -> str:
    """A deterministic 11-character YouTube-like id (may start with '-' like real ones)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    digest = hashlib.sha1(repr(seed).encode()).digest()
    return "".join(alphabet[b % 64] for b in digest[:11])


def _interleave(per_class: Sequence[Sequence[tuple]]) -> list[tuple]:
    """Round-robin over classes so the files are not grouped or sorted by class."""
    out = []
    for i in range(max((len(x) for x in per_class), default=0)):
        out.extend(x[i] for x in reversed(per_class) if i < len(x))
    return out


def _check_classes(num_classes: int, available: Sequence, dataset: str) -> None:
    if not 1 <= num_classes <= len(available):
        raise ValueError(f"{dataset} fixture supports 1..{len(available)} classes, got {num_classes}")


# -- Kinetics-400 ------------------------------------------------------------------------
def make_kinetics400(
    tmp: str | Path,
    *,
    num_classes: int = 3,
    train_per_class: int = 2,
    val_per_class: int = 1,
    num_test: int = 2,
    num_frames: int = 8,
    is_cc: bool = False,
    test_labels: bool = False,
    renamed: bool = False,
    layout: str = "class_folders",
) -> tuple[Path, Path]:
    """`<root>/{train,val}/<class_folder>/<id>_<s:06d>_<e:06d>.mp4`, `<root>/test/<clip>.mp4`.

    Annotations: `train.csv`, `validate.csv`, `test.csv` (or `kinetics_{train,val,test}.csv`
    with `renamed`), optional trailing `is_cc` column; the test CSV has no `label` column
    unless `test_labels`. Class names have spaces and a quote (`num_classes=4` adds one
    with parentheses); the CSV rows are not in class order.
    """
    from tempo.data.official.kinetics import class_folder_name, clip_file_name

    _check_classes(num_classes, K400_CLASSES, "kinetics400")
    tmp = Path(tmp)
    root, ann = tmp / "kinetics400", tmp / "kinetics400" / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    names = {"train": "train.csv", "val": "validate.csv", "test": "test.csv"}
    if renamed:
        names = {s: f"kinetics_{s}.csv" for s in names}
    classes = K400_CLASSES[:num_classes]
    split_word = {"train": "train", "val": "val", "test": "test"}
    for subset, per_class in (("train", train_per_class), ("val", val_per_class)):
        rows = _interleave([[(c, v) for v in range(per_class)] for c in range(num_classes)])
        header = ["label", "youtube_id", "time_start", "time_end", "split"] + (["is_cc"] if is_cc else [])
        lines = []
        for c, v in rows:
            yid, start = youtube_id("k400", subset, c, v), 10 * v + 3
            lines.append(
                [classes[c], yid, start, start + 10, split_word[subset]] + ([v % 2] if is_cc else [])
            )
            sub = Path(subset) / class_folder_name(classes[c]) if layout == "class_folders" else Path(subset)
            write_clip(root / sub / clip_file_name(yid, start, start + 10), c, v, num_frames)
        _write_csv(ann / names[subset], header, lines)
    header = (["label"] if test_labels else []) + ["youtube_id", "time_start", "time_end", "split"]
    lines = []
    for i in range(num_test):
        yid, c = youtube_id("k400", "test", i), i % num_classes
        lines.append(([classes[c]] if test_labels else []) + [yid, 0, 10, "test"])
        sub = (
            Path("test") / class_folder_name(classes[c])
            if test_labels and layout == "class_folders"
            else Path("test")
        )
        write_clip(root / sub / clip_file_name(yid, 0, 10), c, i, num_frames)
    _write_csv(ann / names["test"], header, lines)
    return root, ann


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


# -- Something-Something ----------------------------------------------------------------
def make_sthv1(
    tmp: str | Path,
    *,
    num_classes: int = 4,
    train_per_class: int = 2,
    val_per_class: int = 1,
    num_test: int = 2,
    num_frames: int = 8,
) -> tuple[Path, Path]:
    """`<root>/<id>/00001.jpg …`; `something-something-v1-{labels,train,validation,test}.csv`.

    The labels file keeps the real (non-alphabetical) head order; `num_classes=5` adds
    "Turning the camera right …", the left/right partner of class 2.
    """
    _check_classes(num_classes, SSV1_CLASSES, "sthv1")
    tmp = Path(tmp)
    root, ann = tmp / "20bn-something-something-v1", tmp / "sthv1_annotations"
    ann.mkdir(parents=True, exist_ok=True)
    classes = SSV1_CLASSES[:num_classes]
    (ann / "something-something-v1-labels.csv").write_text("".join(n + "\n" for n in classes))
    next_id = 100218
    for subset, per_class in (("train", train_per_class), ("validation", val_per_class)):
        lines = []
        for c, v in _interleave([[(c, v) for v in range(per_class)] for c in range(num_classes)]):
            next_id += 37
            lines.append(f"{next_id};{classes[c]}\n")
            write_frame_folder(root / str(next_id), c, v, num_frames)
        (ann / f"something-something-v1-{subset}.csv").write_text("".join(lines))
    lines = []
    for i in range(num_test):
        next_id += 37
        lines.append(f"{next_id}\n")
        write_frame_folder(root / str(next_id), i % num_classes, i, num_frames)
    (ann / "something-something-v1-test.csv").write_text("".join(lines))
    return root, ann


def make_sthv2(
    tmp: str | Path,
    *,
    num_classes: int = 3,
    train_per_class: int = 2,
    val_per_class: int = 1,
    num_test: int = 2,
    num_frames: int = 8,
) -> tuple[Path, Path]:
    """`<root>/<id>.webm`; `something-something-v2-{labels,train,validation,test}.json`."""
    _check_classes(num_classes, SSV2_CLASSES, "sthv2")
    tmp = Path(tmp)
    root, ann = tmp / "20bn-something-something-v2", tmp / "sthv2_annotations"
    ann.mkdir(parents=True, exist_ok=True)
    classes = SSV2_CLASSES[:num_classes]
    # keys deliberately not in index order: the index VALUE defines the class order
    labels = {name: str(i) for i, (name, *_rest) in reversed(list(enumerate(classes)))}
    (ann / "something-something-v2-labels.json").write_text(json.dumps(labels, indent=1))
    next_id = 78687
    for subset, per_class in (("train", train_per_class), ("validation", val_per_class)):
        entries = []
        for c, v in _interleave([[(c, v) for v in range(per_class)] for c in range(num_classes)]):
            next_id += 101
            _, template, label, placeholders = classes[c]
            entries.append(
                {"id": str(next_id), "label": label, "template": template, "placeholders": placeholders}
            )
            write_clip(root / f"{next_id}.webm", c, v, num_frames)
        (ann / f"something-something-v2-{subset}.json").write_text(json.dumps(entries))
    entries = []
    for i in range(num_test):
        next_id += 101
        entries.append({"id": str(next_id)})
        write_clip(root / f"{next_id}.webm", i % num_classes, i, num_frames)
    (ann / "something-something-v2-test.json").write_text(json.dumps(entries))
    return root, ann


# -- UCF-101 ------------------------------------------------------------------------------
def ucf_file_name(class_name: str, group: int, clip: int) -> str:
    return f"v_{UCF_FILE_CLASS.get(class_name, class_name)}_g{group:02d}_c{clip:02d}.avi"


def make_ucf101(
    tmp: str | Path,
    *,
    num_classes: int = 4,
    clips_per_group: int = 1,
    num_frames: int = 8,
) -> tuple[Path, Path]:
    """`UCF-101/<Class>/v_<Class>_gXX_cYY.avi`; `ucfTrainTestlist/` with CRLF lines.

    Three groups per class (g01, g08, g15): split k tests on one group and trains on the
    other two, so every split has 2×`clips_per_group` train and `clips_per_group` test
    videos per class. `HandstandPushups/` holds `v_HandStandPushups_*` files.
    """
    _check_classes(num_classes, UCF_CLASSES, "ucf101")
    tmp = Path(tmp)
    root, ann = tmp / "UCF-101", tmp / "ucfTrainTestlist"
    ann.mkdir(parents=True, exist_ok=True)
    classes = UCF_CLASSES[:num_classes]
    _write_crlf(ann / "classInd.txt", [f"{i + 1} {name}" for i, name in enumerate(classes)])
    videos: dict[int, list[tuple[int, str]]] = {g: [] for g in UCF_GROUPS}  # group -> (label, relpath)
    for c, name in enumerate(classes):
        for gi, group in enumerate(UCF_GROUPS):
            for clip in range(1, clips_per_group + 1):
                rel = f"{name}/{ucf_file_name(name, group, clip)}"
                write_clip(root / rel, c, gi * clips_per_group + clip, num_frames)
                videos[group].append((c, rel))
    for split, test_group in enumerate(UCF_GROUPS, start=1):
        train = sorted((rel, c) for g, vids in videos.items() if g != test_group for c, rel in vids)
        _write_crlf(ann / f"trainlist0{split}.txt", [f"{rel} {c + 1}" for rel, c in train])
        _write_crlf(ann / f"testlist0{split}.txt", sorted(rel for _, rel in videos[test_group]))
    return root, ann


def _write_crlf(path: Path, lines: list[str]) -> None:
    path.write_bytes("".join(line + "\r\n" for line in lines).encode())


# -- HMDB-51 ------------------------------------------------------------------------------
def hmdb_video_name(prefix: str, class_name: str, k: int) -> str:
    return f"{prefix}_{class_name}_u_nm_np1_fr_goo_{k}.avi"


def make_hmdb51(
    tmp: str | Path,
    *,
    num_classes: int = 3,
    num_frames: int = 8,
) -> tuple[Path, Path]:
    """`hmdb51/<class>/<video>.avi`; `testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt`.

    Four videos per class whose names contain spaces and `[ ] ( ) & ; !`; per split each
    class has 2 train (code 1), 1 test (code 2) and 1 unused (code 0) video.
    """
    _check_classes(num_classes, HMDB_CLASSES, "hmdb51")
    tmp = Path(tmp)
    root, ann = tmp / "hmdb51", tmp / "testTrainMulti_7030_splits"
    ann.mkdir(parents=True, exist_ok=True)
    for name in HMDB_CLASSES[:num_classes]:
        label = sorted(HMDB_CLASSES[:num_classes]).index(name)
        videos = [hmdb_video_name(p, name, k % 2) for k, p in enumerate(HMDB_PREFIXES)]
        for k, video in enumerate(videos):
            write_clip(root / name / video, label, k, num_frames)
        for split in (1, 2, 3):
            lines = "".join(f"{v} {codes[split - 1]} \n" for v, codes in zip(videos, HMDB_CODES, strict=True))
            (ann / f"{name}_test_split{split}.txt").write_text(lines)
    return root, ann


# -- Diving48 -----------------------------------------------------------------------------
def make_diving48(
    tmp: str | Path,
    *,
    num_classes: int = 3,
    train_per_class: int = 2,
    test_per_class: int = 1,
    num_frames: int = 12,
) -> tuple[Path, Path]:
    """`rgb/<vid_name>.mp4`; `Diving48_vocab.json`, `Diving48_V2_{train,test}.json`.

    The first train entry has a sub-range (start_frame=2, end_frame=num_frames-2); the
    others span the whole clip (start_frame=0, end_frame=num_frames).
    """
    _check_classes(num_classes, DIVING_VOCAB, "diving48")
    tmp = Path(tmp)
    root, ann = tmp / "diving48" / "rgb", tmp / "diving48" / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    (ann / "Diving48_vocab.json").write_text(json.dumps([list(v) for v in DIVING_VOCAB[:num_classes]]))
    for subset, per_class in (("train", train_per_class), ("test", test_per_class)):
        entries = []
        for c, v in _interleave([[(c, v) for v in range(per_class)] for c in range(num_classes)]):
            name = f"{youtube_id('diving', subset, c, v)}_{155 + 7 * len(entries):05d}"
            start, end = (2, num_frames - 2) if subset == "train" and not entries else (0, num_frames)
            entries.append({"vid_name": name, "label": c, "start_frame": start, "end_frame": end})
            write_clip(root / f"{name}.mp4", c, v, num_frames)
        (ann / f"Diving48_V2_{subset}.json").write_text(json.dumps(entries))
    return root, ann


BUILDERS = {
    "kinetics400": make_kinetics400,
    "sthv1": make_sthv1,
    "sthv2": make_sthv2,
    "ucf101": make_ucf101,
    "hmdb51": make_hmdb51,
    "diving48": make_diving48,
}


# -- damage ---------------------------------------------------------------------------------
def truncate_file(path: str | Path, keep: float = 0.6) -> Path:
    """Cut a video to its first `keep` fraction of bytes (index/trailer lost: undecodable)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# -- a generic `dataset=list` set (multi-process and GPU runs) ----------------------------------
def make_list_set(tmp: Path) -> tuple[Path, Path]:
    """Train: 7 clips + the 0-byte one (8: two full batches of 4, no padding over 2 processes);
    val = test: 4 clips (2 per class) + the 0-byte one (5: a DistributedSampler would pad one)."""
    root, lists = tmp / "videos", tmp / "lists"
    lists.mkdir(parents=True)
    train, val = [], []
    for label in (0, 1):
        for k in range(6):
            path = write_clip(root / f"c{label}" / f"v{k}.mp4", label, variant=k)
            (train if k < 4 else val).append(f"c{label}/{path.name} {label}\n")
    (root / "broken.mp4").write_bytes(b"")
    train = train[:7] + ["broken.mp4 0\n"]
    val = val + ["broken.mp4 1\n"]
    (lists / "train.txt").write_text("".join(train))
    (lists / "val.txt").write_text("".join(val))
    return root, lists


# -- CPU-sized runs on the fixtures --------------------------------------------------------------
NUM_CLASSES = {"k400": 3, "sthv1": 5, "sthv2": 3, "ucf101": 4, "hmdb51": 3, "diving48": 3}
# a CPU-sized training run on these fixtures (test_datasets_cli, test_data_dir)
TINY_RUN = [
    "backbone=resnet_tiny",
    "logger=none",
    "callbacks=none",
    "dataset.num_segments=4",
    "dataset.input_size=32",
    "dataset.batch_size=3",
    "dataset.num_workers=0",
    "dataset.datamodule.pin_memory=false",
    "trainer.max_steps=2",
    "trainer.limit_train_batches=2",
    "trainer.max_epochs=1",
    "trainer.num_sanity_val_steps=0",
    "++trainer.enable_progress_bar=false",
    "++trainer.enable_model_summary=false",
]


def sizes(name: str) -> list[str]:
    """Scale the paper resizes down to the 32×64 fixtures."""
    if name in ("sthv1", "sthv2"):
        return ["dataset.frame_height=36", "dataset.frame_width=64"]
    return ["dataset.short_side=36"]
