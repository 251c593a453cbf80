"""The ``mortal`` command line.

Every user-facing error is one line on stderr (``mortal: error: ...``) with exit code 2 and no
traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import devices
from mortal.plots import FORMATS as FIGURE_FORMATS

FIGURE_SUFFIXES = tuple(FIGURE_FORMATS)  # .png, .pdf, .svg: what mortal.plots writes


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

    given = [flag for flag, value in (("-n", args.n), ("--plot", args.plot),
                                      ("--layer", args.layer), ("--seed", args.seed),
                                      ("--widths", args.widths)) if value is not None]
    if args.force:
        given.append("--force")
    if args.preset is None:
        if given:
            verb = "needs" if len(given) == 1 else "need"
            raise UserError(f"{', '.join(given)} {verb} a recipe: add --preset NAME (see "
                            "'mortal devices' for the names)")
        rows = [[name, fn.__doc__.strip().splitlines()[0] if fn.__doc__ else ""]
                for name, fn in devices.PRESETS.items()]
        print(format_table(["preset", "what it is"], rows))
        print("\nmortal devices --preset NAME [-n N] [--plot curves.png] shows one in detail.")
        return 0
    spec = devices.preset(args.preset, tuple(args.widths or devices.REFERENCE_WIDTHS))
    if args.n is None and args.plot is None:
        unused = [f for f in given if f in ("--layer", "--seed", "--force")]
        if unused:
            verb = "applies" if len(unused) == 1 else "apply"
            raise UserError(f"{', '.join(unused)} only {verb} to a population: add -n N or "
                            "--plot FILE")
        print(describe_spec(spec))
        return 0
    n = args.n if args.n is not None else 8
    if n < 1:
        raise UserError(f"-n must be a positive population size, got {n}")
    layer = 0 if args.layer is None else args.layer
    if not 0 <= layer < spec.n_layers:
        raise UserError(f"--layer must be in [0, {spec.n_layers - 1}] for this recipe, "
                        f"got {layer}")
    if args.plot is None and (args.layer is not None or args.force):
        raise UserError("--layer and --force apply to the plot: add --plot FILE")
    seed = 0 if args.seed is None else args.seed
    plot_path = None
    if args.plot is not None:
        plot_path = Path(args.plot)
        if plot_path.suffix.lower() not in FIGURE_SUFFIXES:
            raise UserError(f"--plot {plot_path}: name a .png, .pdf or .svg file")
        if plot_path.exists() and not args.force:
            raise UserError(f"{plot_path} exists; choose another path or pass --force")
        if not plot_path.parent.exists():
            raise UserError(f"directory {plot_path.parent} does not exist; create it first")
    print(describe_spec(spec))
    pop = devices.spawn(spec, n, jax.random.key(seed))
    print(f"\npopulation of {n} (seed {seed}); device i is fabricate(spec, "
          f"split(key({seed}), {n})[i])")
    print(population_table(pop))
    if plot_path is not None:
        from mortal.plots import plot_transfer_curves

        plot_transfer_curves(pop, plot_path, layer=layer)
        print(f"\nwrote {plot_path}")
    return 0


# ---------------------------------------------------------------------------------------------
# runs: demo, spawn, train, distill, eval
# ---------------------------------------------------------------------------------------------

DEFAULT_DEMO = Path("runs") / "demo.h5"


def _seed(text: str) -> int:
    """An argparse type: a seed, an integer in [0, 2**32) (``mortal.config.SEED_LIMIT``)."""
    from mortal.config import seed_problem

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the seed must be an integer, got {text!r}") from None
    problem = seed_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"the seed {problem}")
    return value


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="TOML", help="a TOML config file (see 'mortal config')")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set train.lr=0.02")
    p.add_argument("--seed", type=_seed, help="the run's seed, 0 <= S < 2**32 (same as --set "
                   "run.seed=S)")


def _add_run_args(p: argparse.ArgumentParser, default_out: Path | None = None,
                  computes: bool = True) -> None:
    """The options of the commands that write a run file (``computes``: it runs epochs, so the
    work can be split over accelerators and processes, and there is progress to report)."""
    _add_config_args(p)
    p.add_argument("-o", "--out", metavar="RUN.h5", help="the run file to write"
                   + (f" (default {default_out})" if default_out else ""))
    p.add_argument("--resume", metavar="RUN.h5",
                   help="continue a killed or interrupted run from its last checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite an existing run file")
    p.set_defaults(default_out=default_out)
    if not computes:
        return
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.add_argument("--mesh", type=int, metavar="N",
                   help="split the population over N accelerators (default, or 0: as many of "
                   "the visible ones as divide it evenly)")
    p.add_argument("--distributed", action="store_true",
                   help="join a multi-process run (jax.distributed; coordinator, process count "
                   "and id from the flags below, MORTAL_* variables, or Slurm / Open MPI)")
    p.add_argument("--coordinator", metavar="HOST:PORT", help="with --distributed")
    p.add_argument("--num-processes", type=int, metavar="N", help="with --distributed")
    p.add_argument("--process-id", type=int, metavar="I", help="with --distributed")


def _config_from(args: argparse.Namespace, forced: Sequence[str] = ()) -> Any:
    from mortal.config import load_config

    return load_config(args.config, [*args.sets, *forced], args.seed)


def _given_config(args: argparse.Namespace) -> bool:
    return bool(args.config or args.sets or args.seed is not None)


def _check_folders(p: Path) -> None:
    """Refuse an output below a path that is a file (mkdir would fail with a bare errno)."""
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"cannot write {p}: {parent} is a file, not a folder")
            return


def _output_path(args: argparse.Namespace) -> Path:
    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            raise UserError("--resume continues the file it names; drop -o/--out")
        p = Path(args.resume)
        if p.is_dir():
            raise UserError(f"cannot resume {p}: it is a directory; name a run file")
        if not p.is_file():
            raise UserError(f"cannot resume {p}: no such file")
        return p
    if not args.out and not args.default_out:
        raise UserError("name the run file to write with -o RUN.h5")
    p = Path(args.out or args.default_out)
    if p.suffix not in (".h5", ".hdf5"):
        raise UserError(f"run files end in .h5; got {p}")
    if p.exists() and not args.force:
        raise UserError(f"{p} exists; choose another path, pass --force to overwrite it, or "
                        f"--resume {p} to continue it")
    if p.is_dir():
        raise UserError(f"{p} is a directory; name a file")
    _check_folders(p)  # the folders are made once the run is accepted (cli_jobs.run_job)
    return p


def _execute(args: argparse.Namespace, forced: Sequence[str],
             recorded: Sequence[str] = ()) -> Path | None:
    """Write (or resume) the run. ``forced``: ``--set`` items the command itself puts on top of
    the user's config for a new run; ``recorded``: the ``section.key`` names it sets itself,
    which a resume takes from the stored config (unless the user sets them with ``--set``), so
    that the same config file is accepted when resuming as when starting."""
    from mortal import cli_jobs, parallel
    from mortal.runlog import is_locked

    if args.mesh is not None and args.mesh < 0:
        raise UserError(f"--mesh {args.mesh}: give a number of accelerators >= 1 (0 or no "
                        "--mesh: as many as divide the population)")
    if not args.distributed and (args.coordinator or args.num_processes is not None
                                 or args.process_id is not None):
        raise UserError("--coordinator, --num-processes and --process-id only apply to a "
                        "multi-process run; add --distributed")
    if args.distributed:
        try:
            parallel.initialize(args.coordinator, args.num_processes, args.process_id)
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"could not join the distributed run ({str(exc).splitlines()[0]}); "
                            "check --coordinator, --num-processes and --process-id") from None
    if not parallel.is_writer():  # process 0 owns the file and the checks on it
        return _execute_follower(args, forced)

    def prepare() -> tuple[Path, Any, bool]:
        path = _output_path(args)
        if path.exists() and is_locked(path):
            raise UserError(f"{path} is being written by another process; wait for it to "
                            "finish, or write to another file")
        if args.resume:
            from mortal import runs

            requested = None
            if _given_config(args):  # changes on top of the stored config must change nothing
                from mortal.config import load_config

                text = runs.config_text(path)
                kept = _recorded_sets(load_config(text=text), recorded, args.sets)
                requested = load_config(args.config, [*args.sets, *kept], args.seed, text=text)
            cfg = cli_jobs.check_resume_config(path, requested)
            if runs.status(path) == "complete":
                run_table(path)  # a complete run that does not read whole (a cut copy): refused
                return path, cfg, True
        else:
            cfg = _config_from(args, forced)
        return path, cfg, False

    path, cfg, complete = _agreed(prepare)
    if complete:
        print(f"{path} is already complete; nothing to resume")
        return path
    reporter = cli_jobs.Reporter(progress=True, quiet=args.quiet)
    mesh = _mesh(cfg, args)
    what = "resuming" if args.resume else "writing"
    where = f"; {mesh.size} accelerators" if mesh is not None else ""
    header = f"{what} {path} (seed {cfg.run.seed}; phases {', '.join(cfg.run.phases)}{where})"
    try:
        cli_jobs.run_job(cfg, path, command_line=_command_line(), reporter=reporter,
                         force=args.force, resume=bool(args.resume), mesh=mesh,
                         on_start=lambda: print(header, flush=True))
    except KeyboardInterrupt:
        raise UserError(f"interrupted; {path} keeps its completed epochs: continue with "
                        f"'mortal {args.command} --resume {path}'") from None
    return path


def _recorded_sets(stored: Any, keys: Sequence[str], sets: Sequence[str]) -> list[str]:
    """``--set`` items giving the keys ``keys`` their values in the config ``stored``, but for
    the keys that ``sets`` (the user's ``--set`` items) name."""
    from mortal.config import parse_set, toml_value

    named = {parse_set(item)[0] for item in sets}
    out = []
    for dotted in keys:
        if dotted not in named:
            section, key = dotted.split(".")
            out.append(f"{dotted}={toml_value(getattr(getattr(stored, section), key))}")
    return out


def _mesh(cfg: Any, args: argparse.Namespace) -> Any:
    from mortal import parallel

    sizes = [cfg.device.population] if "train" in cfg.run.phases else []
    if "distill" in cfg.run.phases:
        sizes.append(cfg.distill.students)
    try:
        return parallel.population_mesh(math.gcd(*sizes), args.mesh)
    except parallel.MeshError as exc:
        raise UserError(str(exc)) from None


def _execute_follower(args: argparse.Namespace, forced: Sequence[str]) -> Path | None:
    """A process other than 0 of a distributed run: compute, print and write nothing."""
    from mortal import cli_jobs, runs

    path = Path(args.resume or args.out or args.default_out)

    def prepare() -> tuple[Any, bool]:
        if args.resume:
            return cli_jobs.check_resume_config(path, None), runs.status(path) == "complete"
        return _config_from(args, forced), False

    cfg, complete = _agreed(prepare)
    if complete:
        return None
    cli_jobs.run_job(cfg, path, command_line=_command_line(),
                     reporter=cli_jobs.Reporter(progress=False, quiet=True),
                     resume=bool(args.resume), mesh=_mesh(cfg, args))
    return None


def _agreed(prepare: Callable[[], Any]) -> Any:
    """``prepare()`` (the checks before a run's first epoch) in every process of a distributed
    run, then a collective: if any process refused the run, every process stops with one line
    (its own error, or one naming the process that refused) instead of waiting for the others
    until a collective times out with a traceback. One process: ``prepare()``."""
    import jax

    from mortal import parallel

    if jax.process_count() == 1:
        return prepare()
    error: BaseException | None = None
    result: Any = None
    try:
        result = prepare()
    except _user_errors() as exc:
        error = exc
    refused = parallel.processes_that_refused(error is not None)
    if error is not None:
        raise error
    if refused:
        raise UserError(f"process {refused[0]} of this distributed run refused it (its own "
                        "error line says why); nothing was written")
    return result


def _command_line() -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in ["mortal", *sys.argv[1:]])


