"""``ldm3d-train prepare``: JSONL / folder / img2dataset tars → WebDataset shards + manifest; skips; resume."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from .helpers import train_cli, write_images, write_jsonl


def _read_shards(prep):
    import webdataset as wds

    manifest = json.loads((prep / "manifest.json").read_text())
    out = []
    for s in manifest["shards"]:
        out += [(s["split"], x) for x in wds.tarfile_samples([{"url": str(prep / s["name"])}])]
    return manifest, out


def test_jsonl_with_every_kind_of_bad_sample(tmp_path):
    from ldm3d.repository.manifest import sha256_file

    raw = tmp_path / "raw"
    rows = write_images(raw, 3)
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(raw / "eight_bit.png")
    Image.fromarray(np.zeros((20, 20), np.uint16)).save(raw / "small.png")
    (raw / "broken.png").write_bytes(b"not a png")
    bad = [{"caption": "", "image": "img0.png", "depth": "img0_depth.png"},
           {"caption": "no such file", "image": "missing.png"},
           {"caption": "8-bit depth", "image": "img0.png", "depth": "eight_bit.png"},
           {"caption": "size mismatch", "image": "img0.png", "depth": "small.png"},
           {"caption": "unreadable", "image": "broken.png", "depth": "img0_depth.png"},
           {"caption": 5, "image": "img0.png"}]
    src = write_jsonl(raw / "data.jsonl", rows + bad, ["{not json"])
    assert train_cli("prepare", "--input", src, "--out", tmp_path / "prep", "--resolution", 32,
                     "--val-fraction", "0.34", "--no-progress") == 0
    manifest, samples = _read_shards(tmp_path / "prep")
    assert manifest["counts"] == {"input": 10, "train": 2, "val": 1, "skipped": 7}
    reasons = [s["reason"] for s in manifest["skipped"]]
    for word in ("no caption", "not found", "8-bit depth", "size mismatch", "unreadable image", "must be a string",
                 "invalid JSON"):
        assert any(word in r for r in reasons), (word, reasons)
    assert manifest["resolution"] == 32 and manifest["depth"]["provided"] == 3 and manifest["depth"]["estimated"] == 0
    for s in manifest["shards"]:
        assert sha256_file(tmp_path / "prep" / s["name"]) == s["sha256"]
    for split, x in samples:
        rgb, depth = Image.open(io.BytesIO(x["rgb.png"])), Image.open(io.BytesIO(x["depth.png"]))
        assert rgb.size == depth.size == (32, 32) and rgb.mode == "RGB" and depth.mode == "I;16"
        assert x["txt"].decode().startswith("a test scene")
    # a second run on the finished folder changes nothing
    before = (tmp_path / "prep" / "manifest.json").read_text()
    assert train_cli("prepare", "--input", src, "--out", tmp_path / "prep", "--resolution", 32,
                     "--val-fraction", "0.34", "--no-progress") == 0
    assert (tmp_path / "prep" / "manifest.json").read_text() == before


def test_folder_and_img2dataset_tars_estimate_missing_depth_with_dpt(tmp_path):
    import webdataset as wds

    from ldm3d.evaluation.depth_models import make_tiny_dpt

    dpt = make_tiny_dpt(tmp_path / "dpt")
    folder = tmp_path / "folder"
    write_images(folder, 2, depth=False)
    (folder / "img0.txt").write_text("a captioned picture")  # img1 has no caption: listed as skipped
    assert train_cli("prepare", "--input", folder, "--out", tmp_path / "p1", "--resolution", 32, "--depth-model", dpt,
                     "--val-fraction", "0", "--no-progress") == 0
    m1, s1 = _read_shards(tmp_path / "p1")
    assert m1["counts"]["train"] == 1 and m1["depth"]["estimated"] == 1 and m1["depth"]["model"] == str(dpt)
    assert "no caption" in m1["skipped"][0]["reason"]
    depth = np.asarray(Image.open(io.BytesIO(s1[0][1]["depth.png"])))
    assert depth.dtype == np.uint16 and depth.max() == 65535 and depth.min() == 0  # DPT's per-image 16-bit range

    tars = tmp_path / "tars"
    tars.mkdir()
    with wds.TarWriter(str(tars / "00000.tar")) as w:  # what img2dataset writes: jpg + txt + json per sample
        for i in range(3):
            buf = io.BytesIO()
            Image.fromarray(np.full((48, 64, 3), 40 * i, np.uint8)).save(buf, format="JPEG")
            sample = {"__key__": f"{i:09d}", "jpg": buf.getvalue(), "json": b"{}"}
            if i != 1:
                sample["txt"] = f"caption {i}".encode()
            w.write(sample)
    assert train_cli("prepare", "--input", tars, "--out", tmp_path / "p2", "--resolution", 32, "--depth-model", dpt,
                     "--val-fraction", "0", "--no-progress") == 0
    m2, s2 = _read_shards(tmp_path / "p2")
    assert m2["counts"] == {"input": 3, "train": 2, "val": 0, "skipped": 1}
    assert [x["txt"] for _, x in s2] == [b"caption 0", b"caption 2"]


def test_interrupted_prepare_resumes_to_the_same_shards(tmp_path, monkeypatch):
    from ldm3d_training import prepare as prep_mod

    raw = tmp_path / "raw"
    src = write_jsonl(raw / "data.jsonl", write_images(raw, 5))
    full = prep_mod.prepare(src, tmp_path / "full", 32, shard_size=2, progress=False)

    real, calls = prep_mod.Preparer.process, []

    def flaky(self, raw_sample):
        calls.append(raw_sample.key)
        if len(calls) == 4:
            raise KeyboardInterrupt  # killed in the middle of the second chunk
        return real(self, raw_sample)

    monkeypatch.setattr(prep_mod.Preparer, "process", flaky)
    with pytest.raises(KeyboardInterrupt):
        prep_mod.prepare(src, tmp_path / "part", 32, shard_size=2, progress=False)
    assert not (tmp_path / "part" / "manifest.json").exists()
    assert sorted(p.name for p in (tmp_path / "part").glob("*.tar*")) == ["train-000000.tar"]
    monkeypatch.setattr(prep_mod.Preparer, "process", real)
    resumed = prep_mod.prepare(src, tmp_path / "part", 32, shard_size=2, progress=False)
    assert [(s["name"], s["sha256"]) for s in resumed["shards"]] == [(s["name"], s["sha256"]) for s in full["shards"]]
    assert resumed["counts"] == full["counts"]


@pytest.mark.parametrize("args, flag", [
    (["--resolution", "30"], "--resolution"),
    (["--val-fraction", "1.5"], "--val-fraction"),
    (["--input", "/nonexistent/data.jsonl"], "--input"),
])
def test_bad_prepare_flags_exit_2_naming_the_flag(tmp_path, capsys, args, flag):
    raw = tmp_path / "raw"
    src = write_jsonl(raw / "data.jsonl", write_images(raw, 1))
    base = {"--input": str(src), "--out": str(tmp_path / "prep"), "--resolution": "32"}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    argv = ["prepare", "--no-progress", *[x for kv in base.items() for x in kv]]
    assert train_cli(*argv) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
