"""A killed trial resumes exactly where it stopped, with every engine, ZeRO stage and precision the run configuration
accepts, and its resume state is never unpickled (issue 12, items 1, 2 and 10).

The protocol: train 10 steps uninterrupted; train again, killed right after the step-5 report; resume the killed
trial to step 10. The resumed model must compute the same logits and report the same step-10 loss and score as the
uninterrupted one. On CPU they are bit-identical (every float operation repeats in the same order); on CUDA some
kernels accumulate with atomics whose order varies between runs, so there the logits may differ by float rounding
(atol 1e-4): the failure this guards against (a resume from the initial weights) differs by about 0.05.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from finetune.loop import train
from finetune.presets import get_preset
from finetune.reporter import ListReporter
from finetune.trainconfig import ENGINES, PRECISIONS, ZERO_STAGES, TrainConfig

# Small and fast: the tiny random RoBERTa of toy-cls; mam_glue trains a prefix MLP, a parallel adapter and the head.
SETTINGS = dict(max_steps=10, eval_every=5, lr=1e-2, batch_size=8, eval_cap=16, max_length=24)
DESIGN = get_preset("mam_glue").design


def accepted_settings() -> list[tuple[str, int, str]]:
    """Every (engine, ZeRO stage, precision) a TrainConfig accepts; `auto` is one of the other two on any machine,
    and the plain PyTorch engine has no ZeRO stage."""
    engines = [e for e in ENGINES if e != "auto"]
    return [(e, z, p) for e in engines for z in (ZERO_STAGES if e == "deepspeed" else (0,)) for p in PRECISIONS]


def _marks(engine: str, precision: str) -> list[pytest.MarkDecorator]:
    if engine == "deepspeed" and precision == "fp16":  # DeepSpeed's CPU accelerator refuses fp16
        return [pytest.mark.slow, pytest.mark.gpu]
    return [pytest.mark.slow] if engine == "deepspeed" else []


class KilledAfterStep5(ListReporter):
    def report(self, metrics):  # the driver (or the worker) dies right after the step-5 report
        super().report(metrics)
        raise KeyboardInterrupt


def kill_at_step_5(cfg: TrainConfig) -> None:
    with pytest.raises(KeyboardInterrupt):
        train(DESIGN, cfg, KilledAfterStep5())
    assert (Path(cfg.out_dir) / "resume").is_dir()


def test_the_resume_matrix_covers_every_accepted_setting_and_zero_3_is_refused() -> None:
    assert len(accepted_settings()) == 3 + 3 * 3
    with pytest.raises(ValueError, match=r"zero_stage must be 0, 1 or 2 \(ZeRO-3 would partition the frozen "
                                         r"backbone.*\), got 3"):
        TrainConfig.for_task("toy-cls", engine="deepspeed", zero_stage=3)


@pytest.mark.parametrize(("engine", "stage", "precision"),
                         [pytest.param(*s, marks=_marks(s[0], s[2]), id="-".join(map(str, s)))
                          for s in accepted_settings()])
def test_a_killed_trial_resumes_to_the_uninterrupted_result(engine: str, stage: int, precision: str,
                                                            tmp_path: Path) -> None:
    def cfg(out: Path | None = None) -> TrainConfig:
        return TrainConfig.for_task("toy-cls", engine=engine, zero_stage=stage, precision=precision,
                                    out_dir=str(out) if out else None, **SETTINGS)

    full_rep, rep = ListReporter(), ListReporter()
    # Both with a trial folder: at max_steps a trial restores the checkpoint its select_metric chose (which may be
    # step 5's), so both models are the selected ones, compared like with like.
    full = train(DESIGN, cfg(tmp_path / "full"), full_rep)
    kill_at_step_5(cfg(tmp_path / "t"))
    resumed = train(DESIGN, cfg(tmp_path / "t"), rep)
    assert resumed.engine == full.engine == ("TorchEngine" if engine == "torch" else "DeepSpeedEngine")
    # The resumed trial first reports the evaluation stored with its resume point again (a report that may never
    # have reached the driver before the kill; tracking drops a step it already has), then trains on to step 10.
    assert [r["step"] for r in rep.reports] == [5, 10]
    ids = torch.randint(5, 30, (3, 9))
    got, want = (r.model.eval()(input_ids=ids.to(r.model.device)).logits.float().cpu() for r in (resumed, full))
    if torch.cuda.is_available():
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
        assert rep.reports[-1]["loss"] == pytest.approx(full_rep.reports[-1]["loss"], abs=1e-4)
    else:
        assert torch.equal(got, want), (got - want).abs().max()
        assert (rep.reports[-1]["loss"], rep.reports[-1]["score"]) == (full_rep.reports[-1]["loss"],
                                                                        full_rep.reports[-1]["score"])
        assert rep.reports[0]["score"] == full_rep.reports[0]["score"]  # step 5's evaluation, reported again
    assert not (tmp_path / "t" / "resume").exists()  # dropped once the trial finished


class Planted:
    """Unpickling this creates `path`: the harmless stand-in for code an attacker would run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("engine", ["torch", pytest.param("deepspeed", marks=pytest.mark.slow)])
def test_a_planted_pickle_in_the_resume_state_is_refused_not_run(engine: str, tmp_path: Path) -> None:
    cfg = TrainConfig.for_task("toy-cls", engine=engine, out_dir=str(tmp_path / "t"), **SETTINGS)
    kill_at_step_5(cfg)
    resume = tmp_path / "t" / "resume"
    # The file every load reads first: the torch engine's state, DeepSpeed's model states.
    target = resume / "state.pt" if engine == "torch" else resume / "deepspeed" / "mp_rank_00_model_states.pt"
    assert target.is_file(), sorted(p.name for p in resume.rglob("*"))
    marker = tmp_path / "pwned"
    torch.save({"step": Planted(marker)}, target)
    with pytest.raises(ValueError, match=rf"{target.name}: resume state holds more than tensors and plain data "
                                         r"\(.*\); refusing to unpickle it\. Delete the trial's resume/ folder"):
        train(DESIGN, cfg)
    assert not marker.exists()
