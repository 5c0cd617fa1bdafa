"""The report's text (`summary.md`): what the search found, in the paper's terms, each number with its basis."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.design import TERMINAL_STATUSES, describe_design
from analysis.effects import MIN_PAIRS
from analysis.groups import design_groups, group_front
from analysis.matching import BUDGET_TOLERANCE, COLLAPSE_MARGIN, collapse_threshold
from analysis.pareto import REFERENCE, hypervolume
from search.contract import Reference, score_name

BYTES_PER_PARAM = 4  # stored size is reported at fp32


def _md_cell(v: object) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]


def _pct(f: float) -> str:
    return f"{f * 100:.3g}%" if np.isfinite(f) else "n/a"


def _stored(v: object) -> tuple[str, str]:
    if pd.isna(v):
        return "n/a", "n/a"
    return f"{int(v):,}", f"{int(v) * BYTES_PER_PARAM / 1e6:.3g}"


def _score(g: pd.Series | dict) -> str:
    if int(g["n_seeds"]) > 1:
        return f"{g['score']:.4g} ± {g['score_std']:.2g} ({g['n_seeds']} seeds)"
    return f"{g['score']:.4g}"


def header(df: pd.DataFrame, groups: pd.DataFrame, hv: float, ref: Reference) -> list[str]:
    counts = df["status"].value_counts()
    seeds = groups["n_seeds"].value_counts().sort_index() if len(groups) else pd.Series(dtype=int)
    per = ", ".join(f"{n} with {k} seed{'s' if k != 1 else ''}" for k, n in seeds.items()) or "none"
    other = len(df) - int(counts.reindex(TERMINAL_STATUSES).fillna(0).sum())
    return [f"# Search report: {df.attrs.get('experiment', 'search')}", "",
            f"- parent run: `{df.attrs.get('parent_run_id', '?')}`",
            f"- task score: {score_name(df.attrs.get('metric')).title} of each trial's selected checkpoint; "
            "fraction: stored parameters as a percentage of the backbone's",
            f"- trials: {len(df)} (finished {counts.get('finished', 0)}, of which full fidelity "
            f"{int(df['full_fidelity'].sum())}; early-stopped {counts.get('stopped', 0)}; failed "
            f"{counts.get('failed', 0)}; other {other})",
            f"- configurations (a design with its training settings) with a full-fidelity score: {len(groups)} "
            f"({per}); each scores the mean over its replicate seeds",
            f"- hypervolume: {hv:.4g} (score above the reference x decades of fraction below "
            f"{REFERENCE.ref_fraction:g}; configuration means, full-fidelity runs only)",
            f"- hypervolume reference score: {ref.score:.4g} ({ref.basis}); override with --reference-score", ""]


def front_table(df: pd.DataFrame, groups: pd.DataFrame) -> list[str]:
    out = ["## Pareto-optimal designs (by fraction)", ""]
    if groups.empty:
        return out + ["No design has a full-fidelity score yet."]
    rows = []
    labels = dict(zip(df["run_id"], df["trial"]))  # the trial ids of console lines and MLflow run names
    for g in groups[group_front(groups)].sort_values("fraction").to_dict("records"):
        rec = df.iloc[g["row"]]
        params, mb = _stored(rec["params.stored"])
        preset = g["preset"] if isinstance(g["preset"], str) else ""
        trials = [labels.get(r, r[:8]) for r in g["run_ids"]]
        rows.append(["; ".join(describe_design(rec.to_dict())), g["family"], preset, _score(g),
                     _pct(g["fraction"]), params, mb, ", ".join(f"`{t}`" for t in trials[:3])
                     + (f" (+{len(trials) - 3})" if len(trials) > 3 else "")])
    return out + md_table(["design", "family", "preset", score_name(df.attrs.get("metric")).label, "fraction",
                           "stored params", "size MB (fp32)", "trials"], rows)


def family_table(groups: pd.DataFrame, ref: Reference, label: str = "score") -> list[str]:
    """Hypervolume of each design family's own front, against the same reference."""
    if groups.empty:
        return []
    on_front = set(groups.loc[group_front(groups), "design_key"])
    rows = []
    for fam, g in groups.groupby(groups["family"].fillna("unknown"), sort=False):
        span = f"{_pct(g['fraction'].min())} .. {_pct(g['fraction'].max())}"
        rows.append([fam, len(g), f"{g['score'].max():.4g}", span,
                     f"{hypervolume(g['score'], g['fraction'], ref_score=ref.score):.4g}",
                     int(g["design_key"].isin(on_front).sum())])
    rows.sort(key=lambda r: -float(r[4]))
    return ["", "## Hypervolume per design family", "",
            f"Each family's own front against the same reference score ({ref.score:.4g}).", ""] + md_table(
        ["family", "configurations", f"best {label}", "fraction range", "hypervolume", "on the overall front"], rows)


