"""docs/study.md from a tier's committed table alone: the paper's four conclusions as matched pairs with paired
95% t-intervals over seeds and a verdict each, the study's Pareto front with error bars, hypervolume per family, and
the paper's presets against the best other design at their budget. Optionally logged to an MLflow parent run.

    python -m benchmarks.study.study_report --tier sst2                                   # docs/study.md + its figure
    python -m benchmarks.study.study_report --tier sst2 --tracking-uri sqlite:///$PWD/mlflow.db

The same command on the same table writes the same markdown (no clock, no host in it); pairs whose runs are not all
in the table say "pending (k of n runs)".
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from benchmarks.study import front as F
from benchmarks.study import stats as S
from benchmarks.study.designs import Pair, Study, load_study
from benchmarks.study.results import DesignResult, TierPlan, current, design_results, tier_plan
from benchmarks.study.run_study import REPO, load_tiers
from benchmarks.study.summary import cost, design_rows, md_table, pilot_rows
from benchmarks.study.table import read_rows

CONCLUSION_ORDER = ("a", "b", "c", "c_as_run", "d")


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.3f}%"


def _ci_text(ci: S.Interval) -> str:
    return f"{S.points(ci.mean)} [{S.points(ci.low)}, {S.points(ci.high)}]"


def _sd(r: DesignResult) -> str:
    return "-" if r.ci is None or r.ci.n < 2 else f"{100 * r.ci.sd:.2f}"


def pair_row(p: Pair, a: DesignResult, b: DesignResult) -> tuple[list[object], str]:
    """One markdown row of a matched pair and its verdict word."""
    lead = [f"{p.a} vs {p.b}", p.budget, f"{_pct(a.fraction)} / {_pct(b.fraction)}"]
    if a.all_failed or b.all_failed:
        failed = " and ".join(r.design.id for r in (a, b) if r.all_failed)
        return lead + ["-", "-", "-", f"{_sd(a)} / {_sd(b)}"], f"not resolvable: every lr of {failed} failed"
    if not (a.complete and b.complete):
        word = f"pending ({a.done + b.done} of {a.needed + b.needed} runs)"
        return lead + ["-", "-", "-", f"{_sd(a)} / {_sd(b)}"], word
    seeds, ci = S.paired(a.scores, b.scores)
    if ci is None:
        return lead + [len(seeds), "-", "-", f"{_sd(a)} / {_sd(b)}"], "not resolvable: fewer than 2 common seeds"
    word = S.verdict(ci)
    return lead + [ci.n, _ci_text(ci), f"{100 * ci.sd:.2f}", f"{_sd(a)} / {_sd(b)}"], word


def conclusion_section(key: str, study: Study, plan: TierPlan, results: dict[str, DesignResult]) -> list[str]:
    c = study.conclusions[key]
    pairs = [p for p in study.pairs if p.conclusion == key]
    here = [p for p in pairs if p.a in plan.grid and p.b in plan.grid]
    cut = [p for p in pairs if p not in here]
    rows, words = [], []
    for p in here:
        row, word = pair_row(p, results[p.a], results[p.b])
        rows.append(row + [word])
        words.append(word)
    out = [f"### ({key}) {c['claim']}", "", f"Paper: {c['paper']}", ""]
    if rows:
        kinds = [w.partition(" (")[0] if w.startswith("pending") else w for w in words]
        tally = ", ".join(f"{w}: {kinds.count(w)}" for w in dict.fromkeys(kinds))
        budgets = "/".join(dict.fromkeys(p.budget for p in here))
        out += [f"Here: {len(here)} matched pair(s) at budget {budgets}, the paper's winner first; {tally}.", ""]
        out += md_table(["pair (a vs b)", "budget", "stored a / b", "n seeds", "a - b, points [95% CI]",
                         "s.d. of a - b", "seed s.d. a / b (points)", "verdict"], rows)
    else:
        out.append("Here: no pair of this conclusion is in this tier.")
    if cut:
        out += ["", "Cut from this tier (designs.yaml has them; tiers.yaml says why): "
                + ", ".join(f"{p.a} vs {p.b} ({p.budget})" for p in cut) + "."]
    return out + [""]


def header(argv: list[str], table: Path, plan: TierPlan, rows: list[dict[str, Any]],
           done: dict[str, dict[str, Any]]) -> list[str]:
    digest = hashlib.sha256(table.read_bytes()).hexdigest()[:12] if table.is_file() else "none"
    used = list(done.values())
    commits = sorted({str((r.get("code") or {}).get("commit", "unknown"))[:10] for r in used})
    models = sorted({str(r.get("model_sha", "unknown"))[:12] for r in used})
    data = sorted({"/".join(str(v)[:8] for _, v in sorted((r.get("data") or {}).items())) for r in used})
    # Commits may differ (a study resumes across commits; the runner retrains what a code change touches), weights
    # and data may not: the runner would have retrained such rows, so more than one means tables were merged.
    mixed = [f"{len(v)} {what}" for what, v in (("model weights", models), ("data versions", data)) if len(v) > 1]
    warn = [f"Warning: the rows come from {' and '.join(mixed)}; the runs are not comparable as they stand.", ""] \
        if mixed else []
    return [f"# The paper's four conclusions, re-derived on real data: tier {plan.name}", "",
            "Generated by `" + shlex.join(["python", "-m", "benchmarks.study.study_report", *argv])
            + "` from the table "
            f"`{_shown(table)}` alone (sha256 {digest}): {len(rows)} rows, {len(used)} of them runs of this tier's "
            "current protocol. Rerun that command to rebuild this file; it is a function of the table. Add "
            "`--tracking-uri URI` to log this page, its figure and one child run per design to an MLflow parent run.",
            "",
            f"Runs made at commit(s) {', '.join(commits) or '-'}; model weights sha256 {', '.join(models) or '-'}; "
            f"data (final/selection/train sha256) {', '.join(data) or '-'}.", "", *warn]


def protocol_section(plan: TierPlan, study: Study, done: dict[str, dict[str, Any]],
                     results: dict[str, DesignResult], pilot: list[dict[str, Any]]) -> list[str]:
    needed = sum(r.needed for r in results.values())
    spent = cost(list(done.values()))
    per_run = spent["cpu_h"] * 3600 / spent["runs"] if spent["runs"] else float("nan")
    cut = [d for d in study.designs if d not in plan.grid]
    counted = sum(min(r.done, r.needed) for r in results.values())
    left, extra = needed - counted, spent["runs"] - counted  # extra: seeds of an lr the grid no longer keeps
    out = ["## Protocol and budget", "",
           f"Task {plan.task}; MiniLM ({study.model}); every design trained {plan.train.get('max_steps')} steps "
           f"(batch {plan.train.get('batch_size')}, max length {plan.train.get('max_length')}), evaluated on the "
           f"selection split every {plan.train.get('eval_every')} steps; a run keeps the checkpoint of its best "
           "selection score (as the paper reports the selected checkpoint), and its final score is that checkpoint's "
           f"accuracy on the full dev set, which nothing is tuned on. A design's lr grid runs at seed "
           f"{plan.seeds[0]}; the lr with the best selection score is trained again at seeds "
           f"{', '.join(map(str, plan.seeds[1:]))}. "
           f"{sum(len(v) == 1 for v in plan.grid.values())} of {len(plan.grid)} designs have a one-lr grid, so "
           "their verdicts hold at that lr (tiers.yaml gives each lr's reason and the cost arithmetic); a kept lr "
           "marked (edge) is the smallest or largest of its grid, so a lr beyond it was not tried.", "",
           f"Designs in this tier: {len(plan.grid)} of the {len(study.designs)} of designs.yaml; cut: "
           f"{', '.join(cut) or 'none'}.", "",
           f"Cost so far: {spent['runs']} runs, {spent['cpu_h']:.2f} CPU-hours, {spent['wall_h']:.2f} h of run "
           f"wall time; the protocol needs {needed} runs, {left} still to make"
           + (f" (~{left * per_run / 3600:.1f} CPU-hours more at the {per_run:.0f} CPU-s a run so far)"
              if spent["runs"] else "")
           + (f"; {extra} further run(s) in the table are seeds of an lr its grid no longer keeps (made before "
              "a better lr was added to the grid; not used)." if extra else "."), ""]
    if pilot:
        out += ["The pilot (its own table; selection accuracy every 100 steps):", ""]
        out += md_table(["design", "lr", "selection curve", "plateau (last 3)", "flat from step", "final",
                         "s/step (wall)", "CPU min"], pilot_rows(pilot))
        out.append("")
    return out


def front_section(results: dict[str, DesignResult], figure_link: str, plan: TierPlan) -> list[str]:
    ids = F.front_ids(results)
    out = ["## The Pareto front", "", f"![front]({figure_link})", "",
           "One point per design: its mean final accuracy over the seeds it has, with the 95% t-interval over "
           "those seeds (none for one seed); the front is that of the means (analysis.pareto).", ""]
    rows = [[i, results[i].design.family, _pct(results[i].fraction), _seeds(results[i]), _accuracy(results[i].ci)]
            for i in ids]
    out += md_table(["design", "family", "stored", "seeds", "accuracy % [95% CI]"], rows) if rows else \
        ["No design has a score yet."]
    out += ["", "### Hypervolume per design family", "",
            "Area above the reference score in accuracy x decades of stored fraction (analysis.pareto.hypervolume; "
            "the x extent runs from max(fraction, 1e-6) to 1, so the head alone at 0 spans 6 decades and full "
            "fine-tuning at 1 spans none). Computed on the families' mean points; with one to three designs a "
            "family, it ranks how far down in budget a family holds its accuracy more than it ranks families.", ""]
    hv = [[fam, n, f"{v:.4f}", "-" if g is None else f"{g:.4f}"] for fam, n, v, g in F.family_hypervolumes(results)]
    out += md_table(["family", "designs", "hypervolume (ref score 0)", "hypervolume (ref = head alone's mean)"],
                    hv) if hv else ["-"]
    out += ["", "### The paper's presets against the best other design at their budget", "",
            f"The rival is the design with the best mean selection score (the rows held out of training, not the "
            f"final split) that is neither a preset nor the head alone and stores at most {F.DEFAULT_TOLERANCE}x "
            "the preset's parameters; rival - preset is in final score over their common seeds.", ""]
    checks = [[c.preset, _pct(results[c.preset].fraction), c.rival or "-",
               "-" if c.rival is None else _pct(results[c.rival].fraction),
               "-" if c.ci is None else c.ci.n, "-" if c.ci is None else _ci_text(c.ci), c.verdict]
              for c in F.preset_checks(results)]
    out += md_table(["preset", "stored", "rival", "stored", "n seeds", "rival - preset, points [95% CI]",
                     "verdict"], checks) if checks else ["No preset has a score yet."]
    return out + [""]


def noise_floor(results: dict[str, DesignResult], n: int) -> str:
    """The table's noise floor: the median seed s.d. of a design and the t half-width it implies for an unpaired
    difference of two such designs at `n` seeds each (pairing by seed can only narrow it)."""
    import statistics

    sds = [r.ci.sd for r in results.values() if r.ci is not None and r.ci.n >= 2]
    if not sds or n < 2:
        return "Noise floor: no design has two seeds yet."
    sd = statistics.median(sds)
    t = S.t_quantile(n)
    return (f"Noise floor in this table: the median seed s.d. of a design is {100 * sd:.2f} points (over {len(sds)} "
            f"designs with 2+ seeds); two independent designs with that s.d. at {n} seeds each give a 95% half-width "
            f"of t(0.975, {n - 1}) x sqrt(2) x s.d. / sqrt({n}) = {100 * t * sd * (2 / n) ** 0.5:.2f} points, so a "
            "smaller gap is not resolvable here unless pairing by seed removes most of the noise.")


def method_section(results: dict[str, DesignResult], plan: TierPlan) -> list[str]:
    n, steps, eq = len(plan.seeds), plan.train.get("max_steps"), 100 * S.EQUIVALENCE
    t = S.t_quantile(n) if n >= 2 else float("nan")
    return ["## How to read the verdicts", "", noise_floor(results, n), "",
            "a - b is the paper's winner minus the other side, in accuracy points, per training seed (both sides see "
            "the same batches at the same seed); its 95% interval is Student's t over those per-seed differences: "
            f"mean +- t(0.975, n-1) * sd / sqrt(n), n the number of common seeds. With n = {n}, t = {t:.2f}, so the "
            f"interval's half-width is {t / n ** 0.5:.2f} x the s.d. of the differences. Verdicts: reproduced "
            f"(interval above 0), reversed (below 0), tie (holds 0 and lies inside +-{eq:.1f} points), not "
            f"resolvable at this scale (holds 0 and reaches past +-{eq:.1f} points: the seeds' noise, whose size the "
            "seed s.d. columns give, hides the answer). A design with a one-lr grid runs at its family's lr (see "
            "the protocol): its verdicts are about the designs at that lr, and a scaled design's s multiplies its "
            "update size, so (c) compares s at a fixed lr, as the paper did. One model (MiniLM, 6 layers), one task, "
            f"{steps} steps: the paper's claims tested at a far smaller scale than its BART/mBART summarisation and "
            "translation, not its numbers reproduced. Each interval is a 95% interval on its own, with no correction "
            "for the number of pairs: over this page's pairs, about one interval in 20 may miss by chance alone, so a "
            "single 'reproduced' or 'reversed' that sits near 0 is weak evidence.", ""]


def _seeds(r: DesignResult) -> str:
    return f"{r.ci.n}" if r.complete else f"{r.ci.n} (pending: {r.done} of {r.needed} runs)"


def _accuracy(ci: S.Interval) -> str:
    if ci.n < 2:
        return f"{100 * ci.mean:.2f} (one seed: no interval)"
    return f"{100 * ci.mean:.2f} [{100 * ci.low:.2f}, {100 * ci.high:.2f}]"


def _shown(path: Path) -> str:
    """A path as the reader should see it: as typed when relative, else relative to the repository when inside it."""
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def designs_section(plan: TierPlan, study: Study, done: dict[str, dict[str, Any]]) -> list[str]:
    return ["## Every design of the tier", "",
            f"The last column reads the selection curve of the kept lr's run at seed {plan.seeds[0]}: the first "
            "evaluation from which its 3-evaluation running mean stays within 0.5 points of the mean of its last 3 "
            "evaluations, and the evaluation whose checkpoint the run kept. A curve flat only from its last step was "
            "still moving when training ended: more steps might change that design's score.", "",
            *md_table(["design", "family", "budget", "stored", "lr grid: selection score at the first seed",
                       "kept lr", "seeds", "final accuracy (mean ± s.d.)", "flat from step / kept step"],
                      design_rows(study, plan.grid, plan.seeds, done)), ""]


def other_tiers(tiers: dict[str, dict[str, Any]], shown: str) -> list[str]:
    """One line on the study's other tiers (the pilots apart): where each stands, and the command that runs it."""
    parts = []
    for name, spec in tiers.items():
        if name == shown or name.startswith("pilot"):
            continue
        table = REPO / spec["table"]
        state = f"{len(read_rows(table))} runs in {spec['table']}" if table.is_file() else "not run yet (no table)"
        script = Path(__file__).with_name(f"{name}_gpu.sh")
        how = f"`bash benchmarks/study/{script.name}` on one GPU, or " if script.is_file() else ""
        parts.append(f"{name} ({spec['task']} on {spec.get('device', 'cpu')}): {state}; {how}"
                     f"`python -m benchmarks.study.run_study --tier {name}` then this report with `--tier {name}`")
    return [f"Other tiers of tiers.yaml: {'; '.join(parts)}.", ""] if parts else []