def _no_phases_set(args: argparse.Namespace, phases: list[str]) -> None:
    """``train``, ``distill`` and ``spawn`` set ``run.phases`` themselves; an explicit other
    value would be silently replaced."""
    from mortal.config import parse_set

    for item in args.sets:
        key, given = parse_set(item)
        if key == "run.phases" and given != phases:
            raise UserError(f"'mortal {args.command}' runs phases {phases}; drop --set "
                            "run.phases ('mortal demo' trains, then distils)")


def _cmd_train(args: argparse.Namespace) -> int:
    _no_phases_set(args, ["train"])
    path = _execute(args, ["run.phases=[\"train\"]"], recorded=["run.phases"])
    if path is not None:
        print(run_table(path))
    return 0


# what 'mortal distill' sets itself from --teacher and --device: a resume keeps the recorded
# values (it distils from the recorded teacher)
_DISTILL_RECORDED = ("run.phases", "distill.teacher_run", "distill.teacher", "device.widths")


def _cmd_distill(args: argparse.Namespace) -> int:
    _no_phases_set(args, ["distill"])
    forced: list[str] = []
    if args.resume and (args.teacher or args.device is not None):
        given = " and ".join(f for f, v in (("--teacher", args.teacher),
                                            ("--device", args.device)) if v is not None)
        raise UserError(f"--resume continues the distillation from the teacher it recorded; "
                        f"drop {given} (to distil from another teacher, start a new run)")
    if not args.resume:
        if not args.teacher:
            raise UserError("name the trained run to distil from with --teacher RUN.h5")
        teacher = Path(args.teacher)
        if teacher.is_dir():
            raise UserError(f"teacher run {teacher} is a directory; name a run file")
        if not teacher.is_file():
            raise UserError(f"teacher run {teacher} does not exist")
        if args.out and Path(args.out).resolve() == teacher.resolve():
            raise UserError(f"-o {args.out} is the teacher's own run file; write the students "
                            "to another file")
        # stored absolute, so that a resume from another folder finds it
        forced = ["run.phases=[\"distill\"]",
                  f"distill.teacher_run={json.dumps(str(teacher.resolve()))}"]
        if args.device is not None:
            forced.append(f"distill.teacher={json.dumps(str(args.device))}")
        from mortal import runs

        info = runs.population_info(teacher, "train")
        widths = info["recipe"]["widths"]
        if not any(s.startswith("device.widths") for s in args.sets):
            forced.append(f"device.widths={list(widths)}")
    path = _execute(args, forced, recorded=_DISTILL_RECORDED)
    if path is not None:
        print(run_table(path))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    path = _execute(args, [])
    if path is None:
        return 0
    png = path.with_suffix(".png")
    from mortal.plots import plot_run

    plot_run(path, png)
    print(run_table(path))
    print(f"\nwrote {path} and {png} in {time.perf_counter() - t0:.0f} s; "
          f"'mortal show {path}' summarises it")
    return 0


