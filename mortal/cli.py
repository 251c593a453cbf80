"""The ``mortal`` command line.

Every user-facing error is one line on stderr (``mortal: error: ...``) with exit code 2 and no
traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import devices


class UserError(Exception):
    """A mistake in what the user asked for; printed as one line, exit code 2."""


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned columns."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            if math.isinf(v):
                return "inf" if v > 0 else "-inf"
            return f"{v:.4g}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# mortal devices
# ---------------------------------------------------------------------------------------------

_D2D_C2C = {
    "gain_sigma": "d2d", "threshold_sigma": "d2d", "sharpness_sigma": "d2d",
    "saturation_sigma": "d2d", "density": "d2d", "receptive_field": "d2d",
    "bound_sigma": "d2d", "read_gain_sigma": "d2d", "dw_min_sigma": "d2d",
    "up_down_sigma": "d2d", "stuck_zero_rate": "d2d", "stuck_bound_rate": "d2d",
    "step_noise": "c2c", "write_noise": "c2c", "out_noise": "c2c", "drift_nu_sigma": "d2d",
    "lifetime_sigma": "d2d", "fail_noisy_fraction": "d2d",
}


def describe_spec(spec: devices.DeviceSpec) -> str:
    """The recipe's parameters, one per line, grouped by part, with d2d / c2c marked."""
    lines = [f"recipe {spec.name!r}: widths {'-'.join(map(str, spec.widths))}, "
             f"input RMS-normalised: {spec.normalize_input}"]
    parts: list[tuple[str, Any]] = []
    for part in ("neuron", "connectivity", "synapse", "read"):
        value = getattr(spec, part)
        if isinstance(value, tuple):
            parts += [(f"{part} (layer {i})", v) for i, v in enumerate(value)]
        else:
            parts.append((f"{part} (all layers)", value))
    parts.append(("aging (device)", spec.aging))
    for title, sub in parts:
        lines.append(f"  {title}")
        for f in dataclasses.fields(sub):
            v = getattr(sub, f.name)
            tag = _D2D_C2C.get(f.name, "")
            lines.append(f"    {f.name:<20} {v!s:<14} {tag}".rstrip())
    return "\n".join(lines)


def population_table(pop: devices.Device) -> str:
    """One row per device: the fab draw's main statistics (from ``inspect``, analysis only)."""
    import jax
    import numpy as np

    info = jax.vmap(devices.inspect)(pop)
    rows = []
    for d in range(pop.population_size or 1):
        layers = [jax.tree.map(lambda a, d=d: np.asarray(a[d]), lay) for lay in info["layers"]]
        gain = np.concatenate([lay["gain"] for lay in layers])
        thr = np.concatenate([lay["threshold"] for lay in layers])
        mask = np.concatenate([lay["mask"][:-1].ravel() for lay in layers])
        stuck = np.concatenate([lay["stuck"].ravel() for lay in layers])
        wmax = np.concatenate([lay["w_max"].ravel() for lay in layers])
        dw = np.concatenate([lay["dw_up"].ravel() for lay in layers])
        nu = np.concatenate([lay["drift_nu"].ravel() for lay in layers])
        fail = np.concatenate([lay["fail_time"] for lay in layers])
        rows.append([d, float(np.exp(np.log(gain).mean())), float(np.log(gain).std()),
                     float(thr.std()), float(mask.mean()), 100 * float((stuck != 0).mean()),
                     float(np.median(wmax)), float(dw.mean()), float(nu.mean()),
                     float(fail.min())])
    headers = ["device", "gain(geo)", "log-gain sd", "thresh sd", "density", "stuck %",
               "w_max med", "dw_up mean", "drift nu", "1st death s"]
    return format_table(headers, rows)


def _cmd_devices(args: argparse.Namespace) -> int:
    import jax

    if args.preset is None:
        rows = [[name, fn.__doc__.strip().splitlines()[0] if fn.__doc__ else ""]
                for name, fn in devices.PRESETS.items()]
        print(format_table(["preset", "what it is"], rows))
        print("\nmortal devices --preset NAME [-n N] [--plot curves.png] shows one in detail.")
        return 0
    spec = devices.preset(args.preset, tuple(args.widths))
    print(describe_spec(spec))
    if args.n is None and args.plot is None:
        return 0
    n = args.n if args.n is not None else 8
    if n < 1:
        raise UserError(f"-n must be a positive population size, got {n}")
    if not 0 <= args.layer < spec.n_layers:
        raise UserError(f"--layer must be in [0, {spec.n_layers - 1}] for this recipe, "
                        f"got {args.layer}")
    plot_path = None
    if args.plot is not None:
        plot_path = Path(args.plot)
        if plot_path.exists() and not args.force:
            raise UserError(f"{plot_path} exists; choose another path or pass --force")
        if not plot_path.parent.exists():
            raise UserError(f"directory {plot_path.parent} does not exist; create it first")
    pop = devices.spawn(spec, n, jax.random.key(args.seed))
    print(f"\npopulation of {n} (seed {args.seed}); device i is fabricate(spec, "
          f"split(key({args.seed}), {n})[i])")
    print(population_table(pop))
    if plot_path is not None:
        from mortal.plots import plot_transfer_curves

        plot_transfer_curves(pop, plot_path, layer=args.layer)
        print(f"\nwrote {plot_path}")
    return 0


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit code 2, no usage dump
        raise UserError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mortal", description="Mortal computation: populations of physically "
                     "different analog devices that learn in place and distil into each other.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    p = sub.add_parser("devices", help="list device presets, show one, fabricate a population")
    p.add_argument("--preset", help=f"one of: {', '.join(devices.PRESETS)}")
    p.add_argument("-n", type=int, help="fabricate a population of N devices and tabulate it")
    p.add_argument("--widths", type=int, nargs="+", default=list(devices.REFERENCE_WIDTHS),
                   help="layer widths, input first (default: 784 1000 1000 1000)")
    p.add_argument("--seed", type=int, default=0, help="fab seed (default 0)")
    p.add_argument("--plot", help="write a PNG of the population's neuron transfer curves")
    p.add_argument("--layer", type=int, default=0, help="layer to plot (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(func=_cmd_devices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        return int(args.func(args))
    except (UserError, devices.SpecError) as exc:
        print(f"mortal: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mortal: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
