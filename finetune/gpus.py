"""GPUs a cost estimate can assume: peak dense bf16 FLOP/s by name, and the default GPU and utilisation.

Kept apart from `finetune.flops` (which needs transformers) so the command lines can show these defaults in
`--help` without importing torch.
"""

from __future__ import annotations

DEFAULT_GPU = "A100"
# The paper's en-ro run: about 20 h on one RTX A6000 for 50,000 steps (seed_spec §4); finetune.flops counts MAM's
# 50,000 steps at 2.2e18 FLOPs, i.e. 30 TFLOP/s, 19% of the A6000's 154.8 TFLOP/s dense peak (evaluation included).
DEFAULT_UTILIZATION = 0.2
# Peak dense bf16 FLOP/s (no sparsity), by a substring of torch.cuda.get_device_name(); first match wins. NVIDIA data
# sheets: H100/H200 SXM 989 TFLOP/s, H100 PCIe 756, H100 NVL 835, A100 312, L40S 362, RTX A6000 154.8 (309.7 with
# sparsity; the paper's en-ro GPU).
PEAK_BF16 = (("H200", 989e12), ("H100 NVL", 835e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("GH200", 989e12),
             ("A100", 312e12), ("L40S", 362e12), ("A6000", 154.8e12))


def peak_flops(name: str) -> float | None:
    """Peak dense bf16 FLOP/s of a GPU named like torch.cuda.get_device_name() ("NVIDIA A100-SXM4-80GB")."""
    for key, value in PEAK_BF16:
        if key in name:
            return value
    return None


__all__ = ["DEFAULT_GPU", "DEFAULT_UTILIZATION", "PEAK_BF16", "peak_flops"]
