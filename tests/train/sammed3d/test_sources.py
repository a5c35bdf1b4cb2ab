"""SAM-Med3D fine-tuning beyond the seed's CSVs: segloop manifests and the datastore, loader
workers, the visual-token head inside training, and W&B logging (offline mode)."""

from __future__ import annotations

import json
import pickle
import struct
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from realdata import SHARED_DATA
from segloop.cli.train_sammed3d import main as train_main
from segloop.engines.sammed3d.tokens import load_visual_token_head
from segloop.train.sammed3d.data import read_seed_csv
from segloop.train.sammed3d.dataset import PatchDataset, epoch_batches, iterate, scan_rows
from segloop.train.sammed3d.loop import SamMed3DTrainOptions, SchedulerType, train_sammed3d

DATA = SHARED_DATA
CT = DATA / "totalseg" / "example_ct_sm.nii.gz"
CT_SEG = DATA / "totalseg" / "example_seg.nii.gz"
MR = DATA / "totalseg" / "example_mr_sm.nii.gz"
MR_SEG = DATA / "totalseg" / "example_seg_mr.nii.gz"


def _seed_rows(root: Path, n: int = 3) -> tuple[list[Any], list[Any]]:
    """Tiny seed-format data: n .pkl volumes with {n}.nii masks; the last row is validation."""
    masks = root / "masks"
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(1, n + 1):
        img = rng.normal(30, 5, (36, 34, 20)).astype(np.float32)
        m = np.zeros(img.shape, np.uint8)
        m[10 + i:22 + i, 12:24, 6:14] = 1
        img[m > 0] += 40
        (root / f"scan_{i}.pkl").write_bytes(pickle.dumps(img))
        nib.save(nib.Nifti1Image(m, np.diag([1.5, 1.5, 1.5, 1.0])), masks / f"{i}.nii")
        lines.append(f"scan_{i}.pkl,1,p{i}")
    (root / "train.csv").write_text("path,ich,patient_id\n" + "\n".join(lines[:-1]) + "\n")
    (root / "val.csv").write_text("path,ich,patient_id\n" + lines[-1] + "\n")
    return read_seed_csv(root / "train.csv", masks), read_seed_csv(root / "val.csv", masks)


def test_loader_workers_give_the_batches_of_the_main_process(tmp_path: Path) -> None:
    train, _ = _seed_rows(tmp_path, n=4)
    targets, empty = scan_rows(train)
    assert (len(targets), empty) == (3, 0)
    ds = PatchDataset(targets, size=32, seed=5, jitter=4)
    batches = epoch_batches(len(ds), 2, np.random.default_rng([5, 0]))
    assert sorted(i for b in batches for i in b) == [0, 1, 2] and len(batches) == 2
    ds.set_epoch(0)
    main = list(iterate(ds, batches, num_workers=0))
    workers = list(iterate(ds, batches, num_workers=2))
    assert len(main) == len(workers) == 2
    for (a_img, a_tgt, a_idx), (b_img, b_tgt, b_idx) in zip(main, workers, strict=True):
        assert a_img.shape == (len(a_idx), 1, 32, 32, 32)
        assert torch.equal(a_idx, b_idx) and torch.equal(a_img, b_img) and torch.equal(a_tgt, b_tgt)
        assert a_tgt.sum() > 0
    ds.set_epoch(1)  # a new epoch draws a new jitter: the patches move
    moved = list(iterate(ds, batches, num_workers=0))
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(main, moved, strict=True))


def _opts(out: Path, **kw: Any) -> SamMed3DTrainOptions:
    base: dict[str, Any] = dict(model="tiny", epochs=2, batch_size=2, clicks=2, device="cpu",
                                log_freq=1, scheduler_type=SchedulerType.COSINE)
    base.update(kw)
    return SamMed3DTrainOptions(output_dir=out, **base)


