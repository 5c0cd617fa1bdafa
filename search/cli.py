"""`petl-search --space full --dataset en-ro --dry-run`: search the unified PETL design space (first, check the plan).

Every trial trains one design point (sampled by Optuna from the YAML space, two objectives: task score up, stored
parameter fraction down) under Ray Tune, with early stopping that ranks trials by Pareto rank; MLflow records a parent
run for the search and a child run per trial, with the Pareto plots on the parent. Training settings come from the
task's recipe, then the space's fixed `train:` values, then --set. `--dry-run` resolves and checks all of it and
prints the plan (data, steps, evaluation, rungs, resources, cost) without starting anything. With no arguments it runs
the smoke space on a generated sentiment task (toy-cls) with the pretrained MiniLM (all-MiniLM-L6-v2, shipped by a
PyPI package): local Ray, a local SQLite MLflow store, nothing downloaded, about 30 s on two cores.
(`python search/run.py` is the same command from a checkout.)
"""

from __future__ import annotations

import argparse
import os
import secrets

from finetune.gpus import DEFAULT_GPU, DEFAULT_UTILIZATION
from finetune.runconfig import settings_help
from finetune.tasks import data_help, get_task, task_names
from search.names import SearchError, check_name, restore_args
from search.outcome import exit_code_table

DEFAULT_SPACE = "smoke"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default unless its help already says it (or there is none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def epilog() -> str:
    """What --set accepts (with each setting's default from the run configuration) and what --data-dir must hold per
    task, both derived from the code that reads them (finetune.runconfig, finetune.tasks)."""
    sets = "\n".join(f"  {line}" for line in settings_help())
    data = "\n".join(f"  {name}: {data_help(get_task(name))}" for name in task_names() if not get_task(name).generated)
    return (f"--set KEY=VALUE (also a space's train: key); default = the task's recipe, or the setting's own:"
            f"\n{sets}\n\n--data-dir DIR must hold, per task (the first existing name wins):\n{data}\n"
            "Without --data-dir a task reads its Hugging Face dataset (the cache, or the hub unless "
            "HF_HUB_OFFLINE=1).")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="petl-search", description=__doc__, formatter_class=HelpFormatter,
                                epilog=epilog() + "\n\n" + exit_code_table() + "\n\nOn a cluster (an existing Ray "
                                "cluster, SLURM, Ray jobs): docs/cluster.md and petl-submit --help.")
    _what_to_search(p)
    _how_to_search(p)
    _where_it_runs(p)
    _tracking_and_plan(p)
    return p


def _what_to_search(p: argparse.ArgumentParser) -> None:
    a = p.add_argument_group("what to search")
    a.add_argument("--space", default=DEFAULT_SPACE,
                   help="YAML design space: a file, or a shipped space by name (full, paper, smoke; schema in "
                   "spaces/README.md); default: smoke")
    a.add_argument("--dataset", default=None, help="task: en-ro, xsum, mnli, sst2, toy-cls, toy-s2s "
                   "(default: the space's own task)")
    a.add_argument("--model", default=None, help="checkpoint folder or hub name ('minilm' = the packaged MiniLM); "
                   "default: the task's checkpoint (a tiny random model for toy tasks)")
    a.add_argument("--data-dir", default=None, metavar="DIR", help="local files in the task's format instead of the "
                   "hub: the file names and columns per task are listed at the end")
    a.add_argument("--num-samples", type=int, default=None, help="designs to evaluate, presets included (default 8; "
                   "each is trained under --seeds seeds); a study (--sampler grid) trains all it lists instead")
    a.add_argument("--seeds", type=int, default=1, help="replicate training seeds per design (the resolved training "
                   "seed and the ones after it): the front and the effects use the mean +- std over them; a seed is "
                   "never a searched value")
    a.add_argument("--max-param-fraction", type=float, default=None,
                   help="hard budget: designs storing more than this fraction of the backbone are never trained; "
                   "the sampler is told they are infeasible and draws again, so every trial is within the budget "
                   "(default: no budget)")
    a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a training setting for every trial, over the recipe and the space, e.g. --set "
                   "max_steps=2000 or --set epochs=3 (repeatable; every KEY and its default are listed at the end)")


