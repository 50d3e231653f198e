"""Base class of the datasets this project generates offline.

Generation is split into shards: each shard is produced by
:meth:`GeneratedDataset.generate_shard` (deterministic given the dataset's
seed and the shard index), written atomically to
``root/raw/<fingerprint>/shard_<i>.pt``, and skipped when it already exists
and loads, so an interrupted build resumes where it stopped; a shard that
does not load is regenerated. When every shard is there, the graphs of each
split are collated and written atomically to
``root/processed/<fingerprint>_<split>.pt``. The fingerprint hashes the
configuration, so changing it never reuses stale files. A processed file
that is corrupt is detected on load and rebuilt, never used.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import InMemoryDataset
from tqdm.auto import tqdm

from ..graph.convert import from_state_dict
from ..graph.layout import Layout
from ..graph.neuron_graph import NeuronGraph
from ..utils.io import CorruptFileError, atomic_save, fingerprint, safe_load

SPLITS = ("train", "val", "test")


def split_counts(total: int, fractions: tuple[float, float] = (0.15, 0.15),
                 owner: str = "split_counts") -> tuple[int, ...]:
    """(train, val, test) sizes; val and test get at least one item each."""
    if total < 3:
        raise ValueError(f"{owner}: needs at least 3 items for train / val / test splits, "
                         f"got {total}")
    val = max(1, round(fractions[0] * total))
    test = max(1, round(fractions[1] * total))
    return total - val - test, val, test


def assign_splits(total: int, seed: int, owner: str = "assign_splits") -> list[str]:
    """A seeded split name for each of ``total`` items (70 / 15 / 15 %, val and
    test at least one each); ``owner`` names the caller in the error."""
    train, val, _ = split_counts(total, owner=owner)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed)).tolist()
    names = [""] * total
    for rank, item in enumerate(order):
        names[item] = "train" if rank < train else "val" if rank < train + val else "test"
    return names


def fitted_siren_graph(shard: dict[str, Any], i: int, layout: Layout, source: int,
                       fit_id: int, label: torch.Tensor, image: torch.Tensor,
                       **ids: int) -> NeuronGraph:
    """Graph ``i`` of a shard of fitted SIRENs (``shard["params"]``,
    ``shard["psnr"]``), with its digit's label and image, the ids of its
    source digit and fit, and any further ``ids`` (e.g. ``view_id``)."""
    state = {name: value[i] for name, value in shard["params"].items()}
    graph = from_state_dict(state, layout)
    graph.y = label.view(1)
    graph.image = image.unsqueeze(0)
    graph.source_id = torch.tensor([source])
    graph.fit_id = torch.tensor([fit_id])
    for name, value in ids.items():
        setattr(graph, name, torch.tensor([value]))
    graph.psnr = shard["psnr"][i].view(1).float()
    return graph


class GeneratedDataset(InMemoryDataset):
    """A PyG ``InMemoryDataset`` of neuron graphs built offline in shards.

    Subclasses define :attr:`name`, :meth:`config` (JSON-serialisable; every
    value that changes the data), :attr:`num_shards`,
    :meth:`generate_shard` and :meth:`shard_graphs`.

    Args:
        root (str): the dataset folder.
        split (str): ``"train"``, ``"val"`` or ``"test"``.
        transform (callable, optional): applied on access (PyG semantics).
        num_workers (int): processes generating shards (default: 2, both
            cores of the reference machine; 0 generates in this process). A
            worker that dies fails the build with a ``RuntimeError``; the
            shards already written are kept for the next build.
        progress (bool): show tqdm progress bars.
    """

    name = "generated"

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 transform: Callable | None = None, num_workers: int = 2,
                 progress: bool = True):
        if split not in SPLITS:
            raise ValueError(f"{type(self).__name__}: split must be one of {SPLITS}, "
                             f"got {split!r}")
        self.split = split
        self.num_workers = num_workers
        self.progress = progress
        self.fingerprint = fingerprint({"dataset": self.name, **self.config()})
        super().__init__(str(root), transform)
        path = Path(self.processed_dir) / self.processed_file_names[SPLITS.index(split)]
        try:
            self._load_processed(path)
        except CorruptFileError:
            for name in self.processed_file_names:
                (Path(self.processed_dir) / name).unlink(missing_ok=True)
            self.process()
            self._load_processed(path)

    # --- to be defined by subclasses -----------------------------------------
    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def num_shards(self) -> int:
        raise NotImplementedError

    def generate_shard(self, index: int) -> dict[str, Any]:
        """Make shard ``index``: a dict of tensors / numbers / strings."""
        raise NotImplementedError

    def shard_graphs(self, shard: dict[str, Any]) -> dict[str, list[NeuronGraph]]:
        """The graphs of one shard, by split."""
        raise NotImplementedError

    # --- PyG hooks ---------------------------------------------------------------
    @property
    def raw_dir(self) -> str:
        return os.path.join(self.root, "raw", self.fingerprint)

    @property
    def raw_file_names(self) -> list[str]:
        return []

    @property
    def processed_file_names(self) -> list[str]:
        return [f"{self.fingerprint}_{split}.pt" for split in SPLITS]

    def download(self) -> None:  # nothing is ever downloaded
        pass

    def process(self) -> None:
        shards = self.build_shards()
        graphs: dict[str, list[NeuronGraph]] = {split: [] for split in SPLITS}
        for shard in shards:
            for split, split_graphs in self.shard_graphs(shard).items():
                graphs[split] += split_graphs
        for split, name in zip(SPLITS, self.processed_file_names):
            if not graphs[split]:
                raise ValueError(f"{type(self).__name__}: the {split} split is empty; "
                                 "use a larger size")
            data, slices = self.collate(graphs[split])
            atomic_save({"fingerprint": self.fingerprint, "data": data.to_dict(),
                         "slices": slices}, Path(self.processed_dir) / name)

    # --- shards --------------------------------------------------------------------
    def shard_path(self, index: int) -> Path:
        return Path(self.raw_dir) / f"shard_{index:05d}.pt"

    def build_shards(self) -> list[dict[str, Any]]:
        """Generate missing or unreadable shards, then load all of them."""
        missing = [i for i in range(self.num_shards) if self._read_shard(i) is None]
        if missing:
            bar = tqdm(total=len(missing), desc=f"{self.name}: generating shards",
                       disable=not self.progress)
            for index, shard in self._generate(missing):
                atomic_save(shard, self.shard_path(index))
                bar.update()
            bar.close()
        shards = [self._read_shard(i) for i in range(self.num_shards)]
        if any(shard is None for shard in shards):
            raise CorruptFileError(f"{self.raw_dir}: a shard could not be read back "
                                   "after writing it")
        return shards

    def _read_shard(self, index: int) -> dict[str, Any] | None:
        path = self.shard_path(index)
        if not path.exists():
            return None
        try:
            shard = safe_load(path)
        except CorruptFileError:
            return None
        return shard if shard.get("fingerprint") == self.fingerprint else None

    def _generate(self, indices: Sequence[int]):
        if self.num_workers <= 0 or len(indices) == 1:
            for index in indices:
                yield index, self._tagged_shard(index)
            return
        # An executor, not multiprocessing.Pool: Pool replaces a worker that dies
        # and then waits forever for its shard; the executor raises instead.
        executor = ProcessPoolExecutor(min(self.num_workers, len(indices)),
                                       mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_one_thread)
        try:
            yield from zip(indices, executor.map(self._tagged_shard, indices))
        except BrokenProcessPool as error:
            raise RuntimeError(
                f"{type(self).__name__}: a shard-generating worker process died (killed, "
                "out of memory, or a script that builds the dataset without an "
                "`if __name__ == \"__main__\":` guard, which spawned workers re-run); the "
                f"shards written so far are kept in {self.raw_dir} and the next build "
                "resumes from them (num_workers=0 generates in this process)") from error
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def _tagged_shard(self, index: int) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "index": index, **self.generate_shard(index)}

    def _load_processed(self, path: Path) -> None:
        stored = safe_load(path)
        if stored.get("fingerprint") != self.fingerprint or "data" not in stored:
            raise CorruptFileError(f"{path}: written for another configuration")
        self.data = NeuronGraph.from_dict(stored["data"])
        self.slices = stored["slices"]

    def clean(self) -> None:
        """Delete this configuration's raw shards and processed files."""
        shutil.rmtree(self.raw_dir, ignore_errors=True)
        for name in self.processed_file_names:
            (Path(self.processed_dir) / name).unlink(missing_ok=True)


def _one_thread() -> None:
    torch.set_num_threads(1)
