"""The ``nft-pyg`` command line.

- ``nft-pyg demo``: the README's main job. Builds a small MNISTINR (SIRENs
  of real MNIST digits, each from its own initialisation), trains the
  MLP-on-flattened-weights baseline, NFN-NP and the Neural Functional
  Transformer on INR classification for a short budget, prints their
  accuracies, saves a few renderings and a neuron-graph drawing, then runs
  the conversion / permutation checks of ``convert-demo``.
- ``nft-pyg convert-demo``: converts a few networks to neuron graphs, checks
  that a random hidden-neuron permutation preserves each network's function
  and maps its graph to an isomorphic one, and saves a drawing.
- ``nft-pyg data build NAME [--size small|full]``: build an offline dataset.
- ``nft-pyg train TASK --model M`` (or ``--recipe NAME``, a paper's
  configuration): one run (``runs/<task>/<model>/<seed>/``) on PyTorch
  Lightning: ``--accelerator`` / ``--devices`` / ``--num-nodes`` /
  ``--strategy`` / ``--precision``; several devices, ``torchrun`` or SLURM
  train with DistributedDataParallel.
- ``nft-pyg results``: collect the runs into a table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from .graph import Sine, from_module, to_module


# --- convert-demo -------------------------------------------------------------------
def demo_networks() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """The embedded default: a SIREN, a ReLU MLP with a norm, a small CNN."""
    siren = nn.Sequential(nn.Linear(2, 32), Sine(30.0), nn.Linear(32, 32), Sine(30.0),
                          nn.Linear(32, 1))
    mlp = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
    cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(16, 10))
    return {"siren 2-32-32-1": (siren, torch.rand(16, 2) * 2 - 1),
            "mlp 64-32-10 (BatchNorm)": (mlp, torch.randn(16, 64)),
            "cnn 1-8-16-10 (8x8 input)": (cnn, torch.randn(16, 1, 8, 8))}


def run_convert_demo(out_dir: Path, seed: int = 0) -> list[dict]:
    from .symmetry import draw, is_type_preserving_isomorphic, permute, random_permutation

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (module, inputs) in demo_networks().items():
        module = module.double().eval()
        inputs = inputs.double()
        graph = from_module(module)
        rebuilt = to_module(graph).eval()
        perm = random_permutation(module, generator=generator)
        permuted = permute(module, perm).eval()
        with torch.no_grad():
            round_trip = (module(inputs) - rebuilt(inputs)).abs().max().item()
            perm_error = (module(inputs) - permuted(inputs)).abs().max().item()
        isomorphic = is_type_preserving_isomorphic(graph, from_module(permuted))
        rows.append({"network": name, "neurons": graph.num_nodes,
                     "weights (edges)": graph.num_edges, "kernel width":
                     int(graph.kernel_width[0]), "round-trip error": round_trip,
                     "permuted error": perm_error, "isomorphic": isomorphic})
    drawing = out_dir / "siren_graph_random.png"
    draw(from_module(demo_networks()["siren 2-32-32-1"][0]), path=drawing)
    _print_table(rows)
    print(f"\nsaved the neuron graph drawing of a random SIREN to {drawing}")
    return rows


def convert_checks_ok(rows: list[dict]) -> bool:
    return all(row["isomorphic"] and row["permuted error"] < 1e-9 and
               row["round-trip error"] == 0 for row in rows)


def _print_table(rows: list[dict]) -> None:
    from .tasks.demo import print_table
    print_table(rows)


# --- parser -------------------------------------------------------------------------
class UsageError(ValueError):
    """Bad input on the command line: one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``prog: error: ...``), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(kind, minimum: float, strict: bool):
    what = {(int, True): "a positive integer", (int, False): "a non-negative integer",
            (float, True): "a positive number", (float, False): "a non-negative number"}
    expected = what[(kind, strict)]

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")) or (
                value <= minimum if strict else value < minimum):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


