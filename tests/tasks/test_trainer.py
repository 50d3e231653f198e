"""The trainer: loaders, DDP on 2 CPU processes == one process, devices, run folder, resume."""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from distributed_helpers import free_port, torchrun_environment
from tasks_helpers import TINY_TASK, tiny_graphs, tiny_model

from nft_pyg.graph.collate import collate_graphs
from nft_pyg.tasks.engine import TaskModule, graph_loader
from nft_pyg.tasks.trainer import TrainConfig, Trainer
from nft_pyg.utils.io import atomic_save, safe_load

#: 10 graphs in global batches of 4: 4, 4, 2; the last splits 1 / 1 between 2 ranks
NUM_GRAPHS, BATCH, EPOCHS = 10, 4, 2
CONFIG = TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=1e-2, grad_clip=1.0,
                     eval_batch_size=8, accelerator="cpu")


def _order(loader) -> list[list[int]]:
    return [batch.y.view(-1).tolist() for batch in loader]


def test_rank_loaders_split_the_global_batches_of_one_process():
    graphs = tiny_graphs(11)
    for i, graph in enumerate(graphs):
        graph.y = torch.tensor([i])          # the label names the graph
    single = graph_loader(graphs, BATCH, shuffle=True, seed=3)
    single.sampler.set_epoch(1)
    ranks = [graph_loader(graphs, BATCH, shuffle=True, seed=3, rank=r, world=2)
             for r in range(2)]
    for loader in ranks:
        loader.sampler.set_epoch(1)
    whole, shards = _order(single), [_order(loader) for loader in ranks]
    assert sorted(i for b in whole for i in b) == list(range(11))
    # two ranks: the last item of the permutation is dropped (11 = 2 * 5 + 1), the
    # rest are the same global batches, split evenly
    kept = [i for b in whole for i in b][:10]
    for step, (first, second) in enumerate(zip(*shards)):
        assert len(first) == len(second)
        assert sorted(first + second) == sorted(kept[step * BATCH:(step + 1) * BATCH])
    single.sampler.set_epoch(2)
    assert _order(single) != whole
    with pytest.raises(ValueError, match="must be a multiple of the number of processes"):
        graph_loader(graphs, 5, shuffle=True, world=2)


def test_batches_are_moved_to_the_device(device):
    module = TaskModule(tiny_model(), TINY_TASK, CONFIG, [], [], [])
    batch = collate_graphs(tiny_graphs(3))
    moved = module.transfer_batch_to_device(batch, device, 0)
    assert all(value.device.type == device.type for _, value in moved
               if isinstance(value, torch.Tensor))


def _train(model, run_dir=None, resume=False, epochs=EPOCHS, overwrite=False, **options):
    graphs = tiny_graphs(NUM_GRAPHS)
    config = TrainConfig(**{**vars(CONFIG), "epochs": epochs, **options})
    trainer = Trainer(model, TINY_TASK, graphs, graphs[:4], graphs[4:8], config,
                      run_dir=run_dir, run_config={"task": "tiny"}, seed=5, resume=resume,
                      overwrite=overwrite, progress=False)
    return trainer.fit()


def test_training_on_each_device_matches_the_cpu(device):
    """float64: the device's training is the CPU's up to round-off."""
    on_cpu, on_device = tiny_model(), tiny_model()
    start = {k: v.clone() for k, v in on_cpu.state_dict().items()}
    final = _train(on_device, accelerator=device.type)
    _train(on_cpu)
    assert 0 <= final["test_accuracy"] <= 1 and final["best_epoch"] in (1, 2)
    cpu_state = on_cpu.state_dict()
    for name, value in on_device.state_dict().items():
        torch.testing.assert_close(value.cpu(), cpu_state[name], rtol=0, atol=1e-9)
    assert any(not torch.equal(v, start[k]) for k, v in cpu_state.items())


