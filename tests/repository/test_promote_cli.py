"""`ldm3d models promote` as an operator runs it: the three contract forms, every refusal exits 2 with one line naming
the flag and changes nothing, `--require-eval` compares real `ldm3d evaluate` reports, and `ldm3d export` records
the release it published."""

import json

import pytest
from test_releases import copy_version

from ldm3d.cli import main
from ldm3d.repository.releases import RELEASES, add_release, locked, read_releases


@pytest.fixture
def two(repository):
    """Release 2 = release 1 with a second U-Net version."""
    copy_version(repository, "unet", 2)
    add_release(repository, {"text_encoder": 1, "unet": 2, "vae_decoder": 1, "vae_encoder": 1}, {"kind": "test"})
    return repository


def promote(repo, *args):
    return main(["models", "promote", "--repository", str(repo), *args])


def test_the_three_contract_forms_and_a_rollback(two, capsys):
    assert promote(two, "--version", "2", "--canary", "50") == 0
    assert "50 % of requests that name no version go to release 2" in capsys.readouterr().out
    rel = read_releases(two)
    assert (rel.current, rel.canary.release, rel.canary.percent) == (1, 2, 50)
    assert promote(two, "--version", "2", "--canary", "0") == 0
    assert "canary ended; release 1 serves all traffic" in capsys.readouterr().out
    assert read_releases(two).canary is None and read_releases(two).current == 1
    assert promote(two, "--version", "2") == 0
    assert "release 2 is now current (was release 1)" in capsys.readouterr().out
    assert promote(two, "--version", "1") == 0  # rollback
    assert read_releases(two).current == 1
    capsys.readouterr()
    assert main(["models", "releases", "--repository", str(two), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["current"] == 1
    assert main(["models", "list", "--repository", str(two)]) == 0
    out = capsys.readouterr().out
    assert "text_encoder=1 unet=2 vae_decoder=1 vae_encoder=1" in out and "current" in out


@pytest.mark.parametrize("args, flag, message", [
    (("--version", "9"), "--version 9", "release 9 does not exist"),
    (("--version", "2", "--canary", "101"), "--canary 101", "percentage from 0 to 100"),
    (("--version", "2", "--canary", "-1"), "--canary -1", "percentage from 0 to 100"),
    (("--version", "2", "--canary", "ten"), "--canary 'ten'", "whole percentage"),
    (("--version", "1", "--canary", "5"), "--canary 5", "already the current release"),
])
def test_bad_input_exits_2_naming_the_flag_and_changes_nothing(two, capsys, args, flag, message):
    before = (two / RELEASES).read_bytes()
    assert promote(two, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and message in err, err
    assert (two / RELEASES).read_bytes() == before


def test_a_corrupted_or_missing_file_is_found_before_anything_changes(two, capsys):
    before = (two / RELEASES).read_bytes()
    onnx = two / "unet" / "2" / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[100] ^= 1
    onnx.write_bytes(bytes(data))
    assert promote(two, "--version", "2", "--canary", "10") == 2
    err = capsys.readouterr().err
    assert "--version 2: release 2 cannot be promoted" in err and "unet/2/model.onnx" in err and "sha256" in err
    data[100] ^= 1
    onnx.write_bytes(bytes(data))  # repaired; now a file goes missing
    (two / "unet" / "2" / "unet_config.json").unlink()
    assert promote(two, "--version", "2") == 2
    assert "unet_config.json: missing" in capsys.readouterr().err
    assert (two / RELEASES).read_bytes() == before


def test_a_racing_promote_is_refused(two, capsys):
    before = (two / RELEASES).read_bytes()
    with locked(two, holder="another promote"):
        assert promote(two, "--version", "2", "--lock-timeout", "0.2") == 2
    err = capsys.readouterr().err
    assert err.startswith("ldm3d models: error: --repository") and "another promote" in err
    assert (two / RELEASES).read_bytes() == before
    (two / RELEASES).write_text("{")  # a corrupted record: refused, never overwritten with a guess
    assert promote(two, "--version", "2") == 2
    assert "releases.json is corrupted" in capsys.readouterr().err


def test_export_records_its_release(tiny_model, tmp_path, capsys):
    repo = tmp_path / "r"
    assert main(["export", "--model", str(tiny_model), "--repository", str(repo)]) == 0
    assert "release 1: " in capsys.readouterr().out and read_releases(repo).current == 1
    assert main(["export", "--model", str(tiny_model), "--repository", str(repo), "--models", "unet"]) == 0
    assert "release 2 recorded" in capsys.readouterr().out
    rel = read_releases(repo)
    assert rel.current == 1 and rel.get(2).models == {"text_encoder": 1, "unet": 2, "vae_decoder": 1,
                                                      "vae_encoder": 1}


def test_require_eval_compares_the_releases_reports(two, tmp_path, capsys):
    from ldm3d.evaluation import image_metrics

    clip = tmp_path / "clip"
    image_metrics.make_tiny_clip(clip)
    captions = tmp_path / "captions.txt"
    captions.write_text("a cabin in the woods\na lighthouse at dusk\n")
    assert promote(two, "--version", "2", "--require-eval") == 2
    assert "--require-eval: no evaluation reports" in capsys.readouterr().err
    for n in (1, 2):
        assert main(["evaluate", "--repository", str(two), "--version", str(n), "--captions", str(captions),
                     "--height", "64", "--width", "64", "--steps", "2", "--metrics", "clip", "--clip-model", str(clip),
                     "--no-progress", "--out", str(two / "evaluations" / f"release-{n}.json")]) == 0
    reports = {n: json.loads((two / "evaluations" / f"release-{n}.json").read_text()) for n in (1, 2)}
    assert reports[2]["settings"]["release"] == 2 and reports[2]["settings"]["versions"]["unet"] == 2
    capsys.readouterr()
    # a threshold every change exceeds: refused, nothing changed; --force overrides
    assert promote(two, "--version", "2", "--require-eval", "--max-clip-drop", "-1000") == 2
    assert "--require-eval: release 2 regresses against release 1: CLIP fell" in capsys.readouterr().err
    assert read_releases(two).current == 1
    assert promote(two, "--version", "2", "--require-eval", "--max-clip-drop", "-1000", "--force") == 0
    assert "overridden by --force" in capsys.readouterr().out and read_releases(two).current == 2
    assert promote(two, "--version", "1", "--require-eval", "--max-clip-drop", "1000") == 0
    assert "evaluation: CLIP" in capsys.readouterr().out and read_releases(two).current == 1
