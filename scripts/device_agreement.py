"""How alike are trained devices? Top-1 agreement between saved devices on the test images.

A distilled student's agreement with its teacher (issue: distillation) means little without a
baseline: devices trained on the labels alone, never shown the teacher, also agree with it
wherever both are right. This script reads every device of one or more populations saved by
``scripts/ff_benchmarks.py --save-state`` (goodness readout, ``measure`` only, ``--reads``
independent reads each) and reports per device its test error, the error of the goodness
scores averaged over its reads (what a periphery that reads every image several times would
get), and its agreement with itself between reads (the read-noise ceiling of any agreement with
one read), and for every pair of devices their agreement (first reads) and the share of their
disagreements where one of the two is right.

Reproduce, for example::

    python scripts/device_agreement.py --data-dir ../shared/data \\
        scripts/results/rram-optimizer/ff_mnist-rram-ls2-mom0.98-100ep-gbelief-decay0.9.npz \\
        scripts/results/rram-optimizer/ff_mnist-rram-pop8-ls2-mom0.98-gbelief-decay0.9.npz

Seeds: read ``r`` of device ``i`` of state file ``f`` uses key ``--seed + 1000 r`` split over
that file's devices. Results: ``--out`` (default ``scripts/results/device_agreement.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _agreement import agreement_table  # noqa: E402
from _entry import run_script  # noqa: E402
from _record import provenance, write_json  # noqa: E402
from distill_benchmarks import _scores, load_state  # noqa: E402

from mortal import data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("states", nargs="+", help="population files written by "
                        "scripts/ff_benchmarks.py --save-state (.npz)")
    parser.add_argument("--data-dir", default=None, help=f"IDX files (default ${data.DATA_ENV} "
                        "or ../shared/data)")
    parser.add_argument("--reads", type=int, default=3, help="independent reads per device")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "scripts" / "results" /
                                             "device_agreement.json"))
    args = parser.parse_args()
    if args.reads < 2:
        parser.error("--reads must be at least 2 (the self-agreement compares reads)")
    loaded = [(path, *load_state(path, "state")) for path in args.states]
    widths = {spec.widths for _, _, spec, _ in loaded}
    if len(widths) != 1:
        parser.error(f"the states have different widths {sorted(widths)}; compare devices "
                     "of one shape")
    ds = data.load("mnist" if next(iter(widths))[0] == 784 else "digits", args.data_dir)
    xt, yt = jnp.asarray(ds.x_test), np.asarray(ds.y_test)
    started = time.perf_counter()
    names, first, errors, self_agree, mean_read_errors = [], [], [], [], []
    for path, state, _, cfg in loaded:
        scores = np.stack([_scores(state, xt, cfg, args.seed + 1000 * r)
                           for r in range(args.reads)])  # (R, P, N, C)
        reads = scores.argmax(-1)  # (R, P, N)
        averaged = scores.mean(axis=0).argmax(-1)  # (P, N): the scores of all reads averaged
        for i in range(reads.shape[1]):
            names.append(f"{Path(path).stem}[{i}]")
            first.append(reads[0, i])
            errors.append([float(np.mean(reads[r, i] != yt)) for r in range(args.reads)])
            mean_read_errors.append(float(np.mean(averaged[i] != yt)))
            self_agree.append(float(np.mean([np.mean(reads[0, i] == reads[r, i])
                                             for r in range(1, args.reads)])))
        print(f"{path}: {reads.shape[1]} device(s) read {args.reads} times "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    table = agreement_table(np.stack(first), yt)
    result = {"devices": names, "test_error": errors, "self_agreement": self_agree,
              "mean_of_reads_test_error": mean_read_errors, **table,
              "reads": args.reads, "seed": args.seed, "states": args.states,
              **provenance(ROOT, started)}
    out = Path(args.out)
    write_json(out, result, indent=1)
    width = max(len(n) for n in names)
    print(f"{'device':>{width}}  err% (read 1)  err% (mean of reads)  self-agree%  " + "  ".join(
        f"{k:>6}" for k in range(len(names))))
    for i, name in enumerate(names):
        print(f"{name:>{width}}  {100 * errors[i][0]:13.2f}  {100 * mean_read_errors[i]:20.2f}  "
              f"{100 * self_agree[i]:11.2f}  "
              + "  ".join(f"{100 * a:6.2f}" for a in table["agreement"][i]))
    if table["pair_agreement_median"] is not None:
        print(f"pairs: agreement median {100 * table['pair_agreement_median']:.2f}%, min "
              f"{100 * table['pair_agreement_min']:.2f}%, max "
              f"{100 * table['pair_agreement_max']:.2f}%; written to {out}")


if __name__ == "__main__":
    run_script(main)