def _ddp_worker(rank: int, port: int, out_dir: str, pool_norm: bool,
                recalibrate: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(torchrun_environment(rank, 2, port))
    try:
        model = tiny_model(pool_norm=pool_norm)
        final = _train(model, recalibrate_batches=recalibrate)
        atomic_save({"state": {k: v.clone() for k, v in model.state_dict().items()},
                     "final": json.dumps(final)},
                    os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.parametrize("pool_norm, recalibrate", [(False, 0), (True, 0), (True, 3)],
                         ids=["plain", "pool_norm", "pool_norm_recalibrated"])
def test_ddp_two_processes_match_single_process(tmp_path, pool_norm, recalibrate):
    """Two processes started as ``torchrun`` starts them (Lightning's DDP, gloo)
    end with identical parameters, equal to one process trained on the same
    global batches. With ``pool_norm`` the batch statistics are the global
    batch's (per-rank statistics would differ); recalibrated running
    statistics too."""
    mp.spawn(_ddp_worker, args=(free_port(), str(tmp_path), pool_norm, recalibrate),
             nprocs=2, join=True)
    ranks = [safe_load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = tiny_model(pool_norm=pool_norm)
    start = {k: v.clone() for k, v in single.state_dict().items()}
    final = _train(single, recalibrate_batches=recalibrate)
    moved = False
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][name], ranks[1]["state"][name],
                                   rtol=0, atol=0)
        torch.testing.assert_close(ranks[0]["state"][name], value, rtol=0, atol=1e-6)
        moved |= not torch.equal(value, start[name])
    assert moved, "training did not change the parameters"
    ddp_final = json.loads(ranks[0]["final"])
    assert ddp_final["test_accuracy"] == final["test_accuracy"]
    assert ddp_final["val_accuracy"] == final["val_accuracy"]


def test_run_folder_and_resume_continue_exactly(tmp_path):
    full = tiny_model()
    final = _train(full, run_dir=tmp_path / "full")
    assert {p.name for p in (tmp_path / "full").iterdir()} >= {
        "config.json", "metrics.jsonl", "last.ckpt", "logs"}
    records = [json.loads(line) for line in
               (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("epoch") for r in records[:-1]] == list(range(1, EPOCHS + 1))
    assert records[-1]["final"] and records[-1] == json.loads(json.dumps(final))
    assert all("train_loss" in r and "val_accuracy" in r for r in records[:-1])
    checkpoint = safe_load(tmp_path / "full" / "last.ckpt")
    assert checkpoint["global_step"] == EPOCHS * 3 and checkpoint["optimizer_states"]
    assert "rng" in checkpoint["nft_pyg"] and checkpoint["nft_pyg"]["best_model"]
    csv = (tmp_path / "full" / "logs" / "metrics.csv").read_text().splitlines()
    assert "val_accuracy" in csv[0] and len(csv) > EPOCHS

    from nft_pyg.tasks.trainer import load_run_weights
    last = load_run_weights(tmp_path / "full")    # the fit ends on the best epoch's weights
    assert set(last) == set(full.state_dict())
    best = load_run_weights(tmp_path / "full", best=True)
    for name, value in full.state_dict().items():
        torch.testing.assert_close(best[name], value, rtol=0, atol=0)

    interrupted = tiny_model()
    _train(interrupted, run_dir=tmp_path / "resumed", epochs=1)   # stops after epoch 1
    resumed = tiny_model(seed=123)                                  # different init: overwritten
    _train(resumed, run_dir=tmp_path / "resumed", resume=True)
    for name, value in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line).get("epoch") for line in lines[:-1]] == [1, 2]
    assert (tmp_path / "resumed" / "logs" / "resumed_after_epoch_1" / "metrics.csv").exists()
    assert (tmp_path / "resumed" / "logs" / "metrics.csv").exists()


def test_a_run_folder_with_a_run_is_not_overwritten_silently(tmp_path):
    from nft_pyg.tasks.trainer import RunFolderError

    _train(tiny_model(), run_dir=tmp_path, epochs=1)
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(RunFolderError, match="already holds a finished run; pass --resume"):
        _train(tiny_model(), run_dir=tmp_path, epochs=1)
    assert (tmp_path / "metrics.jsonl").read_text() == before
    (tmp_path / "metrics.jsonl").write_text(before.splitlines()[0] + "\n")   # no final record
    with pytest.raises(RunFolderError, match="already holds an interrupted run"):
        _train(tiny_model(), run_dir=tmp_path, epochs=1)
    _train(tiny_model(), run_dir=tmp_path, epochs=1, overwrite=True)
    records = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 2 and json.loads(records[-1])["final"]