def test_visual_token_head_trains_beside_an_unchanged_segmentation(tmp_path: Path) -> None:
    train, val = _seed_rows(tmp_path / "d")
    plain = train_sammed3d(_opts(tmp_path / "plain"), train, val)
    heads = train_sammed3d(_opts(tmp_path / "heads", visual_tokens=8, visual_token_count=4,
                                 num_workers=2), train, val)
    # the head reads detached features and clips its own gradients: segmentation is unchanged
    for a, b in zip(plain["history"], heads["history"], strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_dice"] == b["val_dice"]
        assert np.isfinite(b["token_loss"]) and "token_loss" not in a
    enc_a = torch.load(tmp_path / "plain" / "sam_encoder.pth", weights_only=True)
    enc_b = torch.load(tmp_path / "heads" / "sam_encoder.pth", weights_only=True)
    assert enc_a["image_encoder_state_dict"].keys() == enc_b["image_encoder_state_dict"].keys()
    for k, v in enc_a["image_encoder_state_dict"].items():
        assert torch.equal(v, enc_b["image_encoder_state_dict"][k]), k
    assert "visual_token_head_state_dict" not in enc_a
    head = load_visual_token_head(tmp_path / "heads" / "sam_encoder.pth")
    assert (head.config.dim, head.config.count, head.config.in_dim) == (8, 4, 48)
    assert heads["visual_token_head"]["dim"] == 8
    # resuming needs the same head; a different one is refused with a message
    more = _opts(tmp_path / "heads", epochs=3, visual_tokens=8, visual_token_count=4, resume=True)
    assert len(train_sammed3d(more, train, val)["history"]) == 3
    from segloop.errors import InputError

    with pytest.raises(InputError, match="same --visual_tokens"):
        train_sammed3d(_opts(tmp_path / "heads", epochs=4, resume=True), train, val)


def _manifest(path: Path) -> Path:
    path.write_text(
        "case_id,image,label,label_value,structure,modality,patient_id\n"
        f"ct_spleen,{CT},{CT_SEG},1,spleen,CT,ct\n"
        f"ct_kidney_r,{CT},{CT_SEG},2,right kidney,CT,ct\n"
        f"mr_spleen,{MR},{MR_SEG},1,spleen,MR,mr\n")
    return path


def test_cli_trains_from_a_manifest_and_from_the_datastore(tmp_path: Path, segloop_home: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--model", "tiny", "--epochs", "1", "--clicks", "1", "--val_fraction", "0.5"]
    rc = train_main(["--manifest", str(_manifest(tmp_path / "cases.csv")),
                     "--output_dir", str(tmp_path / "from_manifest"), *common])
    out = capsys.readouterr().out
    assert rc == 0, out
    summary = json.loads(next((tmp_path / "from_manifest").glob("training_summary_*.json")).read_text())
    # split by patient: the two CT targets train, the MR one validates (or the other way round)
    assert {summary["train_patches"], summary["val_patches"]} in ({2, 1}, {1, 2})
    assert "registered as sammed3d@from_manifest" in out

    from segloop.datastore.local import Datastore, ReviewedCase, ReviewedObject

    seg = np.asarray(nib.load(str(CT_SEG)).dataobj)
    labels = np.where(np.isin(seg, (1, 2)), seg, 0).astype(np.uint8)
    store = Datastore(segloop_home / "datastore")
    for job in ("job-a", "job-b"):
        store.add(ReviewedCase(job_id=job, version=1, reviewed_by="rita", modality="CT", image=CT,
                               labels=labels, objects=(ReviewedObject(1, 1, "spleen"),
                                                       ReviewedObject(2, 2, "right kidney"))))
    rc = train_main(["--from-datastore", "--output_dir", str(tmp_path / "from_store"), *common])
    out = capsys.readouterr().out
    assert rc == 0, out
    summary = json.loads(next((tmp_path / "from_store").glob("training_summary_*.json")).read_text())
    assert (summary["train_patches"], summary["val_patches"]) == (2, 2)
    # one source at a time; a missing datastore is a clear error
    rc = train_main(["--from-datastore", str(tmp_path / "nowhere"), "--output_dir",
                     str(tmp_path / "x"), *common])
    assert rc == 2 and "no reviewed masks" in capsys.readouterr().err
    rc = train_main(["--from-datastore", "--manifest", str(tmp_path / "cases.csv"), *common])
    assert rc == 2 and "one data source" in capsys.readouterr().err


def _wandb_records(run_file: Path) -> list[Any]:
    """The records of a W&B run file (a LevelDB-style log of protobuf records, 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", data[:8]
    pos, block, buf, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if (kind == 0 and n == 0) or pos + n > len(data):  # padding, or a record still being written
            break
        buf += data[pos:pos + n]
        pos += n
        if kind in (1, 4):  # a full record, or the last piece of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def test_wandb_offline_run_holds_the_config_and_metrics(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb", reason="wandb is in the [train] extra")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    train, val = _seed_rows(tmp_path / "d")
    summary = train_sammed3d(_opts(tmp_path / "out", use_wandb=True, wandb_project="seg-test",
                                   log_images=True, lr=3e-4), train, val)
    assert summary["log"] == "wandb"
    assert not (tmp_path / "out" / "tensorboard").exists()
    (run_file,) = (tmp_path / "out" / "wandb").glob("offline-run-*/run-*.wandb")
    # wandb's service process may still be writing the file when finish() returns: wait for
    # the run's exit record
    deadline = time.monotonic() + 60
    while True:
        records = _wandb_records(run_file)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "run":
            assert r.run.project == "seg-test"
            config.update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "history":
            history.append({i.key or "/".join(i.nested_key): i.value_json for i in r.history.item})
    assert config["lr"] == 3e-4 and config["epochs"] == 2 and config["model"] == "tiny"
    epochs = [h for h in history if "epoch/val_dice" in h]
    assert [json.loads(h["epoch/epoch"]) for h in epochs] == [1, 2]
    for h, rec in zip(epochs, summary["history"], strict=True):
        assert json.loads(h["epoch/val_dice"]) == pytest.approx(rec["val_dice"])
        assert json.loads(h["epoch/train_loss"]) == pytest.approx(rec["train_loss"])
    assert sum("train/loss" in h for h in history) == 2  # one batch per epoch, log_freq 1
    assert any(k.startswith("val/pred") for h in history for k in h), history  # --log_images


def test_manifest_rows_accept_dicom_folders_and_split_by_patient(tmp_path: Path) -> None:
    from segloop.train.sammed3d.data import RowSource, check_rows, manifest_rows

    man = _manifest(tmp_path / "cases.csv")
    with man.open("a") as fh:
        fh.write(f"ct_dicom_liver,{DATA / 'totalseg' / 'example_ct_dicom'},"
                 f"{DATA / 'totalseg' / 'example_seg_dicom.nii.gz'},5,liver,CT,ct\n")
    train, val = manifest_rows(man, None, 0.5, seed=0)
    assert {r.patient_id for r in train}.isdisjoint({r.patient_id for r in val})
    assert len(train) + len(val) == 4 and all(r.source is RowSource.MANIFEST for r in train + val)
    dicom = next(r for r in train + val if r.case_id == "ct_dicom_liver")
    assert dicom.image.is_dir() and dicom.label_value == 5
    assert dicom.where() == "cases.csv case ct_dicom_liver (example_ct_dicom)"
    assert check_rows(train, val, deep=False) == []  # a series folder is an image
