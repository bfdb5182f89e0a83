"""FileOracle for segmentation: the query folder holds each image and the model's predicted mask as PNGs at the
image's size; people name corrected mask PNGs in the ``label`` column; masks come back exactly (255 = unlabeled),
through ``collect`` and through ``label import``, and bad files are refused as a whole with every problem named."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from lightning_dynamical import ActiveLearningDataModule, ConfigError
from lightning_dynamical.oracles.base import FileOracle, LabelsPending, Query
from lightning_dynamical.oracles.files import LabelFileError, import_labels, read_rows
from lightning_dynamical.oracles.label_studio import LabelStudioOracle
from lightning_dynamical.records import files as records
from lightning_dynamical.tasks import MultiLabel, Segmentation

IGNORE = -1


def _dm() -> ActiveLearningDataModule:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 1, 6, 8, generator=gen), torch.randint(0, 3, (10, 6, 8), generator=gen)
    return ActiveLearningDataModule(TensorDataset(x, y), initial_size=4, num_classes=3,
                                    task=Segmentation(ignore_index=IGNORE))


def _query(dm: ActiveLearningDataModule) -> Query:
    indices = dm.unlabeled_indices[:2]
    pseudo = torch.stack([torch.full((6, 8), 1), torch.full((6, 8), 2)])
    return Query(0, indices, torch.tensor([2.0, 1.0]), pseudo)


def _fill(csv_path: Path, labels: dict[int, str]) -> None:
    rows = read_rows(str(csv_path))
    for row in rows:
        row["label"] = labels[int(row["index"])]
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _paint(path: Path, values: np.ndarray) -> None:
    Image.fromarray(values.astype(np.uint8), mode="L").save(path)


def test_masks_go_out_as_pngs_and_come_back_exactly(tmp_path):
    dm, oracle = _dm(), FileOracle(str(tmp_path))
    query = _query(dm)
    with pytest.raises(LabelsPending, match="mask PNG paths"):
        oracle.label(dm, query)
    rows = read_rows(str(tmp_path / "queries_round_0.csv"))
    first = tmp_path / rows[0]["pseudo_label"]
    assert np.array_equal(np.array(Image.open(first)), np.full((6, 8), 1))  # the prediction, at the image's size
    assert Image.open(tmp_path / rows[0]["file"]).size == (8, 6)
    corrected = np.full((6, 8), 2)
    corrected[0, :] = 255  # unlabeled pixels
    _paint(tmp_path / "fixed.png", corrected)
    _fill(tmp_path / "queries_round_0.csv", {query.indices[0]: "fixed.png", query.indices[1]: rows[1]["pseudo_label"]})
    masks = oracle.collect(dm, query)
    expected = torch.from_numpy(corrected).long().where(torch.from_numpy(corrected) != 255, IGNORE)
    assert torch.equal(masks[0], expected) and torch.equal(masks[1], torch.full((6, 8), 2))
    dm.label(query.indices, masks)
    assert torch.equal(dm.labeled_dataset()[dm.labeled_indices.index(query.indices[0])][1], expected)


def test_bad_mask_files_are_refused_naming_each(tmp_path):
    dm, oracle = _dm(), FileOracle(str(tmp_path))
    query = _query(dm)
    with pytest.raises(LabelsPending):
        oracle.label(dm, query)
    _paint(tmp_path / "classes.png", np.full((6, 8), 7))
    _fill(tmp_path / "queries_round_0.csv", {query.indices[0]: "classes.png", query.indices[1]: "missing.png"})
    with pytest.raises(LabelFileError, match=r"unusable mask files .*pixel values \[7\] are not classes 0..2.*"
                                             r"missing.png \(no such file\)"):
        oracle.collect(dm, query)


def test_label_import_stores_encoded_masks_that_the_data_module_loads(tmp_path):
    dm, oracle = _dm(), FileOracle(str(tmp_path / "labels"))
    query = _query(dm)
    with pytest.raises(LabelsPending):
        oracle.label(dm, query)
    csv_path = tmp_path / "labels" / "queries_round_0.csv"
    rows = read_rows(str(csv_path))
    _fill(csv_path, {int(r["index"]): r["pseudo_label"] for r in rows})
    state_path = tmp_path / "run" / "al_state.json"
    records.atomic_write_json(str(state_path), {**dm.state_dict(), "round": 0, "history": [], "strategy": "x",
                                                "seed": 0})
    import_labels(str(csv_path), str(state_path))
    state = json.loads(state_path.read_text())
    fresh = _dm()
    fresh.load_state_dict(state)
    position = fresh.labeled_indices.index(query.indices[1])
    assert torch.equal(fresh.labeled_dataset()[position][1], torch.full((6, 8), 2))


def test_oracles_refuse_tasks_whose_labels_they_cannot_give():
    FileOracle("x").check_task(Segmentation())
    with pytest.raises(ConfigError, match="FileOracle cannot label the multi-label task"):
        FileOracle("x").check_task(MultiLabel())
    with pytest.raises(ConfigError, match="LabelStudioOracle cannot label the segmentation task: .*brush masks"):
        LabelStudioOracle().check_task(Segmentation())


def test_masks_of_another_size_are_refused_in_process_and_by_label_import(tmp_path):
    """A mask PNG that is readable and holds valid classes but not the image's height x width is refused before
    anything changes: by ``collect`` (sizes from the pool) and by ``label import`` (sizes from the manifest)."""
    dm, oracle = _dm(), FileOracle(str(tmp_path / "labels"))
    query = _query(dm)
    with pytest.raises(LabelsPending):
        oracle.label(dm, query)
    csv_path = tmp_path / "labels" / "queries_round_0.csv"
    manifest = json.loads(csv_path.with_suffix(".json").read_text())
    assert manifest["mask_shapes"] == {str(i): [6, 8] for i in query.indices}
    rows = read_rows(str(csv_path))
    _paint(tmp_path / "labels" / "transposed.png", np.full((8, 6), 1))
    _fill(csv_path, {query.indices[0]: "transposed.png", query.indices[1]: rows[1]["pseudo_label"]})
    refused = r"masks of another size than their image \(height x width\) \[index \d+: transposed.png is 8x6, " \
              r"the image 6x8\]"
    with pytest.raises(LabelFileError, match=refused):
        oracle.collect(dm, query)
    state_path = tmp_path / "run" / "al_state.json"
    state = {**dm.state_dict(), "round": 0, "history": [], "strategy": "x", "seed": 0}
    records.atomic_write_json(str(state_path), state)
    before = state_path.read_text()
    with pytest.raises(LabelFileError, match=refused):
        import_labels(str(csv_path), str(state_path))
    assert state_path.read_text() == before
    _paint(tmp_path / "labels" / "transposed.png", np.full((6, 8), 1))  # fixed: now it imports
    import_labels(str(csv_path), str(state_path))
    assert query.indices[0] in json.loads(state_path.read_text())["labeled"]


def test_masks_that_would_read_as_other_classes_are_refused(tmp_path):
    """A palette whose colours are not its indices (an editor's indexed colour: classes 0 and 2 read swapped) and a
    lossy JPEG are refused; an identity palette reads as it shows."""
    from lightning_dynamical.oracles.masks import read_mask

    grey = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    swapped = Image.fromarray(2 - grey, mode="L").convert("P")
    swapped.putpalette([2, 2, 2, 1, 1, 1, 0, 0, 0] + [0] * 759)  # shows 2 - index: grey as drawn, indices swapped
    swapped.save(tmp_path / "palette.png")
    identity = Image.fromarray(grey, mode="L").convert("P")
    identity.putpalette([v for i in range(256) for v in (i, i, i)])
    identity.save(tmp_path / "identity.png")
    Image.fromarray(grey, mode="L").save(tmp_path / "mask.jpg", quality=95)
    assert "palette image whose colours are not its indices" in read_mask(str(tmp_path / "palette.png"), -100, 3)
    assert torch.equal(read_mask(str(tmp_path / "identity.png"), -100, 3), torch.from_numpy(grey).long())
    assert "a JPEG image; a mask is a PNG" in read_mask(str(tmp_path / "mask.jpg"), -100, 3)


@pytest.mark.parametrize(("text", "match"), [
    (b"index,label,label\r\n1,2,0\r\n", r"repeated columns \['label'\]"),
    (b"index,label\r1,2\r3,0\r", None),  # CR-only line ends (Excel for Mac): read
    (b"index,label,,,note,note\n1,2,,,a,b\n3,0,,,,\n", None),  # a spreadsheet's empty and repeated extra columns
    ("index,label\n1,\u00e9\n".encode("latin-1"), "not UTF-8 text"),
])
def test_label_csvs_with_repeated_columns_or_odd_encodings(tmp_path, text, match):
    path = tmp_path / "answers.csv"
    path.write_bytes(text)
    if match is None:
        assert [(r["index"], r["label"]) for r in read_rows(str(path))] == [("1", "2"), ("3", "0")]
    else:
        with pytest.raises(LabelFileError, match=match):
            read_rows(str(path))


def test_rows_whose_index_was_sorted_apart_from_their_file_are_refused():
    from lightning_dynamical.oracles.files import parse_labels

    rows = [{"index": "3", "file": "queries_round_0/5.png", "label": "1"},
            {"index": "5", "file": "queries_round_0/3.png", "label": "0"}]
    with pytest.raises(LabelFileError, match=r"rows whose index and file disagree .*3: 5.png, 5: 3.png"):
        parse_labels(rows, [3, 5], 2)
    rows = [{"index": "3", "file": "queries_round_0/3.png", "label": "1"}, {"index": "5", "file": "", "label": "0"}]
    assert parse_labels(rows, [3, 5], 2) == [1, 0]
