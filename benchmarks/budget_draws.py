"""How often a sampler's suggestions go over `--max-param-fraction`, per 50 trials and per 50 draws.

    python benchmarks/budget_draws.py                      # the production searcher (over-budget draws redrawn)
    python benchmarks/budget_draws.py --max-draws 1        # every draw handed to a trial, as before issue 12
    python benchmarks/budget_draws.py --smoke              # 10 trials per sampler: does it still run?

Drives the production plan and searcher (`search.driver.plan`, `make_searcher`) without Ray: each suggestion is a
trial; an over-budget one is completed as Ray's trial would report it (skipped), a feasible one with a score that is
a fixed function of its fraction, so only the budget steers the sampler. Default: spaces/smoke.yaml on toy-cls with
the packaged MiniLM, budget 0.0005, 150 trials, seed 0; a few seconds per sampler.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(sampler: str, args: argparse.Namespace) -> tuple[list[bool], list[bool], list[int]]:
    from search.cli import build_parser
    from search.driver import make_searcher, plan
    from search.searcher import BUDGET_KEY

    cli = build_parser().parse_args(["--space", args.space, "--sampler", sampler, "--seed", str(args.seed),
                                     "--max-param-fraction", str(args.budget)])
    p = plan(cli)
    searcher = make_searcher(p)
    searcher.max_draws = args.max_draws
    trials = []
    for i in range(args.trials):
        config = searcher.suggest(f"t{i}")
        over = config["fraction"] > args.budget
        trials.append(over)
        result = {"over_budget": 1, "step": 0} if over else {
            "step": p.max_steps, "score": 0.8 + 0.02 * math.log10(config["fraction"]),
                  "selected_score": 0.8 + 0.02 * math.log10(config["fraction"])}
        searcher.on_trial_complete(f"t{i}", {**result, "fraction": config["fraction"]})
    draws = searcher.searcher.study.trials  # the Optuna searcher inside ReplicateSearcher
    generations = [t.system_attrs.get("NSGAIISampler:generation", -1) for t in draws]
    return trials, [t.constraints[BUDGET_KEY] > 0 for t in draws], generations


def per_50(flags: list[bool]) -> list[int]:
    return [sum(flags[k:k + 50]) for k in range(0, len(flags), 50)]


def main() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default=str(Path(__file__).resolve().parents[1] / "spaces" / "smoke.yaml"))
    ap.add_argument("--budget", type=float, default=0.0005)
    ap.add_argument("--trials", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-draws", type=int, default=200, help="1 = hand every draw to a trial (before issue 12)")
    ap.add_argument("--smoke", action="store_true", help="10 trials per sampler")
    args = ap.parse_args()
    if args.smoke:
        args.trials = 10
    for sampler in ("tpe", "nsga2"):
        trials, draws, generations = run(sampler, args)
        line = (f"{sampler:5s} over-budget trials per 50: {per_50(trials)} | {len(draws)} draws, over-budget per 50 "
                f"draws: {per_50(draws)}")
        if sampler == "nsga2":
            shares = [(g, f"{sum(d for d, k in zip(draws, generations) if k == g) / generations.count(g):.2f}")
                      for g in sorted(set(generations))]
            line += f" | over-budget share per NSGA-II generation: {shares}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
