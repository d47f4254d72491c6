"""Release records (releases.json): implicit releases, add/promote/canary/rollback, atomic writes under a lock, sticky
canary assignment, and every refusal leaving the file untouched."""

import json
import shutil
import threading

import pytest

from ldm3d.errors import FailedPrecondition, InvalidArgument, NotFound
from ldm3d.repository import ModelRepository
from ldm3d.repository.releases import (
    RELEASES,
    ReleasesChanged,
    add_release,
    canary_point,
    locked,
    promote,
    read_releases,
)

MODELS = ("text_encoder", "unet", "vae_decoder", "vae_encoder")


def copy_version(repository, model, version, src=1):
    """Another version of ``model`` without re-exporting: a copy of ``src`` with its own (valid) manifest."""
    from ldm3d.repository.manifest import write_manifest

    dst = repository / model / str(version)
    shutil.copytree(repository / model / str(src), dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["version"] = version
    manifest.pop("files")
    write_manifest(dst, manifest)
    return dst


def test_a_repository_without_releases_json_reads_as_implicit_releases(repository):
    rel = read_releases(repository)
    assert not rel.explicit and list(rel.releases) == [1] and rel.current == 1 and rel.canary is None
    assert rel.get(1).models == {m: 1 for m in MODELS}
    for m in MODELS:
        copy_version(repository, m, 2)
    rel = read_releases(repository)  # latest policy: version 2 of every model is current
    assert list(rel.releases) == [1, 2] and rel.current == 2 and rel.pick("any").number == 2
    shutil.rmtree(repository / "vae_encoder" / "2")  # a model version that no release names yet: release 1 serves
    rel = read_releases(repository)
    assert list(rel.releases) == [1] and rel.current == 1
    copy_version(repository, "unet", 3)
    ModelRepository(repository).promote("unet", 3)  # a per-model pin that no release matches: each model's own
    rel = read_releases(repository)
    assert rel.current is None and rel.current_release().number == 0
    assert rel.current_release().models == {"text_encoder": 2, "unet": 3, "vae_decoder": 2, "vae_encoder": 1}
    assert not (repository / RELEASES).exists()


def test_add_release_records_the_implicit_ones_and_numbers_the_next(repository):
    copy_version(repository, "unet", 2)
    r = add_release(repository, {"text_encoder": 1, "unet": 2, "vae_decoder": 1, "vae_encoder": 1},
                    source={"kind": "training", "run": "runs/7"})
    assert r.number == 2 and r.source == {"kind": "training", "run": "runs/7"}
    rel = read_releases(repository)
    assert rel.explicit and rel.generation == 1 and rel.current == 1 and list(rel.releases) == [1, 2]
    assert rel.get(2).models["unet"] == 2 and rel.get(2).created
    assert add_release(repository, {m: 1 for m in MODELS}, {}).number == 3  # a release may repeat versions

    with pytest.raises(InvalidArgument, match=r"models=.*\(missing \['vae_encoder'\]") as e:
        add_release(repository, {"text_encoder": 1, "unet": 2, "vae_decoder": 1}, {})
    assert e.value.field == "models"
    with pytest.raises(NotFound, match=r"model 'unet' version 9: .*unet/9 does not exist"):
        add_release(repository, {"text_encoder": 1, "unet": 9, "vae_decoder": 1, "vae_encoder": 1}, {})
    assert read_releases(repository).generation == 2


def test_promote_canary_full_and_rollback(repository):
    copy_version(repository, "unet", 2)
    add_release(repository, {"text_encoder": 1, "unet": 2, "vae_decoder": 1, "vae_encoder": 1}, {})
    rel = promote(repository, 2, canary=50)
    assert rel.current == 1 and (rel.canary.release, rel.canary.percent) == (2, 50)
    assert {r.number for r in rel.serving()} == {1, 2}
    rel = promote(repository, 2)
    assert rel.current == 2 and rel.canary is None and [r.number for r in rel.serving()] == [2]
    rel = promote(repository, 1)  # a rollback is a promote of the old release
    assert rel.current == 1
    rel = promote(repository, 2, canary=10)
    rel = promote(repository, 2, canary=0)  # ends the canary, keeps the current release
    assert rel.current == 1 and rel.canary is None
    assert promote(repository, 2, canary=0).canary is None  # nothing running: ending it again is harmless
    history = json.loads((repository / RELEASES).read_text())["history"]  # an unchanged state adds no entry
    assert [(h["current"], (h["canary"] or {}).get("percent")) for h in history] == [
        (1, None), (1, 50), (2, None), (1, None), (1, 10), (1, None)]


def test_refused_promotes_change_nothing(repository):
    copy_version(repository, "unet", 2)
    add_release(repository, {"text_encoder": 1, "unet": 2, "vae_decoder": 1, "vae_encoder": 1}, {})
    before = (repository / RELEASES).read_bytes()
    with pytest.raises(NotFound, match=r"version=7: release 7 does not exist .*releases: 1, 2") as e:
        promote(repository, 7)
    assert e.value.field == "version"
    for bad in (-1, 101, 3.5, True):
        with pytest.raises(InvalidArgument, match=r"canary=.* give a percentage from 0 to 100") as e:
            promote(repository, 2, canary=bad)
        assert e.value.field == "canary"
    with pytest.raises(InvalidArgument, match="already the current release"):
        promote(repository, 1, canary=20)
    onnx = repository / "unet" / "2" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-3])
    with pytest.raises(FailedPrecondition, match=r"version=2: release 2 cannot be promoted.*unet/2/model.onnx") as e:
        promote(repository, 2)
    assert e.value.field == "version"
    shutil.rmtree(repository / "unet" / "2")
    with pytest.raises(FailedPrecondition, match=r"unet/2 does not exist"):
        promote(repository, 2, canary=5)
    assert (repository / RELEASES).read_bytes() == before


