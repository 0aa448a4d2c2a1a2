"""``python -m benchmarks.run``: the benchmark suite (speed, memory, quality, Pty-chi reference).

Steps (every step a subprocess, measured from the outside, see ``benchmarks/measure.py``):

1. Convolution microbenchmarks of both backends (``benchmarks.flops``).
2. Simulated data per (object, dose) pair (``benchmarks.scenarios``).
3. Pty-chi ePIE / rPIE / LSQML on each test scan, in ``benchmarks/.venv-ptychi``.
4. Per scenario and backend: the training CLI, then the inference CLI on the test scan.
5. The inference scaling curve (``benchmarks.scaling``), ``scaling.png``.
6. Targets (``benchmarks.report``), ``benchmark.json`` and the Markdown report.

Outputs in ``--output`` (default ``benchmarks/results``, ``benchmarks/results/quick`` with
``--quick``): ``benchmark.json`` (everything),
``flops.json``, ``ptychi_{object}-{dose}.json``, ``{scenario}.json``, ``scaling.json``,
``scaling.png``; intermediate files in ``--work`` (default ``<output>/work``, git-ignored). The
full run regenerates ``docs/benchmarks.md``; ``--quick`` (tiny sizes, a smoke test) writes
``<output>/benchmarks_quick.md`` instead unless ``--docs`` is given. A failing step is recorded
with its error and the run goes on; the exit status is 1 if any step failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

from benchmarks import scenarios as sc
from benchmarks.backends import BACKENDS, infer_backend, refresh_training, train_backend
from benchmarks.evaluate import clean, illumination_mask
from benchmarks.flops import flops_per_pattern
from benchmarks.measure import run_command
from benchmarks.report import evaluate_targets, render_markdown

__all__ = ["build_parser", "main"]

ROOT = Path(__file__).resolve().parent.parent


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--output", default=None,
                   help="results directory (default benchmarks/results; with --quick "
                        "benchmarks/results/quick, so a smoke run never replaces full results)")
    p.add_argument("--work", default=None, help="intermediate files (default <output>/work)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not a benchmark")
    p.add_argument("--scenarios", nargs="+", default=None,
                   help="scenario names OBJECT-DOSE-gG (objects: lines, grf; doses: hi = 1e9, "
                        "lo = 1e4 photons; e.g. lines-hi-g1) or 'all'; default: see "
                        "benchmarks/scenarios.py")
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    p.add_argument("--threads", type=int, default=2, help="CPU threads per process")
    p.add_argument("--epochs", type=int, default=None, help="override the training epochs")
    p.add_argument("--scaling-sizes", nargs="+", type=int, default=None,
                   help="pattern counts of the scaling curve (e.g. 1000 10000 100000)")
    p.add_argument("--scaling-backends", nargs="+", default=["tensorflow"], choices=BACKENDS,
                   help="backends of the scaling curve (default tensorflow: the faster CPU "
                        "inference, so 10k patterns fit the time budget)")
    p.add_argument("--ptychi-all-doses", nargs="+", default=None, choices=sorted(sc.DOSES),
                   help="doses whose test scans get all three Pty-chi algorithms (ePIE, rPIE, "
                        "LSQML); the others get rPIE only (the time-to-image reference). "
                        "Default: lo for a full run (the low-dose target compares with the best "
                        "algorithm), both for --quick")
    p.add_argument("--no-ptychi", action="store_true", help="skip the Pty-chi reference")
    p.add_argument("--no-scaling", action="store_true", help="skip the scaling curve")
    p.add_argument("--docs", default=None,
                   help="Markdown report path (default docs/benchmarks.md for a full run)")
    p.add_argument("--rerun-ptychi", nargs="+", default=None, metavar="DATA",
                   help="rerun only the Pty-chi step for these data sets (e.g. lines-hi) and "
                        "update <output>/benchmark.json, the ratios, targets and the report")
    p.add_argument("--scaling-from", default=None, metavar="SCALING_JSON",
                   help="with --report-only: take these backends' scaling curves from a separate "
                        "benchmarks.scaling.run_scaling result (e.g. one with 100k patterns, "
                        "which takes too long for the main run); a note records it")
    p.add_argument("--report-only", action="store_true",
                   help="only re-render the Markdown report from <output>/benchmark.json "
                        "(training epoch times are re-derived from the saved logs/histories)")
    p.add_argument("--step-timeout", type=float, default=3600.0,
                   help="seconds allowed for any one subprocess")
    return p


def _machine() -> dict:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) / 1024 ** 2
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem, "os": platform.platform()}


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name, dists in (("ptychopinn", ("ptychopinn",)), ("numpy", ("numpy",)),
                        ("torch", ("torch",)), ("lightning", ("lightning",)),
                        ("tensorflow", ("tensorflow", "tensorflow-cpu")), ("keras", ("keras",))):
        out[name] = "not installed"
        for dist in dists:
            try:
                out[name] = md.version(dist)
                break
            except md.PackageNotFoundError:
                continue
    try:
        out["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _write_json(path: Path, obj) -> None:
    from ptycho.atomic import atomic_write_json

    atomic_write_json(path, clean(obj))


def _microbench(backends, threads: int, work: Path, timeout: float, log) -> dict:
    out: dict = {"network": {}}
    for g in (1, 2):
        out["network"][str(g)] = {
            "filter_scale": sc.FILTER_SCALE,
            "forward_gflops_per_pattern": flops_per_pattern(
                64, g, True, filter_scale=sc.FILTER_SCALE) / 1e9,
            "train_gflops_per_pattern": flops_per_pattern(
                64, g, True, train=True, filter_scale=sc.FILTER_SCALE) / 1e9}
    for b in backends:
        name = "torch" if b == "pytorch" else "tensorflow"
        log(f"microbenchmark: {b} convolutions")
        try:
            res = run_command([sys.executable, "-m", "benchmarks.flops", name, str(threads)],
                              work / f"flops_{b}.log", timeout_s=timeout,
                              env={"OMP_NUM_THREADS": str(threads), "TF_CPP_MIN_LOG_LEVEL": "2"})
            last = [ln for ln in res.log_path.read_text().splitlines() if ln.startswith("{")]
            out[b] = json.loads(last[-1])
        except Exception as exc:  # recorded in the results, the run goes on
            out[b] = {"error": str(exc)}
    return out


def _run(args: argparse.Namespace, log=print) -> tuple[dict, bool]:
    t_start = time.perf_counter()
    sizes = sc.QUICK if args.quick else sc.FULL
    if args.epochs is not None:
        sizes = dataclasses.replace(sizes, epochs=args.epochs)
    if args.scaling_sizes is not None:
        sizes = dataclasses.replace(sizes, scaling_sizes=tuple(args.scaling_sizes))
    scen = sc.parse_scenarios(args.scenarios) if args.scenarios else sc.default_scenarios(
        args.quick)
    out = Path(args.output)
    work = Path(args.work) if args.work else out / "work"
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    failed = False
    notes = [] if args.quick else [
        "Sizes are reduced to fit the whole run in about 25 minutes on a 2-core CPU machine: "
        f"{sizes.n_train} training patterns, {sizes.epochs} epochs, scenarios "
        f"{', '.join(s.name for s in scen)} (`--scenarios all` runs all eight), scaling sizes "
        f"{', '.join(str(s) for s in sizes.scaling_sizes)} on "
        f"{', '.join(args.scaling_backends)}; Pty-chi runs all three algorithms on the "
        f"{'/'.join(args.ptychi_all_doses or ['lo'])}-dose scans and rPIE only (the "
        "time-to-image reference) on the others. The networks are the reference network at "
        f"the demo's CPU width (filter_scale {sc.FILTER_SCALE:g}, {sc.INTERPOLATION} "
        "interpolation, softplus amplitude, probe-weighted stitching; reference decoder); their quality after so few epochs is below "
        "what longer training reaches, and the speed figures are per epoch / per pattern."]
    results: dict = {"meta": {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(), "versions": _versions(), "quick": args.quick,
        "threads": args.threads, "backends": list(args.backends),
        "sizes": dataclasses.asdict(sizes), "notes": notes,
        "load_average": {"start": os.getloadavg()[0]}}}

    results["flops"] = _microbench(args.backends, args.threads, work, args.step_timeout, log)
    _write_json(out / "flops.json", results["flops"])

    data, masks = {}, {}
    from ptycho.data.contract import load_npz

    for key in dict.fromkeys(s.data_key for s in scen):
        obj, dose = key.split("-")
        log(f"data: simulating {key}")
        data[key] = sc.simulate_pair(obj, dose, sizes.n_train, sizes.n_test, work / "data")
        test = load_npz(data[key]["test"])
        masks[key] = (illumination_mask(test.probe, test.positions, test.object.shape),
                      test.object)

    # Pty-chi on one data set, then the network scenarios on the same data, so that each
    # comparison is measured under similar machine load.
    results["ptychi"], results["scenarios"] = {}, {}
    for key in data:
        if not args.no_ptychi:
            failed |= _ptychi_step(key, data, masks, sizes, args, results, out, work, log)
        _write_json(out / "benchmark.json", results)
        for s in (s for s in scen if s.data_key == key):
            failed |= _scenario_step(s, data, masks, sizes, args, results, out, work, log)
            _write_json(out / "benchmark.json", results)

    if not args.no_scaling:
        from benchmarks.scaling import plot_scaling, run_scaling

        try:
            results["scaling"] = run_scaling(sizes.scaling_sizes, args.scaling_backends,
                                             work / "scaling", threads=args.threads,
                                             epochs=sizes.scaling_epochs,
                                             timeout_s=args.step_timeout, log=log)
            plot_scaling(results["scaling"], out / "scaling.png")
            _write_json(out / "scaling.json", results["scaling"])
        except Exception as exc:
            failed = True
            results["scaling_error"] = str(exc)
            log(f"scaling FAILED: {exc}\n{traceback.format_exc()}")

    results["meta"]["wall_s"] = time.perf_counter() - t_start
    results["meta"]["load_average"]["end"] = os.getloadavg()[0]
    results["targets"] = evaluate_targets(results, list(args.backends))
    _write_json(out / "benchmark.json", results)
    docs = Path(args.docs) if args.docs else (out / "benchmarks_quick.md" if args.quick
                                              else ROOT / "docs" / "benchmarks.md")
    from ptycho.atomic import atomic_write_text

    atomic_write_text(docs, render_markdown(clean(results)))
    log(f"wrote {out / 'benchmark.json'} and {docs} in {results['meta']['wall_s']:.0f} s")
    return results, failed


def _ptychi_step(key, data, masks, sizes, args, results, out, work, log) -> bool:
    from benchmarks.ptychi_bridge import run_ptychi

    log(f"pty-chi: {key} ({'/'.join(map(str, sizes.ptychi_iterations))} iterations)")
    load, failed = os.getloadavg()[0], False
    try:
        all_doses = args.ptychi_all_doses or (list(sc.DOSES) if args.quick else ["lo"])
        algs = ("epie", "rpie", "lsqml") if key.split("-")[1] in all_doses else ("rpie",)
        r = run_ptychi(data[key]["test"], sc.DOSES[key.split("-")[1]], work / f"ptychi_{key}",
                       sizes.ptychi_iterations, *masks[key], threads=args.threads,
                       algorithms=algs, timeout_s=args.step_timeout)
        results["meta"]["versions"].setdefault("ptychi", r["versions"]["ptychi"])
        results["meta"]["versions"].setdefault("ptychi_torch", r["versions"]["torch"])
    except Exception as exc:
        failed = True
        r = {"error": str(exc)}
        log(f"pty-chi {key} FAILED: {exc}")
    r["load_1min_before"] = load
    results["ptychi"][key] = r
    _write_json(out / f"ptychi_{key}.json", r)
    return failed


def _scenario_step(s, data, masks, sizes, args, results, out, work, log) -> bool:
    entry, failed = {"scenario": s.to_dict(), "backends": {}}, False
    mask, truth = masks[s.data_key]
    rpie = results["ptychi"].get(s.data_key, {}).get("runs", {}).get("rpie", {})
    rpie_t = rpie.get(str(sorted(sizes.ptychi_iterations)[1]), {}).get("total_s")
    for b in args.backends:
        log(f"{s.name}: {b} training ({sizes.epochs} epochs)")
        r: dict = {"load_1min_before": os.getloadavg()[0]}
        try:
            r["train"] = train_backend(
                b, data[s.data_key]["train"], work / s.name / f"{b}_train",
                gridsize=s.gridsize, epochs=sizes.epochs, batch_size=sizes.batch_size,
                validation_fraction=sizes.validation_fraction, n_train_patterns=sizes.n_train,
                threads=args.threads, timeout_s=args.step_timeout)
            log(f"{s.name}: {b} inference")
            r["inference"] = infer_backend(
                b, r["train"]["model_dir"], data[s.data_key]["test"],
                work / s.name / f"{b}_inference", threads=args.threads, mask=mask, truth=truth,
                timeout_s=args.step_timeout)
            t = r["inference"].get("time_to_image_s")
            if t and rpie_t:
                r["inference"]["ratio_to_rpie"] = t / rpie_t
        except Exception as exc:
            failed = True
            r["error"] = str(exc)
            log(f"{s.name}: {b} FAILED: {exc}")
        entry["backends"][b] = r
    results["scenarios"][s.name] = entry
    _write_json(out / f"{s.name}.json", entry)
    return failed


def main(argv=None) -> int:
    """Run the benchmark; 0 when every step ran, 1 when a step failed, 2 for bad arguments."""
    args = build_parser().parse_args(argv)
    if args.threads < 1:
        print("benchmarks.run: --threads must be >= 1", file=sys.stderr)
        return 2
    try:
        if args.scenarios:
            sc.parse_scenarios(args.scenarios)
    except ValueError as exc:
        print(f"benchmarks.run: {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        args.output = "benchmarks/results/quick" if args.quick else "benchmarks/results"
    if args.rerun_ptychi:
        return _rerun_ptychi(args, log=lambda m: print(f"[bench] {m}", flush=True))
    if args.report_only:
        return _render_only(args)
    _, failed = _run(args, log=lambda m: print(f"[bench] {m}", flush=True))
    return 1 if failed else 0


def _rerun_ptychi(args: argparse.Namespace, log=print) -> int:
    """Redo the Pty-chi step of existing results (same data, mask and sizes) and update the
    time-to-image ratios, the targets and the report."""
    from ptycho.data.contract import load_npz

    out = Path(args.output)
    src = out / "benchmark.json"
    if not src.is_file():
        print(f"benchmarks.run: {src} not found; run the benchmark first", file=sys.stderr)
        return 2
    results = json.loads(src.read_text())
    sizes = sc.Sizes(**{**results["meta"]["sizes"],
                        "ptychi_iterations": tuple(results["meta"]["sizes"]["ptychi_iterations"]),
                        "scaling_sizes": tuple(results["meta"]["sizes"]["scaling_sizes"])})
    work = Path(args.work) if args.work else out / "work"
    failed = False
    for key in args.rerun_ptychi:
        obj, dose = key.split("-") if key.count("-") == 1 else (None, None)
        if obj not in sc.OBJECTS or dose not in sc.DOSES:
            print(f"benchmarks.run: bad data set {key!r}; expected OBJECT-DOSE, e.g. lines-hi",
                  file=sys.stderr)
            return 2
        data = {key: sc.simulate_pair(obj, dose, sizes.n_train, sizes.n_test, work / "data")}
        test = load_npz(data[key]["test"])
        masks = {key: (illumination_mask(test.probe, test.positions, test.object.shape),
                       test.object)}
        failed |= _ptychi_step(key, data, masks, sizes, args, results, out, work, log)
        results["ptychi"][key]["rerun"] = datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC")
        mid = str(sorted(sizes.ptychi_iterations)[1])
        rpie_t = results["ptychi"][key].get("runs", {}).get("rpie", {}).get(mid, {}).get(
            "total_s")
        for name, entry in results["scenarios"].items():
            if sc.dataset_key(entry["scenario"]["obj"], entry["scenario"]["dose"]) != key:
                continue
            for r in entry["backends"].values():
                t = r.get("inference", {}).get("time_to_image_s")
                if t and rpie_t:
                    r["inference"]["ratio_to_rpie"] = t / rpie_t
            _write_json(out / f"{name}.json", entry)
        results["meta"]["notes"].append(
            f"The Pty-chi step of {key} was rerun separately after the main run "
            f"({results['ptychi'][key]['rerun']}, load average "
            f"{results['ptychi'][key].get('load_1min_before', float('nan')):.1f} at its start).")
    results["targets"] = evaluate_targets(results, list(results["meta"]["backends"]))
    _write_json(src, results)
    return max(_render_only(args), 1 if failed else 0)


def _refresh(results: dict, out: Path) -> None:
    """Recompute training epoch times from the saved histories and logs (see
    ``benchmarks.backends.refresh_training``) and the targets; rewrite the scenario JSONs."""
    for name, entry in results.get("scenarios", {}).items():
        for r in entry["backends"].values():
            if r.get("train", {}).get("model_dir") and Path(r["train"]["log"]).is_file():
                r["train"] = refresh_training(r["train"])
        _write_json(out / f"{name}.json", entry)
    results["targets"] = evaluate_targets(results, list(results["meta"]["backends"]))


def _merge_scaling(results: dict, path: Path, out: Path) -> None:
    """Replace the scaling curves of the backends in ``path`` (a ``run_scaling`` JSON), re-plot
    ``scaling.png`` and record where the curves came from."""
    from benchmarks.scaling import plot_scaling

    other = json.loads(path.read_text())
    merged = results.setdefault("scaling", {"sizes": [], "backends": {}})
    merged["backends"].update(other["backends"])
    merged["sizes"] = sorted({int(m) for b in merged["backends"].values() for m in
                              (r["M"] for r in b["rows"])})
    _write_json(out / "scaling.json", merged)
    plot_scaling(merged, out / "scaling.png")
    sizes = ", ".join(str(s) for s in other.get("sizes", []))
    source = f"separate benchmarks.scaling.run_scaling run ({path.name}"
    note = (f"The scaling curve of {', '.join(other['backends'])} ({sizes} patterns) comes from "
            f"a {source}), made while other work shared the two cores: its timings are "
            "pessimistic, its memory figures are unaffected.")
    notes = results["meta"]["notes"]
    same = [i for i, n in enumerate(notes) if source in n]
    if same:
        notes[same[0]] = note
    else:
        notes.append(note)


def _render_only(args: argparse.Namespace) -> int:
    from ptycho.atomic import atomic_write_text

    src = Path(args.output) / "benchmark.json"
    if not src.is_file():
        print(f"benchmarks.run: {src} not found; run the benchmark first", file=sys.stderr)
        return 2
    results = json.loads(src.read_text())
    sc_file = Path(args.output) / "scaling.json"
    if "scaling" not in results and sc_file.is_file():
        results["scaling"] = json.loads(sc_file.read_text())
        results["meta"]["notes"].append(
            "The scaling curve was run as a separate process (benchmarks.scaling.run_scaling) "
            "while the main run was going on, so both competed for the two cores; its "
            "timings are pessimistic, its memory figures are unaffected.")
    if getattr(args, "scaling_from", None):
        _merge_scaling(results, Path(args.scaling_from), Path(args.output))
    _refresh(results, Path(args.output))
    _write_json(src, results)
    docs = Path(args.docs) if args.docs else (
        Path(args.output) / "benchmarks_quick.md" if results["meta"].get("quick")
        else ROOT / "docs" / "benchmarks.md")
    atomic_write_text(docs, render_markdown(results))
    print(f"wrote {docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