positive_int, non_negative_int = _number(int, 0, True), _number(int, 0, False)
positive_float, non_negative_float = _number(float, 0, True), _number(float, 0, False)


def augmentation_names(text: str) -> list[str]:
    """``sign_flip,permute`` as a list, each checked against the known names."""
    from .transforms.augment import AUGMENTATIONS

    names = [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown augmentation(s) "
                                         f"{', '.join(map(repr, unknown))}; choose from "
                                         f"{', '.join(sorted(AUGMENTATIONS))}")
    return names


def device_list(text: str):
    """``auto``, a device count, or comma-separated GPU indices (``0,2``)."""
    if text == "auto":
        return text
    try:
        if "," in text:
            return [int(part) for part in text.split(",") if part]
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, a count or indices such as 0,1; "
                                         f"got {text!r}") from None
    if value < 1 and value != -1:
        raise argparse.ArgumentTypeError(f"expected a positive count (or -1: all), got {text!r}")
    return value


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_options(pairs: list[str] | None) -> dict:
    """``["KEY=VALUE", ...]`` as a dict; a value is read as JSON where it is JSON."""
    options = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UsageError(f"expected KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        options[key] = _parse_value(value)
    return options


def build_parser() -> argparse.ArgumentParser:
    from .tasks.data import DATASETS
    from .tasks.models import TASK_MODELS
    from .tasks.recipes import RECIPES
    from .tasks.trainer import LR_SCHEDULES

    parser = _Parser(prog="nft-pyg", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="the README's main job (about 2-3 minutes on "
                                            "2 idle CPU cores)")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"),
                      help="folder for the outputs (default: runs/demo)")
    demo.add_argument("--data-root", type=Path, default=Path("data"))
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--budget", type=float, default=None,
                      help="cap on each model's training seconds (default 150)")
    demo.add_argument("--threads", type=int, default=1,
                      help="torch threads (default 1: on a busy or 2-core machine more "
                           "threads make small graph ops slower, not faster)")
    demo.add_argument("--no-progress", action="store_true")

    convert = commands.add_parser("convert-demo", help="convert networks, check permutations")
    convert.add_argument("--out", type=Path, default=Path("runs/demo"))
    convert.add_argument("--seed", type=int, default=0)

    data = commands.add_parser("data", help="offline datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    build = data_commands.add_parser("build", help="build (or finish building) a dataset")
    build.add_argument("name", choices=DATASETS)
    build.add_argument("--size", choices=("small", "full"), default="small")
    build.add_argument("--root", type=Path, default=Path("data"))
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--workers", type=int, default=2)
    build.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                       help="dataset option (JSON value), e.g. num_images=300; repeatable")

    train = commands.add_parser("train", help="train one model on one task")
    train.add_argument("task", choices=tuple(TASK_MODELS))
    train.add_argument("--model", default=None,
                       help="; ".join(f"{t}: {', '.join(m)}" for t, m in TASK_MODELS.items())
                       + " (required unless --recipe gives it)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--size", choices=("tiny", "small", "full"), default=None,
                       help="dataset size (default: small, or the recipe's)")
    train.add_argument("--data-root", type=Path, default=Path("data"))
    train.add_argument("--runs-root", type=Path, default=Path("runs"))
    # --- the papers' recipes (nft_pyg/tasks/recipes.py) ---
    train.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                       help="a paper's configuration (model, options, data, optimisation); "
                            "the options given beside it override its values")
    train.add_argument("--dataset", choices=DATASETS, default=None,
                       help="the dataset (default: the task's, or the recipe's)")
    train.add_argument("--epochs", type=positive_int, default=None)
    train.add_argument("--batch-size", type=positive_int, default=None,
                       help="global batch size (split between the processes)")
    train.add_argument("--lr", type=positive_float, default=None)
    train.add_argument("--weight-decay", type=non_negative_float, default=None)
    train.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=None,
                       help="learning-rate schedule over the epochs (default: constant)")
    train.add_argument("--warmup-steps", type=non_negative_int, default=None, metavar="N",
                       help="linear learning-rate warm-up over the first N steps (default 0)")
    train.add_argument("--grad-clip", type=non_negative_float, default=None, metavar="NORM",
                       help="clip the gradient norm at NORM (default 1; 0 turns clipping off)")
    train.add_argument("--recalibrate-batches", type=non_negative_int, default=None,
                       metavar="N",
                       help="before each evaluation, recompute PoolNorm statistics over N "
                            "training batches (default 32; 0 keeps the running averages)")
    train.add_argument("--max-train-seconds", type=positive_float, default=None)
    train.add_argument("--option", action="append", metavar="KEY=VALUE",
                       help="model option (JSON value), e.g. hidden=64; repeatable")
    train.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                       help="dataset option, as for `data build`; repeatable")
    train.add_argument("--augment", type=augmentation_names, default=[], metavar="NAMES",
                       help="comma-separated augmentations of the training graphs: "
                            "sign_flip, permute")
    train.add_argument("--accelerator", default=None,
                       choices=("auto", "cpu", "gpu", "cuda", "mps"),
                       help="where to train (default auto: a GPU when there is one)")
    train.add_argument("--devices", type=device_list, default=None,
                       help="devices per node: auto (default; under torchrun its processes), "
                            "a count, or GPU indices such as 0,1")
    train.add_argument("--num-nodes", type=positive_int, default=None,
                       help="machines taking part (default 1; torchrun / SLURM set it)")
    train.add_argument("--strategy", default=None,
                       help="Lightning strategy: auto (default: DDP with several devices), "
                            "ddp, ddp_spawn, ...")
    train.add_argument("--precision", default=None,
                       choices=("32-true", "bf16-mixed", "16-mixed", "64-true"),
                       help="default 32-true; bf16-mixed on recent GPUs")
    resume = train.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="continue the run from its last.ckpt")
    resume.add_argument("--overwrite", action="store_true",
                        help="start again in a run folder that already holds a run")
    train.add_argument("--threads", type=int, default=None,
                       help="torch threads per process (default: torch's default)")
    train.add_argument("--no-progress", action="store_true")

    tickets = commands.add_parser("tickets", help="winning tickets: predict IMP masks from "
                                                  "initialisations with an equivariant CVAE")
    from .tasks import tickets as tickets_task
    tickets_task.add_arguments(tickets)

    results = commands.add_parser("results", help="collect runs into a table")
    results.add_argument("--runs-root", type=Path, default=Path("runs"))
    results.add_argument("--json", action="store_true", help="print JSON rows")
    return parser


