"""VDSP on the embedded 8x8 digits (issue 12 d): the Diehl & Cook network of
``stdp_diehl_cook.py`` with the STDP rule replaced by ``sf.learning.VDSP``.

Everything else is the same network, data, homeostasis, normalisation and evaluation
(label assignment by each neuron's highest mean response on the training split; see
``stdp_diehl_cook.py``). VDSP here is spikeforge's pre-triggered form: at every input
spike, ``dw = a_plus * max(v - v_rest, 0) - a_minus * max(v_rest - v, 0)`` with ``v`` the
postsynaptic membrane just before that step: neurons charged towards their threshold
(the likely winners) potentiate the synapse, neurons held below ``v_rest`` by the lateral
inhibition or just reset by their own spike depress it. No trace is kept.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vdsp_digits.py                # 3 seeds
    .venv/bin/python benchmarks/vdsp_digits.py --seeds 0 --epochs 1 --neurons 20
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, fields

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stdp_diehl_cook as dc  # noqa: E402
from spikeforge.learning import VDSP  # noqa: E402

VDSP_DEFAULTS = {"a_plus": 0.01, "a_minus": 0.01, "v_rest": 0.2}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--v-rest", type=float, default=VDSP_DEFAULTS["v_rest"])
    for f in fields(dc.Config):
        if f.name in ("a_plus", "a_minus", "tau_trace"):
            continue
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    ap.add_argument("--a-plus", type=float, default=VDSP_DEFAULTS["a_plus"])
    ap.add_argument("--a-minus", type=float, default=VDSP_DEFAULTS["a_minus"])
    args = ap.parse_args(argv)
    for name in ("neurons", "steps", "eval_steps", "epochs", "batch", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    cfg = dc.Config(**{f.name: getattr(args, f.name) for f in fields(dc.Config) if hasattr(args, f.name)})
    rule = VDSP(a_plus=args.a_plus, a_minus=args.a_minus, v_rest=args.v_rest)
    torch.set_num_threads(args.threads)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}; {platform.machine()}; Python {platform.python_version()}; "
          f"torch {torch.__version__}; {args.threads} thread(s)\n# {cfg} (a_plus, a_minus, tau_trace unused)\n# {rule}")
    rows = []
    for seed in args.seeds:
        rows.append(dc.run_one(cfg, seed, rule))
        r = rows[-1]
        print(f"seed {seed}: test {100 * r['test_accuracy']:.2f} %  ({r['classes_covered']} classes assigned, "
              f"{r['mean_test_spikes']:.1f} spikes/test digit, train {r['train_s']:.0f} s)", flush=True)
    accs = [100 * r["test_accuracy"] for r in rows]
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"mean test accuracy over {len(accs)} seed(s): {statistics.mean(accs):.2f} % (sd {sd:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": asdict(cfg), "rule": asdict(rule), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