def test_racing_promotes_do_not_overwrite_each_other(repository):
    copy_version(repository, "unet", 2)
    add_release(repository, {"text_encoder": 1, "unet": 2, "vae_decoder": 1, "vae_encoder": 1}, {})
    seen = read_releases(repository).generation
    promote(repository, 2)  # another operator got there first
    with pytest.raises(ReleasesChanged, match="changed while this promote was verifying"):
        promote(repository, 1, expect_generation=seen)
    assert read_releases(repository).current == 2
    with locked(repository, holder="test"):  # a promote that cannot get the lock gives up, naming the holder
        with pytest.raises(FailedPrecondition, match=r"another promote or publish .*pid \d+.* test") as e:
            promote(repository, 1, lock_timeout_s=0.2)
        assert e.value.field == "repository"
    assert read_releases(repository).current == 2


def test_concurrent_writers_lose_no_update_and_readers_never_see_a_partial_file(repository):
    stop, errors = threading.Event(), []

    def reader():
        while not stop.is_set():
            try:
                read_releases(repository)
            except Exception as exc:  # noqa: BLE001 - any failure is the bug under test
                errors.append(exc)

    def writer():
        for _ in range(5):
            add_release(repository, {m: 1 for m in MODELS}, {"kind": "test"}, lock_timeout_s=30)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer) for _ in range(4)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    rel = read_releases(repository)
    assert not errors and list(rel.releases) == list(range(1, 22)) and rel.generation == 20


def test_a_corrupted_releases_json_is_an_error_naming_the_file(repository):
    (repository / RELEASES).write_text('{"schema": 1, "releases": [{"number": 1')
    with pytest.raises(FailedPrecondition, match=r"releases.json is corrupted \(not valid JSON"):
        read_releases(repository)
    with pytest.raises(FailedPrecondition, match="is corrupted"):
        promote(repository, 1)
    (repository / RELEASES).write_text(json.dumps({"schema": 1, "current": 4, "releases": []}))
    with pytest.raises(FailedPrecondition, match="current release 4 is not among its releases"):
        read_releases(repository)


def test_canary_assignment_is_sticky_and_matches_the_percentage(repository):
    copy_version(repository, "unet", 2)
    add_release(repository, {"text_encoder": 1, "unet": 2, "vae_decoder": 1, "vae_encoder": 1}, {})
    rel = promote(repository, 2, canary=30)
    ids = [f"req-{i}" for i in range(5000)]
    picks = [rel.pick(i).number for i in ids]
    assert abs(picks.count(2) / len(ids) - 0.30) < 0.03
    assert picks == [read_releases(repository).pick(i).number for i in ids]  # same id, same release, any process
    more = promote(repository, 2, canary=60)
    assert all(more.pick(i).number == 2 for i, p in zip(ids, picks) if p == 2)  # raising P flips nobody back
    assert rel.pick("x", version=1).number == 1 and rel.pick("x", version=2).number == 2
    assert 0 <= canary_point("a") < 100 and canary_point("a") == canary_point("a")


def test_recorded_releases_decide_what_the_release_models_serve(repository):
    from ldm3d.pipeline.spec import spec_from_repository

    copy_version(repository, "unet", 2)  # `latest` policy alone would serve unet 2 at once
    add_release(repository, {"text_encoder": 1, "unet": 2, "vae_decoder": 1, "vae_encoder": 1}, {})
    repo = ModelRepository(repository)
    assert repo.current_version("unet") == 1 and repo.resolve("unet", 1) == 1 and repo.served_versions("unet") == [1, 2]
    spec = spec_from_repository(repository)
    assert spec.release == 1 and spec.versions["unet"] == 1
    assert spec_from_repository(repository, 2).versions == {"text_encoder": 1, "unet": 2, "vae_decoder": 1,
                                                            "vae_encoder": 1}
    with pytest.raises(NotFound, match="release 5 does not exist"):
        spec_from_repository(repository, 5)
    promote(repository, 2)
    assert repo.current_version("unet") == 2 and spec_from_repository(repository).release == 2
    with pytest.raises(FailedPrecondition, match="model 'unet' version 2 is served by release 2"):
        repo.remove("unet", 2)
    promote(repository, 1)
    repo.remove("unet", 2)
    assert repo.versions("unet") == [1]