def presets_table(df: pd.DataFrame, groups: pd.DataFrame) -> list[str]:
    named = groups[groups["preset"].map(lambda p: isinstance(p, str))]
    if named.empty:
        return []
    front = set(groups.loc[group_front(groups), "design_key"])
    label = score_name(df.attrs.get("metric")).label
    return ["", "## Paper presets", ""] + md_table(["preset", label, "fraction", "Pareto-optimal"], [
        [g["preset"], _score(g), _pct(g["fraction"]), "yes" if g["design_key"] in front else "no"]
        for g in named.to_dict("records")])


def _effect_cells(r: pd.Series | dict) -> list[object]:
    diff = f"{r['diff']:+.4g}" if np.isfinite(r["diff"]) else "n/a"
    ci = f"[{r['ci_low']:+.3g}, {r['ci_high']:+.3g}]" if np.isfinite(r["ci_low"]) else "n/a"
    verdict = str(r["verdict"])
    verdict = {"a better": f"{r['a']} better", "b better": f"{r['b']} better"}.get(verdict, verdict)
    return [diff, ci, r["n_pairs"], verdict]


def effects_sections(effects: pd.DataFrame, ref: Reference) -> list[str]:
    attrs = effects.attrs
    lr = ("each design at its best learning rate (train.lr took several values)" if attrs.get("lr_mode") == "best"
          else "every training setting equal")
    basis = [f"Pairs of designs that differ in one choice only: every other site and setting equal, {lr}, budgets "
             f"within {BUDGET_TOLERANCE:.0%}. diff = mean score of a - b; 95% bootstrap CI over pairs and replicate "
             f"seeds; a verdict needs {MIN_PAIRS}+ pairs or 2+ seeds per design. Runs at or below "
             f"{collapse_threshold(ref, COLLAPSE_MARGIN):.4g} (the reference plus {COLLAPSE_MARGIN:.0%}) collapsed "
             f"and are left out: {attrs.get('collapsed_runs', 0)} run(s); {attrs.get('dropped_designs', 0)} "
             f"design(s) had no other run. Designs compared: {attrs.get('designs', '?')}. Full table: effects.csv."]
    named = effects[effects["conclusion"] != ""]
    out = ["", "## The paper's conclusions, like for like", ""] + basis + [""]
    out += md_table(["conclusion", "a", "b", "where", "diff", "95% CI", "pairs", "verdict"], [
        [r["conclusion"], r["a"], r["b"], r["site"], *_effect_cells(r)] for r in named.to_dict("records")])
    rest = effects[effects["conclusion"] == ""]
    testable = rest[~rest["verdict"].str.startswith("not testable")]
    untestable = rest[rest["verdict"].str.startswith("not testable")]
    out += ["", "## Design choices at each site, like for like", ""]
    out += md_table(["axis", "site", "a", "b", "diff", "95% CI", "pairs", "verdict"], [
        [r["axis"], r["site"], r["a"], r["b"], *_effect_cells(r)] for r in testable.to_dict("records")]
    ) if len(testable) else ["No comparison had enough pairs for a verdict."]
    if len(untestable):
        out += ["", f"Not testable in this search ({len(untestable)}):", ""]
        out += [f"- {r['axis']} at {r['site']}, {r['a']} vs {r['b']}: {str(r['verdict'])[len('not testable: '):]}"
                + (f" (point estimate {r['diff']:+.3g})" if np.isfinite(r["diff"]) else "")
                for r in untestable.to_dict("records")]
    return out


def importance_section(importance: pd.Series | None) -> list[str]:
    if importance is None or not len(importance):
        return []
    return ["", f"## Parameter importance for score ({importance.attrs.get('evaluator', '')}, "
                f"{importance.attrs.get('designs', '?')} {importance.attrs.get('basis', 'designs')}, parameters "
                "that vary)", ""] + md_table(
        ["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in importance.head(12).items()])


def summary_markdown(df: pd.DataFrame, hv: float, ref: Reference, notes: list[str], effects: pd.DataFrame | None,
                     importance: pd.Series | None) -> str:
    """The whole report text."""
    groups = design_groups(df)
    label = score_name(df.attrs.get("metric")).label
    out = header(df, groups, hv, ref) + front_table(df, groups) + family_table(groups, ref, label)
    out += presets_table(df, groups)
    if effects is not None and len(effects):
        out += effects_sections(effects, ref)
    out += importance_section(importance)
    failures = df.loc[df["status"] == "failed", "failure"].dropna().value_counts().head(5)
    if len(failures):
        out += ["", "## Failures", ""] + [f"- {n} x {_md_cell(reason)}" for reason, n in failures.items()]
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"