def _cmd_spawn(args: argparse.Namespace) -> int:
    from mortal import cli_jobs
    from mortal.runlog import RunWriter

    if args.resume:
        raise UserError("spawn writes a new file; to train a spawned population use "
                        "'mortal train --resume FILE'")
    _no_phases_set(args, ["train"])
    path = _output_path(args)
    cfg = _config_from(args, ["run.phases=[\"train\"]"])
    job = cli_jobs.Job(cfg, cli_jobs.Reporter(progress=False, quiet=True))
    path.parent.mkdir(parents=True, exist_ok=True)  # the run is accepted
    with RunWriter.create(path, attributes=job.attributes(_command_line()),
                          populations=job.plans(), force=args.force) as w:
        w.set_status("spawned")
    pop = jax_population(job)
    print(population_table(pop))
    print(f"\nwrote {path}: {cfg.device.population} '{cfg.device.preset}' devices, not trained; "
          f"train them with 'mortal train --resume {path}'")
    return 0


def jax_population(job: Any) -> devices.Device:
    return job.populations["train"]["state"].device


def _cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from mortal import cli_jobs, runs

    cfg = cli_jobs.check_resume_config(args.run, None)
    pops = runs.populations(args.run)
    pop = args.population or pops[-1]
    if pop not in pops:
        raise UserError(f"{args.run} has no population {pop!r}; it has {', '.join(pops)}")
    info = runs.population_info(args.run, pop)
    if args.device is not None and not 0 <= args.device < info["size"]:
        raise UserError(f"--device {args.device} is out of range: population {pop!r} has "
                        f"devices 0..{info['size'] - 1}")
    if info["epochs_done"] == 0:
        raise UserError(f"population {pop!r} of {args.run} has no completed epoch to evaluate")
    job = cli_jobs.Job(cfg, cli_jobs.Reporter(progress=False, quiet=True))
    role = pop
    epoch, leaves = runs.checkpoint(args.run, pop)
    state = cli_jobs.restore(job.populations[role]["template"], leaves)
    ds = job.ds
    x, y = (ds.x_test, ds.y_test) if args.split == "test" else (ds.x_val, ds.y_val)
    import jax

    r = cli_jobs._eval(state, x, y, jax.random.key(args.seed), job.populations[role]["cfg"])
    rows = [[pop, i, epoch, 100 * float(r["goodness_error"][i]),
             100 * float(r["softmax_error"][i])] for i in range(info["size"])
            if args.device is None or i == args.device]
    print(f"{args.run}: population {pop!r} at its epoch-{epoch} checkpoint, {args.split} set "
          f"({len(y)} images)")
    print(format_table(["population", "device", "epoch", "goodness err %", "softmax err %"],
                       rows))
    if args.device is None:
        print(f"median goodness error {np.median(r['goodness_error']) * 100:.2f}%")
    else:
        print(f"device {args.device} goodness error {r['goodness_error'][args.device] * 100:.2f}%")
    return 0


