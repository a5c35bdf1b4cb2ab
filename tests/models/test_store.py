"""The model cache: import, pull from a local HTTP server (resume, checks, offline), verify."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from segloop.cli import main
from segloop.errors import ModelNotAvailableError, SegloopError
from segloop.models import registry
from segloop.models.download import DownloadError
from segloop.models.registry import ModelSpec, get_spec, register_model, unregister_model
from segloop.models.store import (
    checkpoint_path,
    import_model,
    is_available,
    models_home,
    not_cached_message,
    pull,
    remove,
    status,
    verify,
)

from .conftest import FileServer, TinyCheckpoint

NAME = "tiny-test"
REMOTE = "/test-org/tiny/resolve/main/tiny.pt"


@pytest.fixture
def tiny_entry(tiny_checkpoint: TinyCheckpoint, file_server: FileServer,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelSpec]:
    """A registry entry served by the local file server (through the hub endpoint override)."""
    file_server.files[REMOTE] = tiny_checkpoint.data
    monkeypatch.setenv("SEGLOOP_HF_ENDPOINT", file_server.url)
    monkeypatch.delenv("SEGLOOP_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    spec = ModelSpec(name=NAME, description="tiny test model", config=tiny_checkpoint.config,
                     licence="Apache-2.0", hf_repo="test-org/tiny", hf_filename="tiny.pt",
                     size=len(tiny_checkpoint.data), sha256=tiny_checkpoint.sha256)
    register_model(spec)
    yield spec
    unregister_model(NAME)


def test_cache_lives_under_segloop_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGLOOP_HOME", str(tmp_path / "h"))
    assert models_home() == tmp_path / "h" / "models"
    assert checkpoint_path("medsam2") == tmp_path / "h" / "models" / "MedSAM2_latest" / "checkpoint.pt"


def test_registry_entries() -> None:
    assert get_spec("medsam2").name == "MedSAM2_latest"
    assert get_spec("MEDSAM2_ctlesion").name == "MedSAM2_CTLesion"
    tiny = get_spec("sam2.1-tiny")
    assert tiny.size == 156008466 and tiny.sha256 and tiny.sha256.startswith("7402e0d8")
    assert tiny.image_size == 1024 and get_spec("medsam2").image_size == 512
    assert get_spec("medsam2").source_url("https://hub.example").endswith(
        "/wanglab/MedSAM2/resolve/main/MedSAM2_latest.pt")
    with pytest.raises(SegloopError, match="unknown model"):
        get_spec("nope")
    assert set(registry.MEDSAM2_VARIANTS) <= set(registry.model_names())


def test_not_cached_is_a_clear_error() -> None:
    assert not is_available("medsam2")
    msg = not_cached_message("medsam2")
    assert msg == ("weights not cached: run `segloop models pull medsam2` or"
                   " `segloop models import FILE --as medsam2`")
    from segloop.engines.sam2 import MedSAM2Engine

    assert MedSAM2Engine.unavailable_reason() == msg
    with pytest.raises(ModelNotAvailableError, match="segloop models pull"):
        verify("medsam2")
    from segloop.models.loader import load_model

    with pytest.raises(ModelNotAvailableError, match="models import FILE --as medsam2"):
        load_model("medsam2")


def test_import_verify_load_remove(tiny_checkpoint: TinyCheckpoint) -> None:
    import torch

    from segloop.models.loader import load_model

    import_model(tiny_checkpoint.path, "medsam2", config=tiny_checkpoint.config)
    assert is_available("medsam2") and is_available("MedSAM2_latest")
    st = status("medsam2")
    assert st.available and st.sha256 == tiny_checkpoint.sha256 and not st.converted
    assert "OK" in verify("medsam2")
    model = load_model("medsam2")
    assert status("medsam2").converted  # cached as safetensors for the next load
    raw = torch.load(tiny_checkpoint.path, weights_only=True)["model"]
    assert torch.equal(model.state_dict()["mask_decoder.iou_token.weight"],
                       raw["sam_mask_decoder.iou_token.weight"])
    again = load_model("medsam2")  # from the converted cache
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  again.state_dict().values(), strict=True))
    # a corrupted cache file is detected
    ck = checkpoint_path("medsam2")
    data = bytearray(ck.read_bytes())
    data[100] ^= 0xFF
    ck.write_bytes(bytes(data))
    with pytest.raises(ModelNotAvailableError, match="corrupted"):
        verify("medsam2")
    assert remove("medsam2") and not is_available("medsam2") and not remove("medsam2")


def test_import_with_the_wrong_config_is_rejected_at_conversion(
    tiny_checkpoint: TinyCheckpoint,
) -> None:
    from segloop.models.loader import ensure_converted

    import_model(tiny_checkpoint.path, "medsam2")  # registry config: hiera-tiny 512
    with pytest.raises(ModelNotAvailableError, match="does not fit the model configuration"):
        ensure_converted("medsam2")


def test_import_of_a_transformers_folder(tmp_path: Path, tiny_checkpoint: TinyCheckpoint) -> None:
    from segloop.models.loader import convert_state_dict_file, load_model

    folder = tmp_path / "hf"
    convert_state_dict_file(tiny_checkpoint.path, tiny_checkpoint.config, folder)
    import_model(folder, "sam2.1-small")
    assert is_available("sam2.1-small") and status("sam2.1-small").converted
    assert load_model("sam2.1-small").config.image_size == 64
    with pytest.raises(ModelNotAvailableError, match="not a transformers model"):
        import_model(tmp_path, "sam2.1-small")


def test_pull_from_a_local_server(tiny_entry: ModelSpec, file_server: FileServer) -> None:
    path = pull(NAME)
    assert path.read_bytes() == file_server.files[REMOTE]
    assert file_server.requests == [(REMOTE, None)]
    assert "OK" in verify(NAME)
    assert pull(NAME) == path and len(file_server.requests) == 1  # cached: no new request


def test_pull_resumes_after_a_dropped_connection(tiny_entry: ModelSpec,
                                                 file_server: FileServer) -> None:
    file_server.drop_first.add(REMOTE)
    path = pull(NAME, retries=2)
    assert path.read_bytes() == file_server.files[REMOTE]
    assert len(file_server.requests) == 2
    first, second = file_server.requests
    assert first[1] is None
    half = len(file_server.files[REMOTE]) // 2
    assert second[1] == f"bytes={half}-", "the second request must resume where the first stopped"


def test_interrupted_pull_resumes_on_the_next_command(tiny_entry: ModelSpec,
                                                      file_server: FileServer) -> None:
    file_server.drop_first.add(REMOTE)
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        pull(NAME, retries=0)
    part = checkpoint_path(NAME).with_name("checkpoint.pt.part")
    assert part.stat().st_size == len(file_server.files[REMOTE]) // 2
    assert not is_available(NAME)
    pull(NAME, retries=0)
    assert file_server.requests[-1][1] is not None and file_server.requests[-1][1].startswith("bytes=")
    assert checkpoint_path(NAME).read_bytes() == file_server.files[REMOTE]
    assert not part.exists()


def test_corrupted_download_is_rejected(tiny_entry: ModelSpec, file_server: FileServer) -> None:
    file_server.corrupt.add(REMOTE)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        pull(NAME)
    assert not is_available(NAME)
    assert not checkpoint_path(NAME).with_name("checkpoint.pt.part").exists()
    file_server.corrupt.clear()
    pull(NAME)
    assert "OK" in verify(NAME)


def test_wrong_size_is_rejected(tiny_entry: ModelSpec, file_server: FileServer) -> None:
    file_server.files[REMOTE] = file_server.files[REMOTE] + b"extra"
    with pytest.raises(DownloadError, match="expected"):
        pull(NAME)
    assert not is_available(NAME)


def test_missing_file_and_unpublished_hash(tiny_entry: ModelSpec, file_server: FileServer,
                                           tiny_checkpoint: TinyCheckpoint) -> None:
    register_model(ModelSpec(name="tiny-404", description="", config={}, licence="x",
                             hf_repo="test-org/none", hf_filename="none.pt"))
    try:
        with pytest.raises(DownloadError, match="HTTP 404"):
            pull("tiny-404")
    finally:
        unregister_model("tiny-404")
    # no published size/hash: recorded on first download, checked by verify afterwards
    register_model(ModelSpec(name="tiny-nohash", description="", config=tiny_checkpoint.config,
                             licence="x", url=file_server.url + REMOTE))
    try:
        pull("tiny-nohash")
        assert status("tiny-nohash").sha256 == tiny_checkpoint.sha256
        assert "OK" in verify("tiny-nohash")
    finally:
        unregister_model("tiny-nohash")


@pytest.mark.parametrize("var", ["SEGLOOP_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_mode(tiny_entry: ModelSpec, file_server: FileServer,
                      monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    monkeypatch.setenv(var, "1")
    with pytest.raises(DownloadError, match="offline mode"):
        pull(NAME)
    assert file_server.requests == []


def test_cli_models(tiny_entry: ModelSpec, tiny_checkpoint: TinyCheckpoint, tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["MedSAM2_latest"]["aliases"] == ["medsam2"] and not rows[NAME]["cached"]
    assert main(["models", "pull", NAME, "--quiet"]) == 0
    assert "cached at" in capsys.readouterr().out
    assert main(["models", "verify", NAME]) == 0
    assert "OK" in capsys.readouterr().out
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(tiny_checkpoint.config))
    assert main(["models", "import", str(tiny_checkpoint.path), "--as", "medsam2", "--config",
                 str(cfg), "--convert"]) == 0
    assert status("medsam2").converted
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "MedSAM2_latest (medsam2)\tcached" in out
    assert main(["models", "remove", "medsam2"]) == 0
    assert "removed" in capsys.readouterr().out
    assert main(["models", "verify", "medsam2"]) == 2
    assert "segloop models pull medsam2" in capsys.readouterr().err


def test_token_goes_to_the_hub_only(tiny_entry: ModelSpec, file_server: FileServer,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from segloop.models.download import _token_for

    monkeypatch.setenv("HF_TOKEN", "secret")
    assert _token_for(file_server.url + REMOTE) == "secret"
    assert _token_for("https://cdn.example.org/file") is None
    pull(NAME)
    assert is_available(NAME)


def test_import_refuses_a_file_that_is_not_a_checkpoint(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import zipfile

    junk = tmp_path / "junk.pt"
    junk.write_text("not weights\n")
    assert main(["models", "import", str(junk), "--as", "medsam2"]) == 2
    err = capsys.readouterr().err
    assert "is not a PyTorch checkpoint" in err and not is_available("medsam2")
    other_zip = tmp_path / "images.pt"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("a.png", b"\x89PNG")
    with pytest.raises(ModelNotAvailableError, match="not a PyTorch checkpoint"):
        import_model(other_zip, "medsam2")
    assert not is_available("medsam2")
