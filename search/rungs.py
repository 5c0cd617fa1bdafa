"""Where ASHA's rungs sit, in optimizer steps; no Ray import, so a plan can show them before anything starts."""

from __future__ import annotations

import math


def milestones(max_t: int, grace_period: int, reduction_factor: float) -> list[float]:
    """Rung milestones grace_period · eta^k below max_t (every ASHA here, Ray's included, places them so)."""
    if grace_period < 1 or reduction_factor <= 1:
        raise ValueError(f"grace_period must be >= 1 and reduction_factor > 1, got {grace_period}, "
                         f"{reduction_factor}")
    out, t = [], float(grace_period)
    while t < max_t:
        out.append(t)
        t *= reduction_factor
    return out


def rung_steps(max_t: int, grace_period: int, reduction_factor: float, eval_every: int) -> list[int]:
    """The steps at which rungs decide: a trial reports only when it evaluates, so a milestone decides at the first
    evaluation at or after it. Raises ValueError when two milestones would decide at the same evaluation."""
    steps = [min(math.ceil(m / eval_every) * eval_every, max_t) for m in milestones(max_t, grace_period,
                                                                                    reduction_factor)]
    if len(set(steps)) != len(steps):
        raise ValueError(f"rungs at {steps} fall on the same evaluation (every {eval_every:,} steps); raise "
                         f"--reduction-factor (got {reduction_factor:g}) or --grace-period")
    return [s for s in steps if s < max_t]  # at max_t a trial ends by itself
