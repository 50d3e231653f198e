"""The papers' training recipes as named configurations (``--recipe``).

Each :class:`Recipe` is the reference code's setting of one experiment of
the NFN / NFT papers on MNIST INRs, read off the experiment configs of the
reference repository (``github.com/AllanYangZhou/nfn``, ``experiments/``:
``classify_siren_configs``, ``inr2array_configs``, ``stylize_configs``),
mapped onto this package's models, :class:`~nft_pyg.datasets.MNISTINR` and
:class:`~nft_pyg.tasks.trainer.TrainConfig` (whose optimiser is AdamW; with
zero weight decay that is Adam). ``reference`` keeps the
reference values for the record and ``departures`` says, recipe by recipe,
what the mapping cannot reproduce. They are what a user with a GPU runs to
reproduce the papers (200k steps of a 512-channel NFN do not fit a CPU)::

    nft-pyg train classification --recipe nfn-paper --data-root data

Command-line options given next to ``--recipe`` override the recipe's
values (e.g. ``--epochs 2`` or ``--option hidden=64`` for a short try).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: training INRs of the papers' MNIST INR data with ``extra_fits=10``
#: (4,000 images x 11 fits), hence epochs = steps x batch / this
MNIST_TRAIN_INRS = 44_000


def epochs_for(steps: int, batch_size: int, num_train: int = MNIST_TRAIN_INRS) -> int:
    """The epoch count that gives at least ``steps`` optimiser steps."""
    return -(-steps * batch_size // num_train)


@dataclass(frozen=True)
class Recipe:
    """One experiment of the papers, as this package runs it.

    Attributes:
        name: the ``--recipe`` name.
        task: ``"classification"`` or ``"editing"``.
        model: a model of :data:`~nft_pyg.tasks.models.TASK_MODELS` ``[task]``.
        about: what it reproduces.
        model_options: options of :func:`~nft_pyg.tasks.models.build_model`.
        dataset, size, data_options: the dataset
            (:class:`~nft_pyg.datasets.MNISTINR`, the papers' size and fits).
        train: :class:`~nft_pyg.tasks.trainer.TrainConfig` fields.
        reference: the reference code's values (for the record).
        departures: what differs from the reference and why.
    """

    name: str
    task: str
    model: str
    about: str
    model_options: dict[str, Any]
    train: dict[str, Any]
    reference: dict[str, Any]
    departures: tuple[str, ...]
    dataset: str = "mnist_inr"
    size: str = "full"
    data_options: dict[str, Any] = field(default_factory=lambda: {"extra_fits": 10,
                                                                  "recipe": "nfn"})

    def run_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~nft_pyg.tasks.runner.run_task` (besides
        the task and model)."""
        return {"dataset": self.dataset, "size": self.size,
                "data_options": dict(self.data_options),
                "model_options": dict(self.model_options), **self.train}


_LAYER_SCALE = ("every model of this package reads the weights divided by their per-layer "
                "training-set RMS (LayerScale), where the reference reads raw weights "
                "(normalize: false), so the Fourier features' scale acts on unit-RMS inputs")
_STEPS = ("200,000 steps of batch 32 are given as 146 epochs of the 44,000 training INRs "
          "(213,000 steps)")

_NFN_CLASSIFY = {"optimizer": "Adam", "lr": 1e-3, "batch_size": 32, "warmup_steps": 10_000,
                 "max_steps": 200_000, "extra_aug": 10, "val_every_steps": 3000,
                 "hchannels": [512, 512, 512], "inp_enc_cls": "GaussianFourierFeatureTransform"
                 "(mapping_size=128, scale=3)", "head_cls": "MlpHead(h_size=1000, 2 hidden "
                 "layers, dropout=0.1)", "feature_dropout": 0.1, "normalize": False,
                 "configs": "classify_siren_configs/main.yaml, setup/mnist.yaml, "
                 "nfnet/inv_ff.yaml, nfnet/inv_ff_mnist.yaml"}


def _nfn_recipe(name: str, mode: str) -> Recipe:
    return Recipe(
        name=name, task="classification", model=f"nfn_{mode}",
        about=f"the NFN paper's invariant NFN-{mode.upper()} classifying MNIST INRs "
              "(reference config inv_ff_mnist, with mode " + mode.upper() + ")",
        model_options={"hidden": 512, "num_nf_layers": 3, "fourier_features": 128,
                       "fourier_sigma": 3.0, "head_hidden": [1000, 1000], "dropout": 0.1,
                       "pool_norm": False},
        train={"epochs": epochs_for(200_000, 32), "batch_size": 32, "lr": 1e-3,
               "weight_decay": 0.0, "warmup_steps": 10_000, "grad_clip": None,
               "recalibrate_batches": 0},
        reference={**_NFN_CLASSIFY, "mode": mode.upper()},
        departures=(_STEPS, _LAYER_SCALE,
                    "the reference config names the optimiser `adam` without a stored "
                    "classify_siren opt/adam.yaml; its lr is taken from the repository's "
                    "other opt/adam.yaml (1e-3)",
                    "validation once an epoch (about 1,400 steps) instead of every 3,000 steps"))


RECIPES: dict[str, Recipe] = {
    "nfn-paper": _nfn_recipe("nfn-paper", "hnp"),
    "nfn-np-paper": _nfn_recipe("nfn-np-paper", "np"),
    "nft-paper": Recipe(
        name="nft-paper", task="classification", model="nft",
        about="the NFT paper's neural functional transformer classifying MNIST INRs "
              "(reference config classify_siren nfnet/nft.yaml)",
        model_options={"hidden": 128, "num_blocks": 4, "heads": 4, "sigma": 1.0,
                       "pool_norm": False},
        train={"epochs": epochs_for(200_000, 32), "batch_size": 32, "lr": 1e-3,
               "weight_decay": 0.0, "warmup_steps": 10_000, "grad_clip": None,
               "recalibrate_batches": 0},
        reference={"optimizer": "Adam", "lr": 1e-3, "batch_size": 32, "warmup_steps": 10_000,
                   "max_steps": 200_000, "extra_aug": 10, "num_blocks": 4, "dropout": 0.1,
                   "normalize": True, "inp_enc_cls": "pointwise",
                   "configs": "classify_siren_configs/main.yaml, setup/mnist.yaml, "
                              "nfnet/nft.yaml"},
        departures=(_STEPS,
                    "the stored configs do not set the transformer's width or heads; 128 "
                    "channels (the Inr2Array encoder's enc_map_size) and 4 heads (its "
                    "num_heads) are used",
                    "no dropout: this package's NFT has none",
                    "the reference standardises every weight by training-set statistics "
                    "(normalize: true); here LayerScale divides each layer by its RMS")),
    "inr2array-paper": Recipe(
        name="inr2array-paper", task="classification", model="inr2array",
        about="the NFT paper's Inr2Array: an NFT encoder to a latent array trained to "
              "reconstruct the INR's image, and a classifier on the latents",
        model_options={"hidden": 128, "num_latents": 16, "num_blocks": 6, "heads": 4,
                       "sigma": 3.0, "decoder_channels": 256},
        train={"epochs": epochs_for(200_000, 64), "batch_size": 64, "lr": 1e-4,
               "weight_decay": 0.01, "warmup_steps": 10_000, "lr_schedule": "cosine",
               "grad_clip": None, "recalibrate_batches": 0},
        reference={"optimizer": "AdamW", "lr": 1e-4, "weight_decay": 0.01, "batch_size": 64,
                   "warmup_steps": 10_000, "total_steps": 200_000, "extra_aug": 10,
                   "block_type": "nft", "num_blocks": 6, "enc_scale": 3, "enc_map_size": 128,
                   "num_heads": 4, "ff_factor": 4, "pool_cls": "crossattn_4x4 (16 latents)",
                   "dec_hidden_size": 256, "dec_hidden_layers": 1,
                   "classifier": "lr 1e-4, weight decay 0.1, 100 epochs on frozen latents",
                   "configs": "inr2array_configs/main.yaml, model/nft.yaml, "
                              "classify_latent_configs/main.yaml"},
        departures=("200,000 steps of batch 64 are given as 291 epochs of the 44,000 "
                    "training INRs",
                    "the encoder and the latent classifier train concurrently (the "
                    "classifier on stopped-gradient latents) instead of one after the other",
                    "the cosine decay ends with the 291st epoch (step 200,062) rather than "
                    "at step 200,000")),
    "nfn-dilate-paper": Recipe(
        name="nfn-dilate-paper", task="editing", model="nfn_hnp",
        about="the NFN paper's INR editing (dilating MNIST digits) with an equivariant "
              "NFN-HNP (reference stylize_configs nfnet/equiv.yaml)",
        model_options={"hidden": 128, "num_nf_layers": 3, "fourier_features": 128,
                       "fourier_sigma": 10.0},
        train={"epochs": epochs_for(50_000, 32, 4_000), "batch_size": 32, "lr": 1e-3,
               "weight_decay": 0.0, "warmup_steps": 1000, "grad_clip": None,
               "recalibrate_batches": 0},
        data_options={"extra_fits": 0, "recipe": "nfn"},
        reference={"optimizer": "Adam", "lr": 1e-3, "batch_size": 32, "max_steps": 50_000,
                   "warmup_steps": 1000, "hidden_chan": 128, "hidden_layers": 3, "mode": "HNP",
                   "out_scale": 0.01, "inp_enc_cls": "gaussian (mapping 128, scale 10)",
                   "configs": "stylize_configs/main.yaml, nfnet/equiv.yaml, opt/adam.yaml, "
                              "sched/linear.yaml"},
        departures=("50,000 steps of batch 32 are given as 400 epochs of the 4,000 training "
                    "INRs (one fit per image, as the reference's editing data)",
                    "the editor's output starts at 1e-3 of its initial scale (NFNEditor) "
                    "rather than the reference's out_scale 0.01", _LAYER_SCALE)),
}


def get_recipe(name: str) -> Recipe:
    """The recipe ``name``; a ``ValueError`` naming the known ones otherwise."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    return RECIPES[name]
