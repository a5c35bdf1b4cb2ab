"""``segloop train`` end to end: 2D folders with --smoke, and masks reviewed in the server's
datastore (written through the job store, as the API does) appearing in --from-datastore data."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segloop.cli import main
from segloop.train.config import TrainConfig
from segloop.train.trainer import prepare_data
from train.home import segloop_home  # noqa: F401  (autouse: a private SEGLOOP_HOME, as in tests/train)
from train.synthetic import ball_volume, write_disc_folders


def test_cli_smoke_on_2d_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, masks = write_disc_folders(tmp_path / "d", 4, 2)
    out = tmp_path / "run"
    rc = main(["train", "--smoke", "--images", str(images), "--masks", str(masks), "--out",
               str(out), "--samples-per-epoch", "3", "-q"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "medsam2@run" in text and "(before)" in text
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["base_model"] == "tiny" and summary["epochs_run"] == 2
    assert summary["parts"] == ["mask-decoder", "prompt-encoder"]
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert cfg["train"]["smoke"] and cfg["preprocessing"]["image_size"] == 64
    from segloop.models.registry import unregister_model

    unregister_model("medsam2@run")  # as in a new process: found again in the model cache
    rc = main(["models", "list", "--json"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    row = next(r for r in rows if r["name"] == "medsam2@run")
    assert row["cached"] and "fine-tuned from tiny (val IoU" in row["description"]

    # 2D comparison: the run folder and its registered version are the same model
    rc = main(["eval2d", "--images", str(images), "--masks", str(masks), "--engine", str(out),
               "--engine", "medsam2@run", "--csv", str(tmp_path / "per_image.csv"), "-q"])
    assert rc == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 3 and table[2].startswith("medsam2@run")
    assert table[2].split()[-2:] == ["+0.0000", "+0.0000"]
    assert len((tmp_path / "per_image.csv").read_text(encoding="utf-8").splitlines()) == 1 + 2 * 2
    # the same through `segloop eval`'s 2D mode, which writes its CSV into --out
    rc = main(["eval", "--images", str(images), "--masks", str(masks), "--engine", str(out),
               "--engine", "medsam2@run", "--out", str(tmp_path / "ev2d"), "-q"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == table and lines[3] == ""  # then the base vs fine-tuned lines
    assert lines[4] == f"Base model ({out}) mean IoU: {table[1].split()[2]}"
    assert lines[5].startswith("Fine-tuned model (medsam2@run) mean IoU: ")
    assert lines[6] == "Improvement: +0.00 points of IoU (2 images)"
    assert ((tmp_path / "ev2d" / "per_image_2d.csv").read_text(encoding="utf-8")
            == (tmp_path / "per_image.csv").read_text(encoding="utf-8"))
    figs = sorted((tmp_path / "ev2d" / "figures").glob("*.png"))  # one per image: 4 panels
    assert len(figs) == 2
    from PIL import Image

    with Image.open(figs[0]) as fig:
        assert fig.size[0] > 3 * fig.size[1]
    # a random start is kept and registered too, so base and fine-tuned compare side by side
    assert summary["files"]["base"] and (out / "base" / "model.safetensors").is_file()
    rc = main(["eval", "--images", str(images), "--masks", str(masks), "--engine", "medsam2@run.base",
               "--engine", "medsam2@run", "--out", str(tmp_path / "ev2d-base"), "-q"])
    assert rc == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].startswith("medsam2@run.base") and rows[2].startswith("medsam2@run ")
    base_iou = float(rows[1].split()[2])  # model, n, mean IoU, ...
    assert base_iou == pytest.approx(summary["before"]["val_iou"], abs=0.1)
    rc = main(["eval", "--images", str(images), "--out", str(tmp_path / "x")])
    assert rc != 0 and "--masks" in capsys.readouterr().err


def test_cli_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--out", str(tmp_path / "r"), "--images", str(tmp_path)])
    assert rc != 0 and "--masks" in capsys.readouterr().err
    rc = main(["train", "--out", str(tmp_path / "r"), "--manifest", "m.csv", "--train", "decoder"])
    assert rc != 0 and "unknown part" in capsys.readouterr().err
    rc = main(["train", "--out", str(tmp_path / "r"), "--from-datastore", str(tmp_path)])
    assert rc != 0 and "no reviewed masks" in capsys.readouterr().err


def test_reviewed_mask_appears_in_datastore_training(tmp_path: Path) -> None:
    from segloop.config import load_settings
    from segloop.io.radiological import volume_to_views
    from segloop.jobs.store import LOCAL_ADMIN, JobStore

    settings = load_settings(None, home=tmp_path / "server")
    store = JobStore(settings)
    try:
        img, lab = ball_volume(np.random.default_rng(5))
        upload = tmp_path / "upload.nii.gz"
        nib.save(nib.Nifti1Image(img, np.diag([0.8, 0.8, 2.0, 1.0])), str(upload))
        job = store.create_job(upload, "ball.nii.gz", LOCAL_ADMIN)
        edited = np.zeros(tuple(job.shape), np.uint8)
        edited[lab > 0] = 1
        edited[:, :, 2] = 0  # the reviewer's correction
        store.edit_mask(job.job_id, LOCAL_ADMIN, edited)
        store.review(job.job_id, LOCAL_ADMIN, None)
    finally:
        store.close()

    ds = settings.datastore_dir
    cfg = TrainConfig(out=str(tmp_path / "run"), datastore=str(ds))
    prepared = prepare_data(cfg)
    train, val_is_train = prepared.train, prepared.val_is_train
    assert len(train) == 1 and val_is_train
    rec = train[0]
    assert rec.name.startswith(job.job_id) and rec.patient_id == job.job_id
    # frames and truth are (Z, H, W) radiological views, the orientation the engines feed
    np.testing.assert_array_equal(rec.truth, volume_to_views(edited.astype(bool)))

    out = tmp_path / "ds-run"
    rc = main(["train", "--from-datastore", str(ds), "--smoke", "--out", str(out),
               "--samples-per-epoch", "2", "--val-samples", "1", "--no-register", "-q"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["train_patients"] == [job.job_id] and summary["val_is_train"]
    assert summary["parts"] == ["mask-decoder", "prompt-encoder", "memory"]


@pytest.mark.shared_data
def test_cli_smoke_on_shared_volumes(shared_data: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "real"
    rc = main(["train", "--smoke", "--manifest", str(shared_data / "cases.csv"), "--root", str(shared_data),
               "--out", str(out), "--no-register", "-q"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["epochs_run"] == 2 and summary["train_items"] > 100
    assert not set(summary["train_patients"]) & set(summary["val_patients"])
    assert (out / "curves.png").is_file() and (out / "best.pt").is_file()