def train_options(args: argparse.Namespace) -> dict:
    """``run_task`` keyword arguments of ``nft-pyg train``: the recipe's values
    (``--recipe``), overridden by the options given on the command line."""
    given = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
             "weight_decay": args.weight_decay, "lr_schedule": args.lr_schedule,
             "warmup_steps": args.warmup_steps,
             "recalibrate_batches": args.recalibrate_batches,
             "max_train_seconds": args.max_train_seconds}
    options: dict = {"model": args.model, "size": "small", "dataset": None,
                     "model_options": {}, "data_options": {}}
    if args.recipe is not None:
        from .tasks.recipes import get_recipe
        recipe = get_recipe(args.recipe)
        if recipe.task != args.task:
            raise ValueError(f"--recipe {recipe.name} is a recipe of task {recipe.task!r}, "
                             f"not {args.task!r}")
        if args.model is not None and args.model != recipe.model:
            raise ValueError(f"--recipe {recipe.name} trains model {recipe.model!r}; "
                             f"--model {args.model} contradicts it")
        options.update(recipe.run_options(), model=recipe.model)
    if options["model"] is None:
        raise ValueError("give --model (or a --recipe)")
    options["model_options"].update(parse_options(args.option))
    options["data_options"].update(parse_options(args.data_option))
    options.update({key: value for key, value in given.items() if value is not None})
    if args.grad_clip is not None:
        options["grad_clip"] = args.grad_clip or None     # 0: no clipping
    if args.size is not None:
        options["size"] = args.size
    if args.dataset is not None:
        options["dataset"] = args.dataset
    return options


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:      # usage errors (already printed) and --help
        return stop.code if isinstance(stop.code, int) else 2
    try:
        return _run(args)
    except UsageError as err:
        print(f"nft-pyg {args.command}: error: {err}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if args.command == "demo":
        from .tasks.demo import run_demo
        started = time.perf_counter()
        run_demo(args.out, args.data_root, args.seed, progress=not args.no_progress,
                 budget_seconds=args.budget)
        print("\nconversion and permutation checks:")
        ok = convert_checks_ok(run_convert_demo(args.out, args.seed))
        print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
        if not ok:
            print("demo: a conversion check failed (see the table)", file=sys.stderr)
        return 0 if ok else 1
    if args.command == "convert-demo":
        ok = convert_checks_ok(run_convert_demo(args.out, args.seed))
        if not ok:
            print("convert-demo: a check failed (see the table)", file=sys.stderr)
        return 0 if ok else 1
    if args.command == "data":
        from .tasks.data import load_splits
        from .tasks.trainer import ConfigurationError
        try:
            splits = load_splits(args.name, args.root, args.size, args.seed,
                                 num_workers=args.workers, **parse_options(args.data_option))
        except ConfigurationError as err:
            print(f"nft-pyg data: error: {err}", file=sys.stderr)
            return 2
        print(", ".join(f"{split}: {len(ds)} graphs" for split, ds in splits.items()),
              f"in {args.root / args.name}")
        return 0
    if args.command == "train":
        return _train(args)
    if args.command == "tickets":
        from .tasks import tickets as tickets_task
        tickets_task.main(args)
        return 0
    if args.command == "results":
        from .tasks.results import collect_runs, results_table
        rows = collect_runs(args.runs_root)
        if not rows:
            print(f"no finished runs under {args.runs_root}", file=sys.stderr)
            return 1
        print(json.dumps(rows, indent=2) if args.json else results_table(rows))
        return 0
    return 2


def _train(args) -> int:
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from .tasks.data import TASK_DATASET
    from .tasks.models import TASK_MODELS
    from .tasks.runner import run_task
    from .tasks.trainer import ConfigurationError, is_first_process
    try:
        options = train_options(args)
    except ValueError as error:
        print(f"nft-pyg train: error: {error}", file=sys.stderr)
        return 2
    model = options.pop("model")
    if model not in TASK_MODELS[args.task]:
        print(f"nft-pyg train: {model!r} is not a model of {args.task}; choose from "
              f"{', '.join(TASK_MODELS[args.task])}", file=sys.stderr)
        return 2
    if not args.data_root.is_dir():
        # a mistyped --data-root would otherwise start building a dataset there
        dataset = options["dataset"] or TASK_DATASET[args.task]
        print(f"nft-pyg train: error: data root {str(args.data_root)!r} does not exist; build "
              f"the dataset first (`nft-pyg data build {dataset} --root "
              f"{args.data_root}`)", file=sys.stderr)
        return 2
    devices = {key: value for key, value in (
        ("accelerator", args.accelerator), ("devices", args.devices),
        ("num_nodes", args.num_nodes), ("strategy", args.strategy),
        ("precision", args.precision)) if value is not None}
    try:
        final = run_task(args.task, model, seed=args.seed, data_root=args.data_root,
                         runs_root=args.runs_root, resume=args.resume,
                         overwrite=args.overwrite, progress=not args.no_progress,
                         augment=args.augment, **options, **devices)
    except (ConfigurationError, MisconfigurationException) as err:
        # settings, options, folders or devices that cannot be used: say which
        print(f"nft-pyg train: error: {err}", file=sys.stderr)
        return 2
    if is_first_process():
        print(json.dumps(final, indent=2))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
