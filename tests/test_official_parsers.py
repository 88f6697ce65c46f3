"""Official-annotation parsers, left/right flip pairs and the frame-count manifest.

Each dataset is built once per session (tiny real videos / JPEGs in the official layout,
see tests/official_fixtures.py); tests that corrupt annotations work on a copy.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from tempo.data import sources as sources_mod
from tempo.data.flip import flip_label_map, left_right_pairs, swap_left_right
from tempo.data.manifest import FrameManifest, default_manifest_dir, probe_num_frames
from tempo.data.official import (
    PARSERS,
    class_folder_name,
    parse_diving48,
    parse_hmdb51,
    parse_kinetics400,
    parse_official,
    parse_sthv1,
    parse_sthv2,
    parse_ucf101,
)
from tempo.data.records import AnnotationError, VideoRecord, check_labels, read_list
from tempo.data.sources import DecodeError
from tests.official_fixtures import (
    DIVING_VOCAB,
    HMDB_CLASSES,
    K400_CLASSES,
    SSV1_CLASSES,
    SSV2_CLASSES,
    UCF_CLASSES,
    make_diving48,
    make_hmdb51,
    make_kinetics400,
    make_sthv1,
    make_sthv2,
    make_ucf101,
    write_clip,
)


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("official")
    return {
        "kinetics400": make_kinetics400(base / "k400"),
        "kinetics400_cc": make_kinetics400(base / "k400cc", is_cc=True, renamed=True, test_labels=True),
        "kinetics400_flat": make_kinetics400(base / "k400flat", layout="flat", num_classes=2),
        "sthv1": make_sthv1(base / "sthv1"),
        "sthv2": make_sthv2(base / "sthv2"),
        "ucf101": make_ucf101(base / "ucf"),
        "hmdb51": make_hmdb51(base / "hmdb"),
        "diving48": make_diving48(base / "diving"),
    }


def copy_annotations(built, name: str, tmp_path: Path) -> tuple[Path, Path]:
    root, ann = built[name]
    dst = tmp_path / ann.name
    shutil.copytree(ann, dst)
    return root, dst


def append_line(path: Path, line: str) -> int:
    """Append a line; returns its 1-based line number."""
    text = path.read_text()
    if text and not text.endswith("\n"):
        text += "\n"
    path.write_text(text + line + "\n")
    return len(text.splitlines()) + 1


def assert_all_exist(records: list[VideoRecord]) -> None:
    missing = [r.path for r in records if not os.path.exists(r.path)]
    assert not missing, missing


# -- generic -----------------------------------------------------------------------------
def test_every_parser_registered_and_subsets_validated(built):
    assert set(PARSERS) == {"kinetics400", "sthv1", "sthv2", "ucf101", "hmdb51", "diving48"}
    root, ann = built["ucf101"]
    with pytest.raises(ValueError, match="unknown subset 'validation'"):
        parse_ucf101(ann, root, "validation")
    with pytest.raises(ValueError, match="unknown dataset"):
        parse_official("ucf", ann, root, "train")


@pytest.mark.parametrize("name", ["kinetics400", "sthv1", "sthv2", "ucf101", "hmdb51", "diving48"])
def test_missing_annotations_folder_named(name, tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset.annotations"):
        parse_official(name, tmp_path / "nowhere", tmp_path, "train")


# -- Kinetics-400 --------------------------------------------------------------------------
def test_k400_train_sorted_classes_and_class_folders(built):
    root, ann = built["kinetics400"]
    parsed = parse_kinetics400(ann, root, "train")
    assert parsed.class_names == sorted(K400_CLASSES[:3])
    assert parsed.class_names == ["abseiling", "massaging person's head", "riding a bike"]
    assert len(parsed.records) == 6
    assert_all_exist(parsed.records)
    for rec in parsed.records:
        path = Path(rec.path)
        assert path.parent.name == class_folder_name(parsed.class_names[rec.label])
        assert path.parent.parent == root / "train"
    assert sorted(r.label for r in parsed.records) == [0, 0, 1, 1, 2, 2]
    assert Path(parsed.records[0].path).name.endswith("_000003_000013.mp4")


def test_k400_class_folder_name():
    assert class_folder_name("massaging person's head") == "massaging_persons_head"
    assert class_folder_name("passing American football (in game)") == "passing_American_football_(in_game)"


def test_k400_val_uses_train_class_list_and_test_without_labels(built):
    root, ann = built["kinetics400"]
    val = parse_kinetics400(ann, root, "val")
    assert val.class_names == sorted(K400_CLASSES[:3])
    assert sorted(r.label for r in val.records) == [0, 1, 2]
    assert all(Path(r.path).parent.parent == root / "val" for r in val.records)
    assert_all_exist(val.records)
    test = parse_kinetics400(ann, root, "test")
    assert [r.label for r in test.records] == [-1, -1]
    assert all(Path(r.path).parent == root / "test" for r in test.records)
    assert_all_exist(test.records)


def test_k400_is_cc_column_renamed_csvs_and_labelled_test(built):
    root, ann = built["kinetics400_cc"]
    assert (ann / "kinetics_train.csv").read_text().splitlines()[0].endswith(",is_cc")
    for subset, n in (("train", 6), ("val", 3), ("test", 2)):
        parsed = parse_kinetics400(ann, root, subset)
        assert len(parsed.records) == n
        assert all(r.label >= 0 for r in parsed.records)
        assert_all_exist(parsed.records)


def test_k400_explicit_csv_names_and_split_dir(built, tmp_path):
    root, ann = built["kinetics400"]
    (tmp_path / "my_val.csv").write_text((ann / "validate.csv").read_text())
    (tmp_path / "my_train.csv").write_text((ann / "train.csv").read_text())
    parsed = parse_kinetics400(
        tmp_path,
        root,
        "val",
        csv_names={"train": "my_train.csv", "val": ["x.csv", "my_val.csv"]},
        split_dir="val",
    )
    assert len(parsed.records) == 3
    assert_all_exist(parsed.records)
    other = parse_kinetics400(ann, root, "val", split_dir="validation_videos")
    assert all("validation_videos" in r.path for r in other.records)


def test_k400_flat_layout(built):
    root, ann = built["kinetics400_flat"]
    parsed = parse_kinetics400(ann, root, "train", layout="flat")
    assert len(parsed.records) == 4
    assert all(Path(r.path).parent == root / "train" for r in parsed.records)
    assert_all_exist(parsed.records)
    with pytest.raises(ValueError, match="layout"):
        parse_kinetics400(ann, root, "train", layout="nested")


def test_k400_errors(built, tmp_path):
    root, ann = copy_annotations(built, "kinetics400", tmp_path)
    lineno = append_line(ann / "validate.csv", "juggling chainsaws,abcdefghijk,0,10,val")
    with pytest.raises(
        AnnotationError, match=rf"validate.csv:{lineno}: unknown class name 'juggling chainsaws'"
    ):
        parse_kinetics400(ann, root, "val")
    lineno = append_line(ann / "train.csv", "abseiling,abcdefghijk,0")
    with pytest.raises(AnnotationError, match=rf"train.csv:{lineno}: too few fields"):
        parse_kinetics400(ann, root, "train")
    (ann / "train.csv").write_text("youtube_id,time_start,time_end,split\nabc,0,10,train\n")
    with pytest.raises(AnnotationError, match=r"train.csv:1: header lacks column\(s\) \['label'\]"):
        parse_kinetics400(ann, root, "train")
    (ann / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nabseiling,abc,zero,10,train\n"
    )
    with pytest.raises(AnnotationError, match=r"train.csv:2: time_start should be an integer"):
        parse_kinetics400(ann, root, "train")
    (ann / "train.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"train.csv.*dataset.annotations"):
        parse_kinetics400(ann, root, "val")


# -- Something-Something V1 -----------------------------------------------------------------
def test_sthv1_file_order_frame_folders_and_test_ids(built):
    root, ann = built["sthv1"]
    parsed = parse_sthv1(ann, root, "train")
    assert parsed.class_names == list(SSV1_CLASSES[:4])  # file order, not alphabetical
    assert parsed.class_names != sorted(parsed.class_names)
    assert len(parsed.records) == 8
    assert all(Path(r.path).is_dir() and r.num_frames is None for r in parsed.records)
    assert all((Path(r.path) / "00001.jpg").is_file() for r in parsed.records)
    lines = dict(
        line.split(";") for line in (ann / "something-something-v1-train.csv").read_text().splitlines()
    )
    for rec in parsed.records:
        assert parsed.class_names[rec.label] == lines[Path(rec.path).name]
    assert len(parse_sthv1(ann, root, "val").records) == 4
    test = parse_sthv1(ann, root, "test")
    assert [r.label for r in test.records] == [-1, -1]
    assert_all_exist(test.records)


def test_sthv1_sorted_label_order(built):
    root, ann = built["sthv1"]
    by_file = parse_sthv1(ann, root, "train")
    by_name = parse_sthv1(ann, root, "train", label_order="sorted")
    assert by_name.class_names == sorted(SSV1_CLASSES[:4])
    assert by_name.class_names != by_file.class_names
    for a, b in zip(by_file.records, by_name.records, strict=True):
        assert by_file.class_names[a.label] == by_name.class_names[b.label]
    with pytest.raises(ValueError, match="label_order"):
        parse_sthv1(ann, root, "train", label_order="alphabetical")
    with pytest.raises(ValueError, match="frame_template"):
        parse_sthv1(ann, root, "train", frame_template="frame.jpg")


def test_sthv1_errors(built, tmp_path):
    root, ann = copy_annotations(built, "sthv1", tmp_path)
    train = ann / "something-something-v1-train.csv"
    original = train.read_text()
    lineno = append_line(train, "123456")
    with pytest.raises(AnnotationError, match=rf"v1-train.csv:{lineno}: too few fields"):
        parse_sthv1(ann, root, "train")
    train.write_text(original)
    lineno = append_line(train, "123456;Juggling something")
    with pytest.raises(
        AnnotationError, match=rf"v1-train.csv:{lineno}: unknown class name 'Juggling something'"
    ):
        parse_sthv1(ann, root, "train")
    train.write_text(original)
    lineno = append_line(train, "123456;Holding something;Turning something upside down")
    with pytest.raises(AnnotationError, match=rf"v1-train.csv:{lineno}: .*multi-label"):
        parse_sthv1(ann, root, "train")
    (ann / "something-something-v1-labels.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"something-something-v1-labels.csv .*dataset.annotations"):
        parse_sthv1(ann, root, "train")


# -- Something-Something V2 -----------------------------------------------------------------
def test_sthv2_labels_json_order_brackets_and_test(built):
    root, ann = built["sthv2"]
    parsed = parse_sthv2(ann, root, "train")
    assert parsed.class_names == [c[0] for c in SSV2_CLASSES[:3]]  # by index value, not key order
    assert len(parsed.records) == 6
    assert_all_exist(parsed.records)
    assert all(r.path.endswith(".webm") for r in parsed.records)

    entries = json.loads((ann / "something-something-v2-train.json").read_text())
    assert any("[" in e["template"] for e in entries)
    for entry, rec in zip(entries, parsed.records, strict=True):
        assert Path(rec.path).stem == entry["id"]
        assert parsed.class_names[rec.label] == entry["template"].replace("[", "").replace("]", "")
    assert len(parse_sthv2(ann, root, "val").records) == 3
    test = parse_sthv2(ann, root, "test")
    assert [r.label for r in test.records] == [-1, -1]
    assert_all_exist(test.records)


def test_sthv2_errors(built, tmp_path):

    root, ann = copy_annotations(built, "sthv2", tmp_path)
    train = ann / "something-something-v2-train.json"
    entries = json.loads(train.read_text())
    train.write_text(json.dumps(entries + [{"id": "1", "template": "Juggling [something]"}]))
    with pytest.raises(AnnotationError, match=rf"entry {len(entries)} .*unknown class.*'Juggling something'"):
        parse_sthv2(ann, root, "train")
    train.write_text(json.dumps(entries + [{"id": "1"}]))
    with pytest.raises(AnnotationError, match=rf"entry {len(entries)} .*missing key 'template'"):
        parse_sthv2(ann, root, "train")
    train.write_text("[{")
    with pytest.raises(AnnotationError, match=r"v2-train.json:1: invalid JSON"):
        parse_sthv2(ann, root, "train")
    (ann / "something-something-v2-labels.json").write_text(json.dumps({"A": "0", "B": "2"}))
    with pytest.raises(AnnotationError, match="without gaps"):
        parse_sthv2(ann, root, "val")


# -- UCF-101 --------------------------------------------------------------------------------
def test_ucf101_classind_order_and_splits(built):
    root, ann = built["ucf101"]
    assert b"\r\n" in (ann / "trainlist01.txt").read_bytes()  # official CRLF line endings
    tested = set()
    for split in (1, 2, 3):
        train = parse_ucf101(ann, root, "train", split=split)
        val = parse_ucf101(ann, root, "val", split=split)
        assert train.class_names == list(UCF_CLASSES)  # classInd order: JumpingJack before JumpRope
        assert train.class_names != sorted(UCF_CLASSES)
        assert (len(train.records), len(val.records)) == (8, 4)
        assert parse_ucf101(ann, root, "test", split=split).records == val.records  # no separate test set
        assert_all_exist(train.records + val.records)
        for rec in train.records + val.records:
            assert Path(rec.path).parent.name == train.class_names[rec.label]
        assert not {r.path for r in train.records} & {r.path for r in val.records}
        tested |= {r.path for r in val.records}
    assert len(tested) == 12
    with pytest.raises(ValueError, match="split must be 1, 2 or 3"):
        parse_ucf101(ann, root, "train", split=4)


def test_ucf101_handstandpushups_label_from_directory(built):
    root, ann = built["ucf101"]
    for subset in ("train", "val"):
        parsed = parse_ucf101(ann, root, subset)
        quirky = [r for r in parsed.records if "v_HandStandPushups_" in r.path]
        assert quirky and all(r.label == UCF_CLASSES.index("HandstandPushups") for r in quirky)
        assert all(Path(r.path).parent.name == "HandstandPushups" for r in quirky)


def test_ucf101_parent_annotations_folder(built):
    root, ann = built["ucf101"]
    assert len(parse_ucf101(ann.parent, root, "train").records) == 8


def test_ucf101_errors(built, tmp_path):
    root, ann = copy_annotations(built, "ucf101", tmp_path)
    trainlist = ann / "trainlist01.txt"
    original = trainlist.read_bytes()
    lineno = append_line(trainlist, "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi 5")
    with pytest.raises(AnnotationError, match=rf"trainlist01.txt:{lineno}: label 5 out of range 1..4"):
        parse_ucf101(ann, root, "train")
    trainlist.write_bytes(original)
    lineno = append_line(trainlist, "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi 2")
    with pytest.raises(
        AnnotationError, match=rf"trainlist01.txt:{lineno}: label 2 disagrees with the directory"
    ):
        parse_ucf101(ann, root, "train")
    trainlist.write_bytes(original)
    lineno = append_line(trainlist, "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi")
    with pytest.raises(AnnotationError, match=rf"trainlist01.txt:{lineno}: too few fields"):
        parse_ucf101(ann, root, "train")
    trainlist.write_bytes(original)
    lineno = append_line(trainlist, "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi 1 2")
    with pytest.raises(AnnotationError, match=rf"trainlist01.txt:{lineno}: .*multi-label"):
        parse_ucf101(ann, root, "train")
    lineno = append_line(ann / "testlist01.txt", "Juggling/v_Juggling_g01_c01.avi")
    with pytest.raises(
        AnnotationError, match=rf"testlist01.txt:{lineno}: unknown class directory 'Juggling'"
    ):
        parse_ucf101(ann, root, "val")
    (ann / "classInd.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"classInd.txt .*dataset.annotations"):
        parse_ucf101(ann, root, "train")


# -- HMDB-51 --------------------------------------------------------------------------------
def test_hmdb51_sorted_classes_codes_and_odd_names(built):
    root, ann = built["hmdb51"]
    for split in (1, 2, 3):
        train = parse_hmdb51(ann, root, "train", split=split)
        val = parse_hmdb51(ann, root, "val", split=split)
        assert train.class_names == sorted(HMDB_CLASSES[:3]) == ["brush_hair", "cartwheel", "wave"]
        assert (len(train.records), len(val.records)) == (6, 3)
        assert parse_hmdb51(ann, root, "test", split=split).records == val.records
        assert_all_exist(train.records + val.records)
        for rec in train.records + val.records:
            assert Path(rec.path).parent.name == train.class_names[rec.label]
            assert "My home video" not in rec.path  # code 0 in every split: excluded
    names = {Path(r.path).name for r in parse_hmdb51(ann, root, "train").records}
    assert any("[HD]_(Kinder)" in n for n in names)
    odd = {Path(r.path).name for r in parse_hmdb51(ann, root, "val").records}
    assert all("&" in n and ";" in n and "!" in n for n in odd)


def test_hmdb51_classes_from_split_files_only(built, tmp_path):
    _, ann = built["hmdb51"]
    parsed = parse_hmdb51(ann.parent, tmp_path / "no_videos_here", "train")  # parent folder accepted
    assert parsed.class_names == ["brush_hair", "cartwheel", "wave"]


def test_hmdb51_errors(built, tmp_path):
    root, ann = copy_annotations(built, "hmdb51", tmp_path)
    path = ann / "wave_test_split1.txt"
    original = path.read_text()
    lineno = append_line(path, "some_video_wave_u_nm_np1_fr_goo_0.avi 3")
    with pytest.raises(AnnotationError, match=rf"wave_test_split1.txt:{lineno}: code should be 0 .*'3'"):
        parse_hmdb51(ann, root, "train")
    path.write_text(original)
    lineno = append_line(path, "some_video_wave_u_nm_np1_fr_goo_0.avi 1 2")
    with pytest.raises(AnnotationError, match=rf"wave_test_split1.txt:{lineno}: several codes.*multi-label"):
        parse_hmdb51(ann, root, "train")
    path.write_text(original)
    lineno = append_line(path, "some_video_wave_u_nm_np1_fr_goo_0.avi")
    with pytest.raises(AnnotationError, match=rf"wave_test_split1.txt:{lineno}: too few fields"):
        parse_hmdb51(ann, root, "train")
    path.write_text(original)
    (ann / "wave_test_split3.txt").unlink()
    assert len(parse_hmdb51(ann, root, "val", split=2).records) == 3
    with pytest.raises(FileNotFoundError, match=r"wave_test_split3.txt is missing"):
        parse_hmdb51(ann, root, "train", split=3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no split files"):
        parse_hmdb51(tmp_path / "empty", root, "train")


# -- Diving48 -------------------------------------------------------------------------------
def test_diving48_vocab_names_and_frame_ranges(built):
    root, ann = built["diving48"]
    train = parse_diving48(ann, root, "train")
    assert train.class_names == [" ".join(v) for v in DIVING_VOCAB[:3]]
    assert train.class_names[0] == "Back 15som 05Twis FREE"
    assert len(train.records) == 6
    assert_all_exist(train.records)
    first = train.records[0]
    assert (first.start, first.end) == (2, 10)
    assert first.usable_frames == 8  # end exclusive
    assert first.with_frames(12).usable_frames == 8
    assert all((r.start, r.end) == (0, 12) for r in train.records[1:])
    val = parse_diving48(ann, root, "val")
    assert len(val.records) == 3
    assert parse_diving48(ann, root, "test").records == val.records  # "val" = official test set


def test_diving48_errors(built, tmp_path):

    root, ann = copy_annotations(built, "diving48", tmp_path)
    train = ann / "Diving48_V2_train.json"
    entries = json.loads(train.read_text())
    bad = {"vid_name": "x_00001", "label": 7, "start_frame": 0, "end_frame": 10}
    train.write_text(json.dumps(entries + [bad]))
    with pytest.raises(AnnotationError, match=rf"entry {len(entries)} .*label 7 out of range 0..2"):
        parse_diving48(ann, root, "train")
    train.write_text(json.dumps(entries + [{"vid_name": "x_00001", "label": 1}]))
    with pytest.raises(AnnotationError, match=rf"entry {len(entries)} .*missing key 'start_frame'"):
        parse_diving48(ann, root, "train")
    train.write_text(json.dumps(entries + [{**bad, "label": [0, 1]}]))
    with pytest.raises(AnnotationError, match="multi-label"):
        parse_diving48(ann, root, "train")
    train.write_text(json.dumps(entries + [{**bad, "label": 1, "end_frame": 0}]))
    with pytest.raises(AnnotationError, match="bad frame range"):
        parse_diving48(ann, root, "train")
    (ann / "Diving48_vocab.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"Diving48_vocab.json .*dataset.annotations"):
        parse_diving48(ann, root, "train")


# -- flip pairs -----------------------------------------------------------------------------
# The real something-something-v2-labels.json (174 templates, index = alphabetical rank).
SSV2_NAMES = [
    "Approaching something with your camera",
    "Attaching something to something",
    "Bending something so that it deforms",
    "Bending something until it breaks",
    "Burying something in something",
    "Closing something",
    "Covering something with something",
    "Digging something out of something",
    "Dropping something behind something",
    "Dropping something in front of something",
    "Dropping something into something",
    "Dropping something next to something",
    "Dropping something onto something",
    "Failing to put something into something because something does not fit",
    "Folding something",
    "Hitting something with something",
    "Holding something",
    "Holding something behind something",
    "Holding something in front of something",
    "Holding something next to something",
    "Holding something over something",
    "Laying something on the table on its side, not upright",
    "Letting something roll along a flat surface",
    "Letting something roll down a slanted surface",
    "Letting something roll up a slanted surface, so it rolls back down",
    "Lifting a surface with something on it but not enough for it to slide down",
    "Lifting a surface with something on it until it starts sliding down",
    "Lifting something up completely without letting it drop down",
    "Lifting something up completely, then letting it drop down",
    "Lifting something with something on it",
    "Lifting up one end of something without letting it drop down",
    "Lifting up one end of something, then letting it drop down",
    "Moving away from something with your camera",
    "Moving part of something",
    "Moving something across a surface until it falls down",
    "Moving something across a surface without it falling down",
    "Moving something and something away from each other",
    "Moving something and something closer to each other",
    "Moving something and something so they collide with each other",
    "Moving something and something so they pass each other",
    "Moving something away from something",
    "Moving something away from the camera",
    "Moving something closer to something",
    "Moving something down",
    "Moving something towards the camera",
    "Moving something up",
    "Opening something",
    "Picking something up",
    "Piling something up",
    "Plugging something into something",
    "Plugging something into something but pulling it right out as you remove your hand",
    "Poking a hole into some substance",
    "Poking a hole into something soft",
    "Poking a stack of something so the stack collapses",
    "Poking a stack of something without the stack collapsing",
    "Poking something so it slightly moves",
    "Poking something so lightly that it doesn't or almost doesn't move",
    "Poking something so that it falls over",
    "Poking something so that it spins around",
    "Pouring something into something",
    "Pouring something into something until it overflows",
    "Pouring something onto something",
    "Pouring something out of something",
    "Pretending or failing to wipe something off of something",
    "Pretending or trying and failing to twist something",
    "Pretending to be tearing something that is not tearable",
    "Pretending to close something without actually closing it",
    "Pretending to open something without actually opening it",
    "Pretending to pick something up",
    "Pretending to poke something",
    "Pretending to pour something out of something, but something is empty",
    "Pretending to put something behind something",
    "Pretending to put something into something",
    "Pretending to put something next to something",
    "Pretending to put something on a surface",
    "Pretending to put something onto something",
    "Pretending to put something underneath something",
    "Pretending to scoop something up with something",
    "Pretending to spread air onto something",
    "Pretending to sprinkle air onto something",
    "Pretending to squeeze something",
    "Pretending to take something from somewhere",
    "Pretending to take something out of something",
    "Pretending to throw something",
    "Pretending to turn something upside down",
    "Pulling something from behind of something",
    "Pulling something from left to right",
    "Pulling something from right to left",
    "Pulling something onto something",
    "Pulling something out of something",
    "Pulling two ends of something but nothing happens",
    "Pulling two ends of something so that it gets stretched",
    "Pulling two ends of something so that it separates into two pieces",
    "Pushing something from left to right",
    "Pushing something from right to left",
    "Pushing something off of something",
    "Pushing something onto something",
    "Pushing something so it spins",
    "Pushing something so that it almost falls off but doesn't",
    "Pushing something so that it falls off the table",
    "Pushing something so that it slightly moves",
    "Pushing something with something",
    "Putting number of something onto something",
    "Putting something and something on the table",
    "Putting something behind something",
    "Putting something in front of something",
    "Putting something into something",
    "Putting something next to something",
    "Putting something on a flat surface without letting it roll",
    "Putting something on a surface",
    "Putting something on the edge of something so it is not supported and falls down",
    "Putting something onto a slanted surface but it doesn't glide down",
    "Putting something onto something",
    "Putting something onto something else that cannot support it so it falls down",
    "Putting something similar to other things that are already on the table",
    "Putting something that can't roll onto a slanted surface, so it slides down",
    "Putting something that can't roll onto a slanted surface, so it stays where it is",
    "Putting something that cannot actually stand upright upright on the table, so it falls on its side",
    "Putting something underneath something",
    "Putting something upright on the table",
    "Putting something, something and something on the table",
    "Removing something, revealing something behind",
    "Rolling something on a flat surface",
    "Scooping something up with something",
    "Showing a photo of something to the camera",
    "Showing something behind something",
    "Showing something next to something",
    "Showing something on top of something",
    "Showing something to the camera",
    "Showing that something is empty",
    "Showing that something is inside something",
    "Something being deflected from something",
    "Something colliding with something and both are being deflected",
    "Something colliding with something and both come to a halt",
    "Something falling like a feather or paper",
    "Something falling like a rock",
    "Spilling something behind something",
    "Spilling something next to something",
    "Spilling something onto something",
    "Spinning something so it continues spinning",
    "Spinning something that quickly stops spinning",
    "Spreading something onto something",
    "Sprinkling something onto something",
    "Squeezing something",
    "Stacking number of something",
    "Stuffing something into something",
    "Taking one of many similar things on the table",
    "Taking something from somewhere",
    "Taking something out of something",
    "Tearing something into two pieces",
    "Tearing something just a little bit",
    "Throwing something",
    "Throwing something against something",
    "Throwing something in the air and catching it",
    "Throwing something in the air and letting it fall",
    "Throwing something onto a surface",
    "Tilting something with something on it slightly so it doesn't fall down",
    "Tilting something with something on it until it falls off",
    "Tipping something over",
    "Tipping something with something in it over, so something in it falls out",
    "Touching (without moving) part of something",
    "Trying but failing to attach something to something because it doesn't stick",
    "Trying to bend something unbendable so nothing happens",
    "Trying to pour something into something, but missing so it spills next to it",
    "Turning something upside down",
    "Turning the camera downwards while filming something",
    "Turning the camera left while filming something",
    "Turning the camera right while filming something",
    "Turning the camera upwards while filming something",
    "Twisting (wringing) something wet until water comes out",
    "Twisting something",
    "Uncovering something",
    "Unfolding something",
    "Wiping something off of something",
]

# Head of the real something-something-v1-labels.csv (file order), reconstructed from
# memory: positions 2/4, 30/41 and 52/66 agree with the pairs documented for the real file.
SSV1_HEAD = [
    "Holding something",
    "Turning something upside down",
    "Turning the camera left while filming something",
    "Stacking number of something",
    "Turning the camera right while filming something",
    "Opening something",
    "Approaching something with your camera",
    "Picking something up",
    "Pushing something so that it almost falls off but doesn't",
    "Folding something",
    "Moving something away from the camera",
    "Closing something",
    "Moving away from something with your camera",
    "Turning the camera downwards while filming something",
    "Pushing something so that it slightly moves",
    "Turning the camera upwards while filming something",
    "Pretending to pick something up",
    "Showing something to the camera",
    "Moving something up",
    "Plugging something into something",
    "Unfolding something",
    "Putting something onto something",
    "Showing that something is empty",
    "Pretending to put something on a surface",
    "Taking something from somewhere",
    "Putting something next to something",
    "Moving something towards the camera",
    "Showing a photo of something to the camera",
    "Pushing something with something",
    "Throwing something",
    "Pushing something from left to right",
    "Something falling like a feather or paper",
    "Throwing something in the air and letting it fall",
    "Throwing something against something",
    "Lifting something with something on it",
    "Taking one of many similar things on the table",
    "Showing something behind something",
    "Putting something into something",
    "Tearing something just a little bit",
    "Moving something away from something",
    "Tearing something into two pieces",
    "Pushing something from right to left",
    "Holding something next to something",
    "Putting something, something and something on the table",
    "Pretending to take something from somewhere",
    "Moving something closer to something",
    "Pretending to put something next to something",
    "Uncovering something",
    "Something falling like a rock",
    "Putting something and something on the table",
    "Pouring something into something",
    "Moving something down",
    "Pulling something from right to left",
    "Throwing something in the air and catching it",
    "Tilting something with something on it until it falls off",
    "Putting something in front of something",
    "Pretending to turn something upside down",
    "Putting something on a surface",
    "Pretending to throw something",
    "Showing something on top of something",
    "Covering something with something",
    "Squeezing something",
    "Putting something similar to other things that are already on the table",
    "Lifting up one end of something, then letting it drop down",
    "Taking something out of something",
    "Moving part of something",
    "Pulling something from left to right",
    # non-directional names containing "right"/"left"-like words: must stay unpaired
    "Plugging something into something but pulling it right out as you remove your hand",
    "Putting something upright on the table",
    "Letting something roll along a flat surface",
    "Moving something and something away from each other",
]


def test_flip_pairs_real_ssv2_names():
    assert len(SSV2_NAMES) == 174 == len(set(SSV2_NAMES))
    assert left_right_pairs(SSV2_NAMES) == [(86, 87), (93, 94), (166, 167)]  # MMAction2's pairs
    label_map = flip_label_map(SSV2_NAMES)
    assert label_map[86] == 87 and label_map[87] == 86 and label_map[166] == 167
    assert [i for i, j in enumerate(label_map) if i != j] == [86, 87, 93, 94, 166, 167]
    assert sorted(label_map) == list(range(174))


def test_flip_pairs_ssv1_file_order():
    assert len(SSV1_HEAD) == len(set(SSV1_HEAD))
    assert left_right_pairs(SSV1_HEAD) == [(2, 4), (30, 41), (52, 66)]
    assert SSV1_HEAD[2:5:2] == [
        "Turning the camera left while filming something",
        "Turning the camera right while filming something",
    ]


def test_flip_pairs_are_word_level_and_generic():
    names = [
        "Moving something left",
        "Moving something up",
        "moving something RIGHT",
        "Plugging something into something but pulling it right out as you remove your hand",
        "Putting something upright on the table",
        "Letting something roll along a flat surface",
        "Brightening something",
        "Looking left and right",
    ]
    assert left_right_pairs(names) == [(0, 2)]  # case-insensitive match, "upright"/"Brightening" untouched
    assert flip_label_map(names) == [2, 1, 0, 3, 4, 5, 6, 7]
    assert swap_left_right("From Left to right") == "From Right to left"
    assert left_right_pairs([]) == [] and flip_label_map([]) == []


def test_flip_pairs_from_parsed_fixture(built):
    root, ann = built["sthv2"]
    names = parse_sthv2(ann, root, "train").class_names
    assert left_right_pairs(names) == [(1, 2)]


# -- manifest ------------------------------------------------------------------------------
class CountingProbe:
    def __init__(self, probe=probe_num_frames):
        self.probe, self.calls, self.lock = probe, [], threading.Lock()

    def __call__(self, path: str) -> int:
        with self.lock:
            self.calls.append(path)
        return self.probe(path)


def test_manifest_probes_once_then_uses_cache(built, tmp_path):
    root, ann = built["ucf101"]
    records = parse_ucf101(ann, root, "train").records + parse_ucf101(ann, root, "val").records
    probe = CountingProbe()
    manifest = FrameManifest(root, cache_dir=tmp_path / "cache")
    filled = manifest.fill(records, probe=probe, workers=4)
    assert sorted(probe.calls) == sorted(r.path for r in records)
    assert [r.num_frames for r in filled] == [8] * len(records)
    assert [r.path for r in filled] == [r.path for r in records] and not manifest.failures
    assert manifest.path.parent == tmp_path / "cache" and manifest.path.name.startswith("UCF-101-")

    again = CountingProbe()
    fresh = FrameManifest(root, cache_dir=tmp_path / "cache")  # a new run: reads the JSON file
    assert [r.num_frames for r in fresh.fill(records, probe=again)] == [8] * len(records)
    assert again.calls == [] and fresh.probed == 0


def test_manifest_reprobes_changed_file_and_saves_once(built, tmp_path, monkeypatch):
    _, ann = built["ucf101"]
    root = tmp_path / "UCF-101"
    shutil.copytree(built["ucf101"][0], root)
    records = parse_ucf101(ann, root, "val").records
    cache = tmp_path / "cache"
    FrameManifest(root, cache_dir=cache).fill(records)
    changed = records[0].path
    write_clip(Path(changed), label=0, num_frames=12)
    saves = []
    monkeypatch.setattr(FrameManifest, "save", lambda self: saves.append(1))
    probe = CountingProbe()
    filled = FrameManifest(root, cache_dir=cache).fill(records, probe=probe)
    assert probe.calls == [changed]
    assert filled[0].num_frames == 12 and [r.num_frames for r in filled[1:]] == [8] * (len(records) - 1)
    assert saves == [1]


def test_manifest_save_merges_entries_of_other_processes(built, tmp_path):
    root, ann = built["ucf101"]
    train, val = parse_ucf101(ann, root, "train").records, parse_ucf101(ann, root, "val").records
    first, second = FrameManifest(root, tmp_path), FrameManifest(root, tmp_path)  # loaded before any save
    first.fill(train)
    second.fill(val)
    probe = CountingProbe()
    FrameManifest(root, tmp_path).fill(train + val, probe=probe)
    assert probe.calls == []


def test_manifest_ignores_corrupt_cache(built, tmp_path):
    root, ann = built["ucf101"]
    records = parse_ucf101(ann, root, "val").records
    manifest = FrameManifest(root, tmp_path)
    manifest.path.write_text("[1, 2")
    probe = CountingProbe()
    assert [r.num_frames for r in FrameManifest(root, tmp_path).fill(records, probe=probe)] == [8] * 4
    assert len(probe.calls) == 4


def test_manifest_collects_failures(built, tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    good = write_clip(root / "good.mp4", label=0)
    (root / "empty.mp4").write_bytes(b"")
    (root / "garbage.avi").write_bytes(b"not a video at all" * 50)
    (root / "no_frames").mkdir()
    paths = [
        str(good),
        str(root / "empty.mp4"),
        str(root / "garbage.avi"),
        str(root / "missing.mp4"),
        str(root / "no_frames"),
    ]
    records = [VideoRecord(path=p, label=0) for p in paths] + [VideoRecord(path="elsewhere", num_frames=5)]
    manifest = FrameManifest(root, cache_dir=tmp_path / "cache")
    filled = manifest.fill(records, workers=2)
    assert [r.num_frames for r in filled] == [8, None, None, None, None, 5]
    assert set(manifest.failures) == set(paths[1:])
    assert "0 bytes" in manifest.failures[paths[1]]
    assert "FileNotFoundError" in manifest.failures[paths[3]]
    assert "no .jpg" in manifest.failures[paths[4]]
    assert manifest.probed == 4  # missing file fails at stat time; preset num_frames is kept
    retry = FrameManifest(root, cache_dir=tmp_path / "cache")
    probe = CountingProbe()
    retry.fill(records, probe=probe)
    assert sorted(probe.calls) == sorted([paths[1], paths[2], paths[4]])  # failures are not cached


def test_probe_frame_folder_and_pyav_fallback(built, monkeypatch):
    root, ann = built["sthv1"]
    folder = parse_sthv1(ann, root, "train").records[0].path
    assert probe_num_frames(folder) == 8
    video = parse_diving48(*reversed(built["diving48"]), "train").records[0].path
    assert probe_num_frames(video) == 12

    class BrokenDecord:
        def __init__(self, path, num_threads=1):
            raise DecodeError(str(path), "decord could not open it")

    # the manifest probes through the one decord → PyAV fallback of tempo.data.sources
    monkeypatch.setattr(sources_mod, "DecordSource", BrokenDecord)
    assert probe_num_frames(video) == 12
    def broken_pyav(self, path):
        raise DecodeError(str(path), "PyAV could not open it")

    monkeypatch.setattr(sources_mod.PyAVSource, "__init__", broken_pyav)
    with pytest.raises(DecodeError, match="decord could not open it; PyAV could not open it"):
        probe_num_frames(video)


def test_manifest_default_dir_follows_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("TEMPO_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_manifest_dir() == tmp_path / "xdg" / "tempo" / "manifests"
    assert FrameManifest(tmp_path / "data").path.parent == tmp_path / "xdg" / "tempo" / "manifests"
    monkeypatch.setenv("TEMPO_CACHE_DIR", str(tmp_path / "tc"))
    assert FrameManifest(tmp_path / "data").path.parent == tmp_path / "tc" / "manifests"
    monkeypatch.delenv("TEMPO_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_manifest_dir() == Path.home() / ".cache" / "tempo" / "manifests"
    a, b = FrameManifest(tmp_path / "a" / "data", tmp_path), FrameManifest(tmp_path / "b" / "data", tmp_path)
    assert a.path != b.path  # keyed by the absolute root, not just its name


# -- labels outside dataset.num_classes name the annotation file and line -----------------------------------
@pytest.mark.parametrize("dataset", ["kinetics400", "sthv1", "ucf101", "hmdb51", "sthv2", "diving48"])
def test_label_error_names_annotation_file_and_line(built, dataset):
    root, ann = built[dataset]
    parsed = parse_official(dataset, ann, root, "train")
    record = max(parsed.records, key=lambda r: r.label)
    with pytest.raises(AnnotationError) as err:
        check_labels(parsed.records, record.label, "train annotations")  # one class too few
    message = str(err.value)
    where = message.split(" (", 1)[0]
    assert f"has label {record.label}, outside [0, {record.label})" in message
    if dataset in ("sthv2", "diving48"):  # JSON lists: the entry
        file, entry = where.split(": entry ")
        index = int(entry.split()[0])
        video_id = Path(record.path).name.split(".")[0]
        assert str(json.loads(Path(file).read_text())[index]).count(video_id)
    else:  # text files: file:line, 1-based
        file, line = where.rsplit(":", 1)
        text_line = Path(file).read_text(encoding="utf-8-sig").splitlines()[int(line) - 1]
        name = Path(record.path).name.split(".")[0] if dataset != "kinetics400" else record.path.split("/")[-1][:11]
        assert name in text_line, (text_line, record.path)


def test_label_error_of_a_list_file_names_its_line(tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text("# comment\na.mp4 0\n\nb.mp4 5\n")
    with pytest.raises(AnnotationError, match=rf"^{tmp_path}/train\.txt:4 \(b\.mp4\) has label 5, outside \[0, 5\)"):
        check_labels(read_list(lst), 5, "train annotations")
    assert read_list(lst)[1] == VideoRecord("b.mp4", 5)  # origin takes no part in equality
