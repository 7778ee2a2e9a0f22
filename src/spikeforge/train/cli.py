"""The ``spikeforge`` command: ``train``, ``eval``, ``export`` and ``info``. Argument parsing only; the
work is done by ``spikeforge.train`` (``train``, ``resume``, ``evaluate``).

Every failure is reported as one line on stderr (``spikeforge <command>: error: ...``) with
exit status 2; set ``SPIKEFORGE_TRACEBACK=1`` to see the traceback of an unexpected error.
"""
from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main", "build_parser"]

_TRAIN_OPTIONS = ("dataset", "epochs", "batch_size", "lr", "seed", "neuron", "surrogate", "backend", "device",
                  "encoding", "loss", "method", "steps", "hidden", "recurrent", "data_root", "precision", "frames",
                  "workers", "cache", "quantize", "qat_epochs", "train_size", "dropout", "complement")


class UsageError(Exception):
    """A command line that argparse rejects (reported in one line, like every other error)."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(self.prog, f"{message} (see {self.prog} --help)")


def _version() -> str:
    from .. import __version__

    return f"spikeforge {__version__}"


def _dataset_names() -> list[str]:
    from .config import DataSet

    return [d.value for d in DataSet if d is not DataSet.TONIC] + ["tonic:<Name>"]


def _dataset(value: str) -> str:
    if value in _dataset_names() or (value.startswith("tonic:") and len(value) > 6):
        return value
    raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {', '.join(_dataset_names())})")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="spikeforge", description="Train and evaluate spiking networks on embedded or recorded data.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", metavar="{train,eval,export,info}")
    t = sub.add_parser("train", help="train a model (default: Yin-Yang) into a run folder")
    t.add_argument("--dataset", type=_dataset, metavar="{" + ",".join(_dataset_names()) + "}",
                   help="an embedded data set (yinyang, digits, event-digits), a recorded one read by spikeforge's "
                        "readers from --data-root, or a tonic dataset such as tonic:NMNIST (needs tonic)")
    t.add_argument("--data-root", metavar="DIR", help="recorded and tonic data sets: the folder holding <Name>/ "
                                                      "(never downloaded)")
    t.add_argument("--frames", choices=["counts", "binary"], help="event data: events per step and pixel (default), "
                   "or 0/1 (lets the input layer skip zeros, SpikeLinear)")
    t.add_argument("--workers", type=int, metavar="N", help="data on disk: DataLoader worker processes (default 0)")
    t.add_argument("--cache", action="store_true", default=None,
                   help="spikeforge's readers: keep the binned frames on disk ($SPIKEFORGE_CACHE/data)")
    t.add_argument("--train-size", type=int, metavar="N", help="yinyang: generate N training samples from the "
                   "published seed (default 5000, 64000 with --method eventprop; the published set is the first 5000 of any larger one)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float, help="Adam learning rate (peak of the schedule)")
    t.add_argument("--seed", type=int)
    t.add_argument("--neuron", help="hidden neuron model: IF (default), LIF, CubaLIF, ALIF, ...")
    t.add_argument("--surrogate", help="surrogate gradient: ATan (default), FastSigmoid, Triangle, ...")
    t.add_argument("--backend", choices=["reference", "cpu", "triton"], help="default: automatic")
    t.add_argument("--device", help="cpu (default), cuda, cuda:1, ...")
    t.add_argument("--encoding", choices=["current", "latency"], help="input coding of static features")
    t.add_argument("--loss", choices=["max-membrane", "first-spike"])
    t.add_argument("--method", choices=["bptt", "eventprop", "convert", "proxy", "stdp", "desire"],
                   help="gradients: surrogate BPTT (default), exact EventProp on the event-based simulation (latency "
                   "input, CubaLIF by default), or an ANN converted to IF neurons: convert (trained as an ANN) or proxy "
                   "(trained on the SNN's output); local rules on digits: stdp (unsupervised, Diehl & Cook, label "
                   "assignment) or desire (desire backpropagation)")
    t.add_argument("--steps", type=int, help="time steps T")
    t.add_argument("--hidden", type=int, help="number of hidden neurons")
    t.add_argument("--recurrent", action="store_true", default=None,
                   help="recurrent weights within the hidden layer (spikeforge.nn.Recurrent)")
    t.add_argument("--dropout", type=float, metavar="P", help="in training, drop each hidden spike with "
                   "probability P (nn.Dropout; bptt and eventprop; default 0)")
    t.add_argument("--complement", action=argparse.BooleanOptionalAction, default=None,
                   help="latency input: each feature x also fires on a second channel at the time of 1 - x "
                        "(ON/OFF), so that dark features fire early too (default: on for eventprop on digits)")
    t.add_argument("--precision", choices=["fp32", "bf16"],
                   help="fp32 (default) or bf16: torch.autocast to bfloat16 on CPU and GPU")
    t.add_argument("--quantize", choices=["xylo"], help="after training, map the model onto Xylo's integer "
                   "arithmetic (spikeforge.quant): integer accuracy in metrics.json, model and tables in RUN_DIR/xylo/; "
                   "design-rule violations stop the run before training")
    t.add_argument("--qat-epochs", type=int, metavar="N", help="with --quantize: N epochs of quantisation-aware "
                   "fine-tuning of the integer model (default 0)")
    t.add_argument("--nproc", type=int, metavar="N", help="train on N local processes (PyTorch DDP: gloo on CPU, "
                   "NCCL on CUDA; each takes a share of every batch); torchrun works too")
    t.add_argument("--config", metavar="FILE", help="TOML, YAML or JSON file of options (flags override it)")
    t.add_argument("--out", metavar="RUN_DIR", help="run folder (default runs/<dataset>-<time>-s<seed>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run (--epochs may extend it)")
    t.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    t.add_argument("--quiet", action="store_true", help="print only the result")
    e = sub.add_parser("eval", help="evaluate a checkpoint of a run folder on a data split")
    e.add_argument("run_dir")
    e.add_argument("--split", choices=["train", "val", "test"], default="test")
    e.add_argument("--which", choices=["best", "last"], default="best",
                   help="best.pt (lowest validation loss; default) or last.pt (last completed epoch)")
    x = sub.add_parser("export", help="write a run's model as a NIR graph (needs the nir extra)")
    x.add_argument("run_dir")
    x.add_argument("out", metavar="OUT.nir")
    x.add_argument("--which", choices=["best", "last"], default="best")
    x.add_argument("--dt", type=float, default=1.0, help="NIR time of one step (default 1.0: time in steps)")
    sub.add_parser("info", help="print versions, backends and devices")
    return p


def _train(a: argparse.Namespace, argv: list[str]) -> int:
    from . import config as C
    from .config_files import load_config_file
    from . import distributed
    from .runs import default_run_dir, resume, train

    flags = {k: getattr(a, k) for k in _TRAIN_OPTIONS if getattr(a, k) is not None}
    if a.nproc is not None and a.nproc < 1:
        raise C.ConfigError(f"--nproc must be a positive integer, got {a.nproc}")
    if a.resume:
        extra = sorted(set(flags) - {"epochs"}) + (["config"] if a.config else []) + (["out"] if a.out else [])
        if extra:
            raise C.ConfigError(f"--resume continues a run with its own configuration; drop {extra} "
                                f"(only --epochs may change)")
    else:
        file_values = load_config_file(a.config) if a.config else {}
        cfg = C.make_config(**{**file_values, **flags})
    if a.nproc is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise C.ConfigError(f"--nproc {a.nproc} under torchrun: torchrun already started "
                            f"{os.environ['WORLD_SIZE']} workers; drop --nproc (or run without torchrun)")
    if (a.nproc or 1) > 1 and not a.resume and cfg.method in (C.Method.STDP, C.Method.DESIRE):
        raise C.ConfigError(f"method {cfg.method.value} runs in one process; drop --nproc")
    if (a.nproc or 1) > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        out = a.resume or a.out or str(default_run_dir(cfg))
        return distributed.launch(["train", *_without_nproc(argv), *([] if a.resume or a.out else ["--out", out])],
                                  a.nproc, out)
    if a.resume:
        result = resume(a.resume, epochs=flags.get("epochs"), quiet=a.quiet, plots=not a.no_plots)
    else:
        result = train(cfg, a.out, quiet=a.quiet, plots=not a.no_plots)
    if distributed.rank_from_env() != 0:
        return 0
    if a.quiet:
        print(f"test accuracy {100 * result.test_accuracy:.2f}%  run folder {result.run_dir}")
    elif result.plots:
        print("plots: " + ", ".join(str(result.run_dir / p) for p in result.plots))
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    """The arguments after ``train`` without ``--nproc N`` (each worker is one process)."""
    rest, out = argv[argv.index("train") + 1:], []
    it = iter(rest)
    for arg in it:
        if arg == "--nproc":
            next(it, None)
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _eval(a: argparse.Namespace) -> int:
    from .runs import evaluate

    r = evaluate(a.run_dir, a.split, a.which)
    print(f"{a.split} accuracy {100 * r['accuracy']:.2f}%  loss {r['loss']:.4f}  ({a.which}.pt, epoch {r['epoch']})")
    return 0


def _export(a: argparse.Namespace) -> int:
    from .. import nir
    from .runs import load_run

    model, cfg = load_run(a.run_dir, a.which, device="cpu")
    net = model.network()
    nir.save(net, a.out, dt=a.dt, input_shape=(net[0].in_features if hasattr(net[0], "in_features")
                                               else model.fc_in.in_features,))
    feed = "the features at every step" if cfg.encoding.value == "current" else "the latency-coded spikes"
    print(f"wrote {a.out}: {a.which}.pt of {a.run_dir} as a NIR graph (dt={a.dt}); its input is {feed}")
    return 0


def _info(a: argparse.Namespace) -> int:
    from .info import describe

    print(describe())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        a = parser.parse_args(argv)
    except UsageError as e:
        print(f"{e.prog}: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:          # --help and --version print and stop here
        return e.code if isinstance(e.code, int) else 0
    if a.command is None:
        parser.print_help()
        return 0
    try:
        if a.command == "train":
            return _train(a, argv)
        return {"eval": _eval, "export": _export, "info": _info}[a.command](a)
    except KeyboardInterrupt:
        print(f"\nspikeforge {a.command}: interrupted (completed epochs are kept; continue with --resume)",
              file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("SPIKEFORGE_TRACEBACK"):
            raise
        from . import distributed

        if distributed.peer_lost(e) and os.environ.get(distributed.LAUNCHED):
            return distributed.PEER_LOST_EXIT     # the launcher says which worker stopped
        print(f"spikeforge {a.command}: error: {_describe(e)}", file=sys.stderr)
        return 2


def _describe(e: Exception) -> str:
    """One line for an error: the message of the errors spikeforge raises on purpose; the
    type too for anything else (a bug or a torch failure)."""
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .preflight import one_line
    from ..data import DatasetError
    from ..nir import NIRError
    from .runs import RunError

    text = one_line(e)
    from .distributed import peer_lost, rank_from_env

    if peer_lost(e):
        return (f"rank {rank_from_env()}: another worker stopped or stopped answering (a collective failed: "
                f"{text[:200]}); completed epochs are kept: continue with --resume")
    if isinstance(e, (ConfigError, CheckpointError, RunError, NIRError, DatasetError, FileNotFoundError,
                      FloatingPointError, ImportError)):
        return text
    return f"unexpected {type(e).__name__}: {text} (SPIKEFORGE_TRACEBACK=1 shows where)"


if __name__ == "__main__":
    sys.exit(main())
