"""``python -m analysis.report`` (``petl-report``): write a search's report and attach it to its MLflow parent run.

``python -m analysis.report --experiment NAME --out DIR`` writes front.png, front.html, importance.png,
trials.csv, effects.csv and summary.md; unless ``--no-log`` it also logs them as parent-run artifacts under
``analysis/``, logs the ``hypervolume`` history on the parent and tags every run of a Pareto-optimal design
``petl.pareto=true|false`` (`analysis.publish`, where the report is made).

This module is the command line only, so that ``--help`` answers before pandas, MLflow, Optuna and matplotlib load
(seconds). The report's functions live in `analysis.publish`; the names the search, the tests and the benchmarks
import from here (``update_search_report``, ``write_report``, ...) are forwarded to it on first use.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from finetune.lazy import lazy_getattr

_PUBLISHED = ("ARTIFACT_DIR", "HYPERVOLUME_METRIC", "ReportResult", "log_report", "trials_table",
              "update_search_report", "write_report")


# PEP 562: `from analysis.report import write_report` keeps working without this module importing pandas.
__getattr__ = lazy_getattr("analysis.report", dict.fromkeys(_PUBLISHED, "analysis.publish"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analysis.report",
        description="Analyse a PETL design-space search recorded in MLflow: Pareto front of designs (mean over "
                    "replicate seeds; PNG + interactive HTML), hypervolume overall and per design family, "
                    "like-for-like design effects with bootstrap CIs (effects.csv), parameter importance, trial "
                    "table and a Markdown summary; optionally attach them to the search's parent run.",
        epilog="Give --experiment, --parent-run-id or both (the run id wins). Unless --no-log, the files are "
               "logged to the parent run under analysis/, the parent gets a 'hypervolume' metric (step = trial "
               "index in completion order; not with --reference-score) and every trial run a "
               "petl.pareto=true|false tag. Exit status 2: tracking store unreachable, or experiment/search not "
               "found.",
    )
    p.add_argument("--experiment", metavar="NAME",
                   help="MLflow experiment holding the search; its newest search parent run is analysed.")
    p.add_argument("--parent-run-id", metavar="ID",
                   help="analyse this search parent run (tag petl.role=search) instead of the newest one.")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking URI, e.g. http://127.0.0.1:5000 or sqlite:///mlflow.db "
                        "(default: $MLFLOW_TRACKING_URI, else MLflow's default sqlite:///mlflow.db in the cwd).")
    p.add_argument("--out", metavar="DIR", required=True, type=Path,
                   help="directory for front.png, front.html, importance.png, trials.csv, effects.csv and "
                        "summary.md (created if missing; files are overwritten).")
    p.add_argument("--reference-score", metavar="S", type=float,
                   help="hypervolume reference score (default: the search's own, from its task: majority-class or "
                        "chance accuracy for classification, 0 for BLEU/ROUGE)."),
    p.add_argument("--no-log", action="store_true",
                   help="only write the files; do not log artifacts, the hypervolume metric or petl.pareto tags.")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.experiment and not args.parent_run_id:
        parser.error("give --experiment NAME or --parent-run-id ID")
    # deferred on purpose: pandas, MLflow, Optuna and matplotlib take seconds to import; --help needs none of them.
    from analysis.design import reference_of
    from analysis.load import SearchNotFoundError, TrackingUnreachableError, load_search, make_client
    from analysis.publish import ARTIFACT_DIR, log_report, write_report

    try:
        client = make_client(args.tracking_uri)
        df = load_search(args.experiment, args.parent_run_id, client=client)
        ref = reference_of(df, args.reference_score) if args.reference_score is not None else None
        result = write_report(df, args.out, reference=ref)
        if not args.no_log:
            log_report(client, df, result, metric=ref is None)
    except (TrackingUnreachableError, SearchNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(df)} trials, {len(result.pareto_run_ids)} runs of Pareto-optimal designs, hypervolume "
          f"{result.hypervolume:.4g} above reference score {result.reference.score:.4g} ({result.reference.basis})")
    for note in result.notes:
        print(f"note: {note}")
    for path in result.files.values():
        where = "" if args.no_log else f" (logged to run {result.parent_run_id} under {ARTIFACT_DIR}/)"
        print(f"wrote {path}{where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