def test_cosine_schedule_runs_from_lr_to_zero_and_resumes_exactly(tmp_path, monkeypatch):
    cosine = TrainConfig(**{**vars(CONFIG), "lr_schedule": "cosine"})
    assert cosine.lr_at(0, 10) == CONFIG.lr and cosine.lr_at(5, 10) == pytest.approx(CONFIG.lr / 2)
    assert cosine.lr_at(9, 10) < 0.03 * CONFIG.lr and CONFIG.lr_at(9, 10) == CONFIG.lr
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        TrainConfig(lr_schedule="linear")

    full = tiny_model()
    _train(full, tmp_path / "full", lr_schedule="cosine")
    constant = tiny_model()
    _train(constant)
    assert any(not torch.equal(a, b) for a, b in
               zip(full.state_dict().values(), constant.state_dict().values()))

    # interrupted inside epoch 2 (after epoch 1's checkpoint), then resumed
    steps = {"count": 0}
    loss = TINY_TASK.loss

    def failing_loss(model, batch):
        steps["count"] += 1
        if steps["count"] > 4:   # 3 steps per epoch
            raise RuntimeError("stopped")
        return loss(model, batch)

    monkeypatch.setattr(TINY_TASK, "loss", failing_loss)
    with pytest.raises(RuntimeError, match="stopped"):
        _train(tiny_model(), tmp_path / "resumed", lr_schedule="cosine")
    monkeypatch.undo()
    resumed = tiny_model(seed=123)
    _train(resumed, tmp_path / "resumed", resume=True, lr_schedule="cosine")
    for name, value in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)