def build(argv: list[str], plan: TierPlan, study: Study, table: Path, pilot: list[dict[str, Any]],
          figure: Path, out: Path, others: list[str] = ()) -> tuple[str, dict[str, DesignResult]]:
    """The report's markdown (and its figure written to `figure`) from the table's rows; `others`: lines on the
    study's other tiers (other_tiers)."""
    rows = read_rows(table)
    done = current(plan, study, rows)
    results = design_results(plan, study, done)
    complete = sum(r.complete and bool(r.scores) for r in results.values())
    final_rows = sorted({int(r["final"]["rows"]) for r in done.values() if r.get("final")})
    F.front_png(results, figure, f"{plan.task} final accuracy vs stored parameters: tier {plan.name}, {len(done)} "
                                 f"runs, {complete} of {len(results)} designs complete")
    lines = header(argv, table, plan, rows, done)
    lines += ["## The four conclusions", "",
              "Each conclusion as matched pairs of designs at matched stored-parameter budgets; the paper's winner "
              f"is `a`. Differences in accuracy points on the {plan.task} final split ("
              f"{'/'.join(map(str, final_rows)) or '-'} examples); how to read them at the end.", ""]
    for key in CONCLUSION_ORDER:
        if key in study.conclusions:
            lines += conclusion_section(key, study, plan, results)
    lines += front_section(results, os.path.relpath(figure, out.parent), plan)
    lines += designs_section(plan, study, done)
    lines += protocol_section(plan, study, done, results, pilot) + list(others)
    lines += method_section(results, plan)
    return "\n".join(lines).rstrip() + "\n", results