def _how_to_search(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("how to search")
    s.add_argument("--sampler", choices=["tpe", "nsga2", "grid"], default="tpe",
                   help="Optuna's multi-objective sampler (tpe, nsga2), or 'grid': a study that trains every "
                   "combination of the space's listed values to full fidelity (no early stopping), resumable")
    s.add_argument("--seeds-at-best-lr", action="store_true",
                   help="with --sampler grid: train every combination once, then a design's other --seeds only at "
                   "its best listed lr")
    s.add_argument("--scheduler", choices=["pareto", "banded", "asha", "none"], default=None,
                   help="early stopping: 'pareto' (default; 'none' for --sampler grid) = ASHA whose rungs promote by "
                   "Pareto rank on (score, fraction), as MOASHA; 'banded' = ASHA within parameter-budget bands; "
                   "'asha' = plain ASHA on score; 'none' = every trial to full fidelity")
    s.add_argument("--grace-period", type=int, default=None, help="steps before a trial can be stopped, a multiple "
                   "of the evaluation interval (default: the resolved evaluation interval, e.g. 5,000 for en-ro)")
    s.add_argument("--reduction-factor", type=float, default=3.0, help="ASHA keeps 1/this of trials per rung")
    s.add_argument("--bands-per-decade", type=int, default=2,
                   help="with --scheduler banded: budget bands per factor 10 of parameter fraction")
    s.add_argument("--seed", type=int, default=0, help="sampler seed")
    s.add_argument("--rerun-duplicates", action="store_true",
                   help="train a config again when an identical one already reached full fidelity in this search "
                   "(default: reuse its result; training is seeded, so a rerun would repeat it)")


def _where_it_runs(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group("where it runs")
    r.add_argument("--address", default=None, help="join a Ray cluster: its head's host:port (as `ray start "
                   "--head` prints it), ray://head:10001 (Ray Client: petl-search[cluster]) or auto; checked with a "
                   "5 s connect before anything starts; default: start Ray locally")
    r.add_argument("--concurrency", type=int, default=2, help="trials running at once")
    r.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs per trial")
    r.add_argument("--gpus-per-trial", type=float, default=0, help="GPUs per trial; fractions share a GPU (0.25)")
    r.add_argument("--workers-per-trial", type=int, default=1,
                   help="> 1: each trial is a Ray Train DeepSpeed job with this many workers")
    r.add_argument("--max-failures", type=int, default=1, help="retries of a crashed trial before it is failed")
    r.add_argument("--storage", default="petl_runs", help="folder for trial state and checkpoints, reachable by every "
                   "node (local disk on one machine; NFS or a mounted bucket on a cluster; file:// is accepted, other "
                   "URIs such as s3:// are refused: mount the bucket)")
    r.add_argument("--name", default=None, help="search name (default: <space>-<dataset>); --resume needs it")
    r.add_argument("--resume", action="store_true", help="continue the interrupted search of this --name")


def _tracking_and_plan(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("tracking")
    t.add_argument("--tracking-uri", default=None, help="MLflow store (default: sqlite:///<cwd>/mlflow.db)")
    t.add_argument("--experiment", default=None, help="MLflow experiment (default: the search name)")
    d = p.add_argument_group("plan first")
    d.add_argument("--dry-run", action="store_true", help="resolve and check everything, print the plan and its "
                   "cost, and start nothing (no Ray, no weights, no training, no tracking)")
    d.add_argument("--json", action="store_true", help="with --dry-run: print the plan as one JSON object")
    d.add_argument("--gpu", default=DEFAULT_GPU, help="GPU the cost estimate assumes")
    d.add_argument("--utilization", type=float, default=DEFAULT_UTILIZATION, help="fraction of the GPU's peak "
                   f"FLOP/s the cost estimate assumes (default {DEFAULT_UTILIZATION}, what the paper's en-ro run "
                   "achieved)")


def private_ray_token() -> None:
    """Keep Ray's token authentication on for the local instance, with a fresh token of its own.

    Ray binds its servers to every network interface (there is no loopback-only option), so without a token anyone
    who can reach this machine could run code in the search. The token lives only in this process's environment,
    which the Ray processes it starts inherit; nothing is written to ~/.ray. An explicit RAY_AUTH_MODE or token of
    the user's is kept. Must run before `ray` is imported: Ray reads the mode once, at import.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if os.environ["RAY_AUTH_MODE"] == "token" and not (os.environ.get("RAY_AUTH_TOKEN")
                                                       or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # 256 bits, as `ray get-auth-token --generate`


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.json and not args.dry_run:
        build_parser().error("--json goes with --dry-run (a search prints its progress and ends with the front)")
    args.given_flags = given_flags(parser, argv)
    return execute(args)


def given_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The destinations of the flags on the command line (not their defaults): what --resume must check."""
    for action in parser._actions:  # a throwaway parser: every default suppressed, so only given flags appear
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def execute(args: argparse.Namespace) -> int:
    """Run a search from parsed arguments (also `python -m search.reevaluate`'s, with `args.front` set)."""
    for key, value in (("TRANSFORMERS_VERBOSITY", "error"), ("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0"),
                       ("TUNE_GLOBAL_CHECKPOINT_S", "1"), ("RAY_DEDUP_LOGS", "1"),
                       ("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1"), ("TUNE_DISABLE_SIGINT_HANDLER", "1"),
                       ("RAY_gcs_rpc_server_reconnect_timeout_s", "600")):
        # Checkpoint the experiment every second (a SIGKILL loses ~nothing); failed and over-budget trials report
        # no score on purpose, which Ray's strict metric check would turn into a crash of the whole search. SIGINT is
        # search.outcome.StopSignals' (it remembers the signal, then asks Tune to stop cleanly through SIGUSR1). A lost
        # head is search.cluster.watch_cluster's to report (in ~15 s), not Ray's to end the driver with exit 0.
        os.environ.setdefault(key, value)
    if args.address is None:
        private_ray_token()

    try:
        name, storage = check_name(args)  # before the heavy imports: a collision is answered in well under a second
        given = getattr(args, "given_flags", None)
        if args.resume and given is not None:
            restore_args(args, given, storage / name)
        # deferred on purpose: search.driver loads torch, transformers and Ray; --help and name checks answer first
        from search.driver import run_search

        return run_search(args)
    except SearchError as err:
        print(f"error: {err}")
        return 2