def test_warm_up_ramps_the_rate_linearly_then_hands_over_to_the_schedule():
    constant = TrainConfig(lr=1.0, warmup_steps=4)
    assert [constant.lr_at(s, 100) for s in (0, 1, 2, 4, 50)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    cosine = TrainConfig(lr=1.0, warmup_steps=10, lr_schedule="cosine")
    assert cosine.lr_at(5, 110) == 0.5 and cosine.lr_at(10, 110) == 1.0
    assert cosine.lr_at(60, 110) == pytest.approx(0.5) and cosine.lr_at(110, 110) == 0.0
    with pytest.raises(ValueError, match="warmup_steps must be a non-negative integer"):
        TrainConfig(warmup_steps=-1)


def test_the_trainer_applies_the_warm_up():
    """Over a warm-up far longer than the run the rate stays near 0 (step 0 at
    exactly 0), so the weights barely move where the constant rate moves them."""
    start = tiny_model()
    warm, plain = tiny_model(), tiny_model()
    _train(warm, epochs=1, warmup_steps=10 ** 9)
    _train(plain, epochs=1)

    def moved(model):
        return max(float((a - b).abs().max()) for a, b in
                   zip(model.state_dict().values(), start.state_dict().values()))
    assert moved(warm) < 1e-7 < 1e-4 < moved(plain)


def test_user_callbacks_run_in_the_lightning_trainer():
    import lightning.pytorch as pl

    class Steps(pl.Callback):
        def __init__(self):
            self.batches, self.epochs = 0, 0

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.batches += 1

        def on_train_epoch_end(self, trainer, module):
            self.epochs += 1

    steps = Steps()
    graphs = tiny_graphs(NUM_GRAPHS)
    Trainer(tiny_model(), TINY_TASK, graphs, graphs[:4], graphs[4:8], CONFIG,
            progress=False, callbacks=[steps]).fit()
    assert steps.epochs == EPOCHS
    assert steps.batches == EPOCHS * -(-NUM_GRAPHS // BATCH)


def test_callbacks_see_the_validation_metrics():
    """EarlyStopping monitors ``val_accuracy``: asked for a gain of more than 1
    with no patience, training stops after the second epoch."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping

    graphs = tiny_graphs(NUM_GRAPHS)
    config = TrainConfig(**{**vars(CONFIG), "epochs": 6})
    stop = EarlyStopping(monitor="val_accuracy", mode="max", patience=0, min_delta=1.0)
    records = []

    class Seen(pl.Callback):
        def on_validation_end(self, trainer, module):
            records.append(dict(trainer.callback_metrics))

    Trainer(tiny_model(), TINY_TASK, graphs, graphs[:4], graphs[4:8], config,
            progress=False, callbacks=[stop, Seen()]).fit()
    assert stop.stopped_epoch == 1 and len(records) == 2
    assert set(records[0]) == {"val_accuracy"}


def test_recalibrated_pool_norm_statistics_are_those_of_the_current_weights():
    from nft_pyg.graph.collate import collate_graphs
    from nft_pyg.nn.norm import PoolNorm
    from nft_pyg.tasks.engine import recalibrate_pool_norms

    graphs = tiny_graphs(NUM_GRAPHS)
    model = tiny_model(pool_norm=True)
    norm = next(m for m in model.modules() if isinstance(m, PoolNorm))
    pooled = []
    norm.register_forward_hook(lambda module, inputs, output: pooled.append(inputs[0]))
    model.eval()
    rng = torch.get_rng_state()
    # 3 batches of 3 evenly spaced graphs (0, 1, 2, 3, 4, 6, 7, 8, 9 of 11)
    assert recalibrate_pool_norms(model, graphs, batch_size=3, max_batches=3) == 1
    assert not model.training and norm.momentum == 0.1 and norm.num_batches_tracked == 3
    assert torch.equal(torch.get_rng_state(), rng)
    batches = torch.stack([p for p in pooled])          # [3, 3, F]
    torch.testing.assert_close(norm.running_mean, batches.mean(1).mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(norm.running_var, batches.var(1).mean(0), rtol=0, atol=1e-12)
    indices = [0, 1, 2, 3, 4, 6, 7, 8, 9]
    pooled.clear()
    model.train()
    with torch.no_grad():
        model(collate_graphs([graphs[i] for i in indices[:3]]))
    torch.testing.assert_close(pooled[0], batches[0], rtol=0, atol=0)
    assert recalibrate_pool_norms(tiny_model(), graphs, 3, 3) == 0   # no PoolNorm: nothing


def test_trainer_evaluates_with_recalibrated_statistics():
    from nft_pyg.nn.norm import PoolNorm
    from nft_pyg.tasks.engine import recalibrate_pool_norms

    def stats(model):
        norm = next(m for m in model.modules() if isinstance(m, PoolNorm))
        return norm.running_mean.clone(), norm.running_var.clone()

    recalibrated, running = tiny_model(pool_norm=True), tiny_model(pool_norm=True)
    _train(recalibrated, epochs=1, recalibrate_batches=2)
    _train(running, epochs=1, recalibrate_batches=0)
    for name, value in running.named_parameters():   # the same training: same weights
        torch.testing.assert_close(dict(recalibrated.named_parameters())[name], value,
                                   rtol=0, atol=0)
    assert not torch.allclose(stats(recalibrated)[0], stats(running)[0])
    kept = stats(recalibrated)
    recalibrate_pool_norms(recalibrated, tiny_graphs(NUM_GRAPHS), BATCH, 2)
    for before, after in zip(kept, stats(recalibrated)):
        torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_recalibration_runs_everything_but_pool_norm_in_eval_mode():
    """Dropout is off while the statistics are gathered, as in the evaluation
    after it: other random states give the same statistics."""
    from nft_pyg.nn.models import NFN
    from nft_pyg.nn.norm import PoolNorm
    from nft_pyg.tasks.engine import recalibrate_pool_norms

    graphs = tiny_graphs(NUM_GRAPHS)
    torch.manual_seed(0)
    model = NFN("np", num_layers=2, hidden_channels=4, out_channels=2, num_nf_layers=1,
                head_hidden=8, pool_norm=True, dropout=0.5).double()
    norm = next(m for m in model.modules() if isinstance(m, PoolNorm))
    stats = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        recalibrate_pool_norms(model, graphs, batch_size=4, max_batches=2)
        stats.append((norm.running_mean.clone(), norm.running_var.clone()))
    assert model.training
    for first, second in zip(*stats):
        torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_time_budget_and_evaluation_interval(tmp_path):
    _train(tiny_model(), tmp_path / "budget", epochs=3, max_train_seconds=1e-6)
    records = [json.loads(line) for line in
               (tmp_path / "budget" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("epoch") for r in records] == [1, None]     # stopped after epoch 1

    _train(tiny_model(), tmp_path / "every2", epochs=3, eval_every=2)
    records = [json.loads(line) for line in
               (tmp_path / "every2" / "metrics.jsonl").read_text().splitlines()]
    # evaluated on epoch 2 and on the last epoch, never on epoch 1
    assert ["val_accuracy" in r for r in records[:-1]] == [False, True, True]
    assert records[-1]["best_epoch"] in (2, 3)


@pytest.mark.parametrize("environment, first", [
    ({}, True), ({"RANK": "0", "WORLD_SIZE": "4"}, True), ({"RANK": "3"}, False),
    ({"SLURM_PROCID": "1"}, False), ({"LOCAL_RANK": "1"}, False),
    ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False), ({"LOCAL_RANK": "0"}, True)])
def test_only_the_first_process_writes_the_run_folder(monkeypatch, environment, first):
    """Global rank 0 from the launchers' variables, before torch.distributed starts."""
    from nft_pyg.tasks.trainer import is_first_process

    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    assert is_first_process() is first


def test_lightning_tips_to_install_other_products_are_not_printed():
    import logging

    from nft_pyg.tasks.trainer import _lightning_quiet
    _lightning_quiet(banners=True)
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    tip = logging.LogRecord("lightning.pytorch.utilities.rank_zero", logging.INFO, __file__, 1,
                            "💡 Tip: try installing litlogger", None, None)
    banner = logging.LogRecord("lightning.pytorch.utilities.rank_zero", logging.INFO, __file__,
                               1, "GPU available: False, used: False", None, None)
    assert not logger.filter(tip) and logger.filter(banner)
