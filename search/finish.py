"""The end of a search: refresh the report, close the parent run, print the Pareto-optimal designs."""

from __future__ import annotations

from typing import Any

from finetune.spans import timed
from search.contract import SEARCH_STATE_TAG, score_name


def front_table(df: Any) -> str:
    """The Pareto-optimal designs, one line each: the trial, its mean task score over the seeds (± std) under the
    metric's name, the stored fraction in percent, the stored parameters and the design."""
    # deferred on purpose: pandas, matplotlib and MLflow load at the end of a search, not with the driver
    from analysis.design import describe_design
    from analysis.groups import design_groups, group_front

    groups = design_groups(df)
    if groups.empty:
        return "no trial reached full fidelity, so there is no front yet"
    score = score_name(df.attrs.get("metric"))
    lines = [f"{score.title}, of the selected checkpoint; fraction = stored parameters, % of the backbone's",
             f"{'trial':>6}  {score.label:>16}  {'fraction':>9}  {'stored':>11}  design"]
    for g in groups[group_front(groups)].sort_values("fraction").to_dict("records"):
        row = df.iloc[g["row"]]
        design = " | ".join(describe_design(row.to_dict())) + (f"  [{g['preset']}]" if isinstance(g["preset"], str)
                                                              else "")
        value = f"{g['score']:.4f}" + (f" ± {g['score_std']:.4f}" if g["n_seeds"] > 1 else "")
        lines.append(f"{row['trial']:>6}  {value:>16}  {100 * g['fraction']:>8.3f}%  {int(row['params.stored']):>11,}"
                     f"  {design}")
    return "\n".join(lines)


@timed("search.finish")
def finish(client: Any, parent_id: str, tracking_uri: str, report_dir: str, status: str = "FINISHED",
           state: str = "complete") -> None:
    """Close the search's record: children still running as interrupted, the report, the parent as `status`
    (MLflow's FINISHED, FAILED or KILLED, from `search.outcome.STATES`) with its state in petl.search_state."""
    # deferred on purpose: pandas, matplotlib and MLflow load at the end of a search, not with the driver
    from analysis.load import load_search
    from analysis.report import update_search_report
    from search.store import close_interrupted

    lost = close_interrupted(client, parent_id)
    if lost and state == "complete":
        print(f"interrupted: {', '.join(lost)} (started by the killed driver after its last saved state; "
              "their slots were run again)")
    elif lost:
        print(f"interrupted: {', '.join(lost)} (not finished; --resume continues each from its last evaluation)")
    try:
        update_search_report(client, parent_id, report_dir)
    except ValueError as err:
        print(f"report: {err}")
    client.set_tag(parent_id, SEARCH_STATE_TAG, state)
    client.set_terminated(parent_id, status)
    df = load_search(parent_run_id=parent_id, client=client)
    counts = df["status"].value_counts().to_dict()
    print(f"\n{len(df)} trials: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("finished", "stopped", "failed",
                                                                                   "skipped", "interrupted")
                                       if counts.get(s, 0) or s == "finished"))
    print("Pareto-optimal designs (full fidelity; task score up, stored parameter fraction down):")
    print(front_table(df))
    print(f"\nPlots, CSV and summary: {report_dir}\nBrowse it: mlflow ui --backend-store-uri {tracking_uri}  "
          f"(parent run {parent_id})")
