"""One run of the study in a worker process: train with the product's loop, score on the final split, return a row.

The loop evaluates on the selection split every eval_every steps (its reports are the row's selection curve) and
keeps its resume state in the run's folder, so a run killed midway continues from its last evaluation; the curve,
wall time and CPU time of the earlier attempts are kept beside it (progress.json). A diverged or NaN run is a result
(a row with status "failed"); anything else that raises is left to the runner, which records nothing for it.
"""

from __future__ import annotations

import datetime
import json
import platform
import resource
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

PROGRESS = "progress.json"


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class CurveReporter:
    """Keeps every evaluation report, and the run's time so far, in the run folder (survives a killed worker)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / PROGRESS
        resumable = (run_dir / "resume" / "state.pt").is_file()
        prior = json.loads(self.path.read_text()) if resumable and self.path.is_file() else {}
        self.reports: list[dict[str, float]] = prior.get("reports", [])
        self.wall0, self.cpu0 = prior.get("wall_s", 0.0), prior.get("cpu_s", 0.0)
        self.attempts = prior.get("attempts", 0) + 1
        self.t0, self.c0 = time.perf_counter(), _cpu_s()
        run_dir.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> tuple[float, float]:
        return self.wall0 + time.perf_counter() - self.t0, self.cpu0 + _cpu_s() - self.c0

    def report(self, metrics: dict[str, float]) -> None:
        self.reports = [r for r in self.reports if r["step"] < metrics["step"]] + [dict(metrics)]
        wall, cpu = self.elapsed()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"reports": self.reports, "wall_s": wall, "cpu_s": cpu, "attempts": self.attempts}))
        tmp.replace(self.path)


def make_config(settings: dict[str, Any], **extra: Any) -> Any:
    """The run's TrainConfig: the task's recipe with the tier's settings on top."""
    from finetune.trainconfig import TrainConfig

    rest = {k: v for k, v in {**settings, **extra}.items() if k != "task"}
    return TrainConfig.for_task(settings["task"], **rest)


def final_score(model: Any, settings: dict[str, Any], final_dir: str, cap: int | None) -> dict[str, Any]:
    """Accuracy of the trained model on the final split (the task's validation file in the source folder)."""
    import torch

    from finetune import data as D
    from finetune.loop import Data, evaluate
    from finetune.metrics import get_metric
    from finetune.models import resolve_model_path

    cfg = make_config(settings, data_dir=final_dir)
    task = cfg.resolved_task()
    tokenizer = D.load_tokenizer(task, resolve_model_path(task, cfg.model))
    examples = D.load_examples(task, "validation", final_dir, limit=cap)
    items = D.encode_classification(examples, tokenizer, cfg.max_length)
    items.sort(key=lambda it: len(it["input_ids"]))  # accuracy does not depend on order; sorted batches pad little
    device = next(model.parameters()).device
    size = cfg.batch_size or 32
    batches = [list(range(i, min(i + size, len(items)))) for i in range(0, len(items), size)]
    data = Data(train=[], eval=items, collate=lambda b: D.collate_classification(b, tokenizer.pad_token_id),
                batches=None, eval_batches=batches)  # type: ignore[arg-type]  # evaluation reads no training batches
    scores, loss = evaluate(model, task, tokenizer, data, cfg, torch.device(device))
    return {"score": scores[get_metric(task.metric).primary], "eval_loss": loss, "rows": len(items),
            "metrics": scores}


def _curve(reports: list[dict[str, float]], key: str) -> dict[str, float]:
    return {str(int(r["step"])): float(r[key]) for r in reports}


def _row(spec: dict[str, Any], rep: CurveReporter, steps: list[float]) -> dict[str, Any]:
    import torch
    import transformers

    gaps = [b - a for a, b in zip(steps, steps[1:])]
    wall, cpu = rep.elapsed()
    return {
        "key": spec["key"], "fingerprint": spec["fingerprint"], "tier": spec["tier"],
        "design_id": spec["job"]["design_id"], "lr": spec["job"]["lr"], "seed": spec["job"]["seed"],
        "role": spec["job"]["role"], **spec["meta"], "design": spec["design"],
        "train": {k: v for k, v in spec["settings"].items() if k not in ("data_dir", "out_dir")},
        "data": spec["data"], "data_rows": spec["data_rows"], "code": spec["code"], "model_sha": spec["model_sha"],
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "attempts": rep.attempts,
        "train_s_per_step": round(statistics.fmean(gaps), 4) if gaps else None,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "host": {"node": platform.node(), "machine": platform.machine(), "threads": torch.get_num_threads(),
                 "device": "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"},
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def execute(spec: dict[str, Any]) -> dict[str, Any]:
    from finetune.designpoint import DesignPoint
    from finetune.loop import train
    from finetune.reporter import TrialFailure

    run_dir = Path(spec["run_dir"])
    rep = CurveReporter(run_dir)
    steps: list[float] = []
    design = DesignPoint.from_dict(spec["design"])
    cfg = make_config(spec["settings"], out_dir=str(run_dir))
    try:
        res = train(design, cfg, rep, on_step=lambda step, loss: steps.append(time.perf_counter()))
    except TrialFailure as err:
        row = {**_row(spec, rep, steps), "status": "failed", "failure": err.reason, "failed_step": err.step,
               "selection": {"curve": _curve(rep.reports, "score")}, "final": None}
        shutil.rmtree(run_dir, ignore_errors=True)
        return row
    final = final_score(res.model, spec["settings"], spec["final_dir"], spec["final_cap"])
    row = {**_row(spec, rep, steps), "status": "finished", "failure": None,
           "fraction": res.counts.fraction, "counts": res.counts.to_dict(),
           # The model is the checkpoint the run's select_metric chose on the selection split (finetune.selection):
           # the final split scores it, as the paper reports the selected checkpoint.
           "selection": {"score": res.selected_score, "selected_step": res.selected_step, "last_score": res.score,
                         "eval_loss": res.last.get("eval_loss"),
                         "rows": spec["data_rows"]["selection"], "curve": _curve(rep.reports, "score"),
                         "loss_curve": _curve(rep.reports, "eval_loss"),
                         "train_loss_curve": _curve(rep.reports, "loss")},
           "final": final, "tokens_per_s": res.last.get("tokens_per_s")}
    shutil.rmtree(run_dir, ignore_errors=True)
    return row