# ---------------------------------------------------------------------------------------------
# reading runs: show, plot, export, config
# ---------------------------------------------------------------------------------------------


def _status_line(status: str, path: Path) -> str:
    from mortal.runlog import is_locked

    if status == "running":
        if is_locked(path):
            return "running (being written now)"
        return f"INCOMPLETE: killed or interrupted; continue with --resume {path}"
    if status == "spawned":
        return f"spawned, not trained; 'mortal train --resume {path}' trains it"
    return status


def run_table(path: Path) -> str:
    """The final per-device table of a run: accuracy, and agreement for students."""
    import numpy as np

    from mortal import runs

    rows = []
    # columns of the bias correction (distill.bias_correction), where a population has them
    extra = {"test_corrected_error": "corrected err %",
             "test_left_out_accuracy": "left-out acc %",
             "test_left_out_accuracy_corrected": "corrected left-out acc %"}
    finals = {name: runs.final(path, name) for name in runs.populations(path)}
    present = [k for k in extra if any(k in fin for fin in finals.values())]
    for name, fin in finals.items():
        info = runs.population_info(path, name)
        m = runs.metrics(path, name)
        val = m.get("val_goodness_error")
        last_val = None
        if val is not None and len(val):
            finite = [r for r in val if np.isfinite(r).all()]
            last_val = finite[-1] if finite else None
        for i in range(info["size"]):
            def pct(a: Any, i: int = i) -> Any:
                return "-" if a is None or not np.isfinite(a[i]) else 100 * float(a[i])

            test_err = pct(fin.get("test_goodness_error"))
            rows.append([name, i, info["recipe_name"],
                         f"{info['epochs_done']}/{info['planned_epochs']}", pct(last_val),
                         test_err, "-" if test_err == "-" else 100 - test_err,
                         pct(fin.get("test_softmax_error")), pct(fin.get("test_agreement")),
                         *(pct(fin.get(k)) for k in present)])
    return format_table(["population", "device", "recipe", "epochs", "val err %",
                         "test err %", "test acc %", "softmax err %", "agreement %",
                         *(extra[k] for k in present)], rows)