def log_mlflow(uri: str, experiment: str, plan: TierPlan, results: dict[str, DesignResult], files: list[Path]) -> str:
    """One parent run for the report (its markdown and figure as artifacts, hypervolumes as metrics) and one child
    run per scored design (mean, CI, seeds); returns the parent's run id."""
    from search.store import check_tracking, search_experiment

    client = check_tracking(uri)
    exp_id = search_experiment(client, experiment)
    parent = client.create_run(exp_id, run_name=f"study-{plan.name}", tags={"petl.study.tier": plan.name})
    pid = parent.info.run_id
    client.log_param(pid, "tier", plan.name)
    client.log_param(pid, "seeds", ",".join(map(str, plan.seeds)))
    client.log_param(pid, "max_steps", plan.train.get("max_steps"))
    for fam, n, hv, gain in F.family_hypervolumes(results):
        key = "".join(ch if ch.isalnum() else "_" for ch in fam)
        client.log_metric(pid, f"hypervolume_{key}", hv)
        if gain is not None:
            client.log_metric(pid, f"hypervolume_over_head_{key}", gain)
    for path in files:
        client.log_artifact(pid, str(path))
    for r in F.scored(results):
        child = client.create_run(exp_id, run_name=r.design.id, tags={"mlflow.parentRunId": pid,
                                                                      "petl.study.family": r.design.family})
        cid = child.info.run_id
        for k, v in {"design": r.design.id, "family": r.design.family, "budget": r.design.budget, "lr": r.lr,
                     "seeds": ",".join(map(str, sorted(r.scores)))}.items():
            client.log_param(cid, k, v)
        interval = {"score_ci_low": r.ci.low, "score_ci_high": r.ci.high} if r.ci.n >= 2 else {}  # 1 seed: none
        for k, v in {"score_mean": r.ci.mean, **interval, "fraction": r.fraction, "n_seeds": r.ci.n}.items():
            client.log_metric(cid, k, v)
        client.set_terminated(cid)
    client.set_terminated(pid)
    return pid


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.study.study_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tier", required=True, help="a tier of benchmarks/study/tiers.yaml")
    p.add_argument("--table", type=Path, default=None, help="the tier's table (default: the one tiers.yaml names)")
    p.add_argument("--pilot-table", type=Path, default=None,
                   help="the pilot's table shown in the protocol section (default: tier pilot_sst2's; none if absent)")
    p.add_argument("--out", type=Path, default=Path("docs/study.md"), help="the markdown (default docs/study.md)")
    p.add_argument("--figure", type=Path, default=None,
                   help="the front's PNG (default: docs/study_<tier>_front.png beside --out)")
    p.add_argument("--tracking-uri", default=None, help="also log the report to an MLflow parent run in this store")
    p.add_argument("--experiment", default="petl-study", help="MLflow experiment of that run (default petl-study)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    tiers = load_tiers()
    if args.tier not in tiers:
        print(f"error: --tier must be one of {sorted(tiers)}, got {args.tier!r}", file=sys.stderr)
        return 2
    table = args.table or REPO / tiers[args.tier]["table"]
    if not table.is_file():
        print(f"error: the table {table} does not exist; run the tier first (python -m benchmarks.study.run_study "
              f"--tier {args.tier}) or pass --table", file=sys.stderr)
        return 2
    try:
        if args.tracking_uri:  # before any work: an unusable store is one line, not a traceback after the report
            from search.store import check_tracking

            check_tracking(args.tracking_uri)
        study = load_study()
        plan = tier_plan(args.tier, tiers[args.tier], study)
        pilot_path = args.pilot_table or REPO / tiers.get("pilot_sst2", {}).get("table", "-")
        pilot = read_rows(pilot_path)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    figure = args.figure or args.out.parent / f"study_{args.tier}_front.png"
    text, results = build(argv, plan, study, table, pilot, figure, args.out, other_tiers(tiers, args.tier))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} and {figure}")
    if args.tracking_uri:
        pid = log_mlflow(args.tracking_uri, args.experiment, plan, results, [args.out, figure])
        print(f"logged to {args.tracking_uri}: experiment {args.experiment!r}, parent run {pid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
