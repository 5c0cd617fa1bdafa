"""`python -m search.reevaluate --from NAME --seeds 3 [search options]`: a finished search's front, re-evaluated.

A front found cheaply (one seed, short training, a small task) is checked where it matters: every Pareto-optimal
design of the source search (its mean over seeds decides the front), with the training settings it was found with
(its `train.*` params, e.g. its lr), is trained again under `--seeds` replicate seeds to full fidelity, as a study
recorded like any search (a new MLflow parent run with its children and report; `--resume` continues it). The seeds
are fresh ones, after the highest seed the source search trained (the same seeds on the same task would only
reproduce its numbers); `--set seed=N` chooses the first one instead.

Every option after the source ones is the search's own (`python search/run.py --help`): `--dataset`, `--model` and
`--data-dir` choose where to check the front; `--set` changes the fixed training settings. Those come from the source
search's space (its `space.yaml` artifact) unless `--space` is given. Designs are priced again on the target model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search import contract as C
from search.cli import build_parser as search_parser
from search.cli import execute

if TYPE_CHECKING:  # pandas and the tracking contract load after the arguments are parsed: --help stays instant
    import pandas as pd


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m search.reevaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Then any option of `python search/run.py`, e.g. --seeds 3 --dataset sst2 "
                                       "--data-dir DIR --name checked.")
    p.add_argument("--from", dest="source", metavar="EXPERIMENT",
                   help="MLflow experiment of the finished search (its newest search parent run)")
    p.add_argument("--from-run", metavar="ID", help="the finished search's parent run id (instead of --from)")
    p.add_argument("--from-tracking-uri", metavar="URI",
                   help="MLflow store of the finished search (default: --tracking-uri, else sqlite:///mlflow.db)")
    return p


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def front_configs(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The Pareto-optimal designs of a loaded search as trial configs {design, train, preset} (seed left out)."""
    # deferred on purpose: pandas, MLflow and the analysis load after the flags are parsed (--help stays fast)
    import pandas as pd

    from analysis.design import train_columns
    from analysis.groups import design_groups, group_front

    groups = design_groups(df)
    if groups.empty:
        return []
    out = []
    for g in groups[group_front(groups)].sort_values("fraction").to_dict("records"):
        row = df.iloc[int(g["row"])]
        design = C.design_from_params(row.to_dict())
        if design is None:
            continue
        train = {c[len(C.TRAIN_PREFIX):]: _plain(row[c]) for c in train_columns(df) if not pd.isna(row[c])}
        out.append({"design": design.to_dict(), "train": train,
                    "preset": g["preset"] if isinstance(g["preset"], str) else None})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    own, rest = parser.parse_known_args(argv)
    if not own.source and not own.from_run:
        parser.error("give --from EXPERIMENT or --from-run ID: the search whose front to re-evaluate")
    args = search_parser().parse_args(rest)
    # deferred on purpose: pandas, MLflow and the analysis load after the flags are parsed (--help stays fast)
    import pandas as pd

    from analysis.load import SearchNotFoundError, TrackingUnreachableError, load_search, make_client
    try:
        client = make_client(own.from_tracking_uri or args.tracking_uri)
        df = load_search(own.source, own.from_run, client=client)
    except (TrackingUnreachableError, SearchNotFoundError) as err:
        print(f"error: {err}")
        return 2
    args.front = front_configs(df)
    if not args.front:
        print(f"error: search {df.attrs['parent_run_id']!r} has no full-fidelity design, so no front to re-evaluate")
        return 2
    args.name = args.name or f"{df.attrs.get('experiment', 'search')}-front"
    used = sorted({int(s) for s in pd.to_numeric(df["seed"], errors="coerce").dropna()})
    chosen = any(item.split("=", 1)[0].strip() in ("seed", "train.seed") for item in args.set)
    if used and not chosen:
        args.set = [*args.set, f"seed={used[-1] + 1}"]
    first = next((item.split("=", 1)[1].strip() for item in args.set
                  if item.split("=", 1)[0].strip() in ("seed", "train.seed")), None)
    print(f"re-evaluating the {len(args.front)} Pareto-optimal designs of run {df.attrs['parent_run_id']} under "
          f"{args.seeds} seed(s)" + (f" from seed {first}" if first is not None else "")
          + (f" (the source search trained seeds {used})" if used else ""))
    with tempfile.TemporaryDirectory() as tmp:
        if "--space" not in rest and not any(a.startswith("--space=") for a in rest):
            space = Path(client.download_artifacts(df.attrs["parent_run_id"], "space.yaml", tmp))
            args.space = str(space)
        return execute(args)


if __name__ == "__main__":
    sys.exit(main())