def _cmd_show(args: argparse.Namespace) -> int:
    from mortal import runs

    path = Path(args.run)
    s = runs.summary(path)
    a = s["attributes"]
    print(f"{path}")
    print(f"  status        {_status_line(s['status'], path)}")
    print(f"  schema        {a['format']} v{a['schema_version']}, mortal {a['mortal_version']} "
          f"({a['source_revision']})")
    print(f"  created       {a['created']} on {a['host'].get('hostname')} "
          f"({a['host'].get('jax_backend')})")
    print(f"  command       {a['command_line']}")
    print(f"  seed          {a['seed']}")
    for name, p in s["populations"].items():
        wall = p["metrics"]["wall_time"]
        took = f", {wall[-1]:.0f} s" if len(wall) else ""
        print(f"  population {name!r}: {p['size']} × {p['recipe_name']} "
              f"{'-'.join(map(str, p['recipe']['widths']))}, epochs {p['epochs_done']}/"
              f"{p['planned_epochs']}{took}")
        names = [k for k in p["metrics"] if k not in ("epoch", "step", "wall_time")]
        print(f"    metrics     {', '.join(names)}")
    generations: dict[int, list[dict[str, Any]]] = {}
    for r in s["lineage"]:
        generations.setdefault(r["generation"], []).append(r)
    for g, rows in sorted(generations.items()):
        r = rows[0]
        tau = f", τ = {r['positive_temperature']}" if "positive_temperature" in r else ""
        if r.get("teacher_reads", 1) > 1:
            tau += f", {r['teacher_reads']} teacher reads"
        print(f"  lineage g{g}   {r['teacher']} → {len(rows)} × {r['student'].split('/')[0]} "
              f"(T = {r['temperature']}{tau}, {r['source']}, {r['epochs']} epochs; "
              f"{r['transfer_set']})")
    print()
    print(run_table(path))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from mortal import runs
    from mortal.plots import plot_run

    path = Path(args.run)
    runs.attributes(path)  # a clear error for a file that is not a run
    out = Path(args.out) if args.out else path.with_suffix(".png")
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise UserError(f"-o {out}: name a .png, .pdf or .svg file")
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; choose another path with -o or pass --force")
    if not out.parent.exists():
        raise UserError(f"directory {out.parent} does not exist; create it first")
    plot_run(path, out)
    print(f"wrote {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from mortal.export import export_csv

    out = Path(args.csv)
    if out.exists() and not out.is_dir():
        raise UserError(f"--csv {out} is a file; name a folder")
    _check_folders(out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise UserError(f"{out} exists and is not empty; choose another folder or pass --force")
    written = export_csv(args.run, out)
    print(f"wrote {len(written)} files to {out}: {', '.join(p.name for p in written)}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from mortal import runs
    from mortal.config import load_config, to_toml

    if args.run:
        if _given_config(args):
            raise UserError("--from prints a run's stored config; drop --config/--set/--seed")
        print(runs.config_text(args.run), end="")
        return 0
    cfg = load_config(args.config, args.sets, args.seed)
    _check_names(cfg)  # what a run would refuse, refused before it is written down
    print(to_toml(cfg), end="")
    return 0


def _check_names(cfg: Any) -> None:
    """The values ``load_config`` cannot judge alone: the dataset's name and the recipes (the
    presets and their ``spec`` overrides), as a run would build them; one-line errors."""
    from mortal import cli_jobs
    from mortal.data import DATASETS

    name = cfg.data.dataset
    if not name.startswith("npz:") and name not in DATASETS:
        raise UserError(f"unknown dataset {name!r} (data.dataset); choose one of "
                        f"{', '.join(DATASETS)}, or npz:PATH")
    cli_jobs.device_spec(cfg, "train")
    if "distill" in cfg.run.phases:
        cli_jobs.device_spec(cfg, "students")


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
    p = _subcommand(sub, "devices", "list device presets, show one, fabricate a population")
    p.add_argument("--preset", help=f"one of: {', '.join(devices.PRESETS)}")
    p.add_argument("-n", type=int, help="fabricate a population of N devices and tabulate it")
    p.add_argument("--widths", type=int, nargs="+",
                   help="layer widths, input first (default: 784 1000 1000 1000)")
    p.add_argument("--seed", type=_seed, help="fab seed, 0 <= S < 2**32 (default 0)")
    p.add_argument("--plot", help="write a figure of the population's neuron transfer curves "
                   "(.png, .pdf or .svg)")
    p.add_argument("--layer", type=int, help="layer to plot (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(func=_cmd_devices)

    p = _subcommand(sub, "demo", "the main job: train 8 rram devices on the embedded digits, "
                       "distil the best into 8 fresh ones (runs/demo.h5 + PNG)")
    _add_run_args(p, DEFAULT_DEMO)
    p.set_defaults(func=_cmd_demo)
    p = _subcommand(sub, "spawn", "fabricate a population into a run file (no training)")
    _add_run_args(p, computes=False)  # nothing to split or report: no --mesh, --distributed
    p.set_defaults(func=_cmd_spawn)
    p = _subcommand(sub, "train", "train a population in place with Forward-Forward")
    _add_run_args(p)
    p.set_defaults(func=_cmd_train)
    p = _subcommand(sub, "distill", "distil a trained device into fresh students")
    _add_run_args(p)
    p.add_argument("--teacher", metavar="RUN.h5", help="a run file with a trained population")
    p.add_argument("--device", default=None,
                   help="the teacher: a device index or 'best' (lowest validation error); "
                   "default: distill.teacher, which is 'best' unless set")
    p.set_defaults(func=_cmd_distill)
    p = _subcommand(sub, "eval", "evaluate a run's devices (newest checkpoint)")
    p.add_argument("run", metavar="RUN.h5", help="a run file written by mortal")
    p.add_argument("--population", help="train or students (default: the last one)")
    p.add_argument("--device", type=int, help="only this device")
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--seed", type=_seed, default=0, help="read-noise seed, 0 <= S < 2**32 "
                   "(default 0)")
    p.set_defaults(func=_cmd_eval)
    p = _subcommand(sub, "show", "summarise a run file (works on a live run)")
    p.add_argument("run", metavar="RUN.h5", help="a run file written by mortal")
    p.set_defaults(func=_cmd_show)
    p = _subcommand(sub, "plot", "draw a run's figures into one PNG, PDF or SVG")
    p.add_argument("run", metavar="RUN.h5", help="a run file written by mortal")
    p.add_argument("-o", "--out", metavar="FIGURE",
                   help="a .png, .pdf or .svg file (default: RUN.png beside the run file)")
    p.add_argument("--force", action="store_true", help="overwrite an existing figure")
    p.set_defaults(func=_cmd_plot)
    p = _subcommand(sub, "export", "write a run's records as CSV files")
    p.add_argument("run", metavar="RUN.h5", help="a run file written by mortal")
    p.add_argument("--csv", required=True, metavar="DIR", help="folder for the CSV files")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder")
    p.set_defaults(func=_cmd_export)
    p = _subcommand(sub, "config", "print the resolved config (defaults ← file ← --set)")
    _add_config_args(p)
    p.add_argument("--from", dest="run", metavar="RUN.h5", help="print a run file's config")
    p.set_defaults(func=_cmd_config)
    return parser


def _subcommand(sub: Any, name: str, text: str) -> argparse.ArgumentParser:
    """A subcommand whose --help starts with the same line as the command list."""
    return sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")


def _user_errors() -> tuple[type[BaseException], ...]:
    from mortal.cli_jobs import JobError
    from mortal.config import ConfigError
    from mortal.data import DataError
    from mortal.runlog import RunLockedError, RunWriteError
    from mortal.runs import RunFileError

    return (UserError, devices.SpecError, ConfigError, DataError, JobError, RunFileError,
            RunLockedError, RunWriteError, FileExistsError)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # a process of its own (the console script): before JAX starts its backend
        from mortal import xla_cpu

        xla_cpu.tune()
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            where = f"mortal {args.command}" if args.command else "mortal"
            raise UserError(f"unrecognized arguments: {' '.join(unknown)} (see '{where} --help')")
        if args.command is None:
            parser.print_help()
            return 0
        return int(args.func(args))
    except _user_errors() as exc:
        message = str(exc).strip().replace("\n", " ")
        print(f"mortal: error: {message}", file=sys.stderr)
        if argv is None and type(exc).__name__ == "RunWriteError":
            # a run file that failed mid-write must not be touched again (see mortal.runlog):
            # leave without the interpreter's clean-up, which would close it
            sys.stdout.flush()
            sys.stderr.flush()
            import os

            os._exit(2)
        return 2
    except RuntimeError as exc:
        if "RESOURCE_EXHAUSTED" not in str(exc):
            raise
        print("mortal: error: out of memory on the accelerator or host; use a smaller "
              "population, smaller layers or fewer devices per group (run.chunk)",
              file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # the file system refused: a path that cannot be written or read
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"mortal: error: {where}{exc.strerror or exc}; check the path, its permissions "
              "and the free space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mortal: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
