"""Atomic, resumable generation: interrupted builds resume, corrupt or partial
caches are detected and rebuilt, never loaded."""
import pickle
from pathlib import Path

import pytest
import torch

from nft_pyg.datasets import DigitsINR

TINY = dict(num_images=6, extra_fits=1, steps=2, resolution=8, hidden=(4,),
            images_per_shard=2, num_workers=0, progress=False)  # 3 shards


def build(root, **kwargs):
    return DigitsINR(root, **{**TINY, **kwargs})


class CountingShards:
    """Patch DigitsINR.generate_shard to record calls (and fail on one shard)."""

    def __init__(self, monkeypatch, fail_on=None):
        self.calls = []
        original = DigitsINR.generate_shard

        def generate_shard(dataset, index):
            self.calls.append(index)
            if index == fail_on:
                raise KeyboardInterrupt  # the user pressing Ctrl-C mid-build
            return original(dataset, index)

        monkeypatch.setattr(DigitsINR, "generate_shard", generate_shard)


def same_graphs(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert torch.equal(a.edge_attr, b.edge_attr) and torch.equal(a.x, b.x)
        assert torch.equal(a.image, b.image) and a.source_id.item() == b.source_id.item()


def files(root: Path, pattern: str) -> list[Path]:
    return sorted(root.rglob(pattern))


def test_an_interrupted_build_resumes(tmp_path, monkeypatch):
    reference = build(tmp_path / "reference")
    counter = CountingShards(monkeypatch, fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path / "run")
    assert counter.calls == [0, 1, 2]
    assert len(files(tmp_path / "run", "shard_*.pt")) == 2
    assert not files(tmp_path / "run" / "processed", "*.pt")
    assert not files(tmp_path / "run", "*.tmp")  # no half-written file is left behind
    monkeypatch.undo()
    counter = CountingShards(monkeypatch)
    resumed = build(tmp_path / "run")
    assert counter.calls == [2]  # only the missing shard is generated
    same_graphs(resumed, reference)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_corrupt_processed_file_is_rebuilt(tmp_path, monkeypatch, damage):
    first = build(tmp_path)
    processed = Path(first.processed_dir) / first.processed_file_names[0]
    data = processed.read_bytes()
    processed.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00" * 64,
                           "empty": b""}[damage])
    counter = CountingShards(monkeypatch)
    rebuilt = build(tmp_path)
    assert counter.calls == []  # the shards were fine: only collation is redone
    same_graphs(rebuilt, first)
    assert processed.read_bytes() != b"" and len(processed.read_bytes()) > 100


class _Sentinel:
    unpickled = False

    def __setstate__(self, state):
        _Sentinel.unpickled = True


def test_a_pickle_in_the_cache_is_never_loaded(tmp_path, monkeypatch):
    first = build(tmp_path)
    processed = Path(first.processed_dir) / first.processed_file_names[0]
    torch.save({"data": _Sentinel()}, processed)  # needs arbitrary unpickling
    counter = CountingShards(monkeypatch)
    rebuilt = build(tmp_path)
    assert not _Sentinel.unpickled and counter.calls == []
    same_graphs(rebuilt, first)
    processed.write_bytes(pickle.dumps(_Sentinel(), protocol=2))
    build(tmp_path)
    assert not _Sentinel.unpickled


def test_a_corrupt_shard_is_regenerated(tmp_path, monkeypatch):
    first = build(tmp_path)
    shard = first.shard_path(1)
    shard.write_bytes(shard.read_bytes()[:100])
    for path in files(tmp_path / "processed", "*.pt"):
        path.unlink()
    counter = CountingShards(monkeypatch)
    rebuilt = build(tmp_path)
    assert counter.calls == [1]
    same_graphs(rebuilt, first)


def test_a_shard_of_another_configuration_is_not_reused(tmp_path, monkeypatch):
    first = build(tmp_path)
    other = build(tmp_path / "other", steps=3)
    assert other.fingerprint != first.fingerprint
    # put the other configuration's shard 0 in place of this one's
    first.shard_path(0).write_bytes(other.shard_path(0).read_bytes())
    for path in files(tmp_path / "processed", "*.pt"):
        path.unlink()
    counter = CountingShards(monkeypatch)
    same_graphs(build(tmp_path), first)
    assert counter.calls == [0]


def test_worker_processes_give_the_same_data(tmp_path):
    """Shards built by two spawned workers equal shards built in-process."""
    same_graphs(build(tmp_path / "pool", num_workers=2), build(tmp_path / "inline"))


@pytest.mark.timeout(120)  # multiprocessing.Pool waited forever here
def test_a_worker_that_dies_fails_the_build_and_the_next_build_resumes(tmp_path):
    from dying_worker import DigitsINRWithADyingWorker

    with pytest.raises(RuntimeError, match="DigitsINRWithADyingWorker: a shard-generating "
                                           "worker process died.*resumes"):
        DigitsINRWithADyingWorker(tmp_path / "run", **{**TINY, "num_workers": 2})
    assert not files(tmp_path / "run" / "processed", "*.pt")
    assert not files(tmp_path / "run", "*.tmp")
    same_graphs(build(tmp_path / "run"), build(tmp_path / "reference"))
