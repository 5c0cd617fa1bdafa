"""Can this machine have the model and the data? Checked before Ray starts, in seconds, from files alone when offline.

A search whose model or dataset cannot be had used to start Ray and fail every trial after minutes of retries
against an unreachable hub (issue 16). `check_available` answers first, from (in order) a local folder, the Hugging
Face cache (`HF_HOME`, `HF_HUB_CACHE`, `HF_DATASETS_CACHE`), or, only when the hub may be asked, the hub itself
with a short timeout. `HF_HUB_OFFLINE=1` (also `TRANSFORMERS_OFFLINE`, `HF_DATASETS_OFFLINE` for data) means the
hub is never asked. A model needs its config, weights and tokenizer; a hub dataset needs its cached copy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, constants, try_to_load_from_cache
from huggingface_hub.errors import RepositoryNotFoundError

from finetune.tasks import Task, data_help
from search.names import SearchError

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "sentencepiece.bpe.model", "spiece.model", "vocab.json",
             "vocab.txt")
HUB_TIMEOUT_S = 10.0
MODEL_FLAG, DATA_FLAG = "--model DIR", "--data-dir DIR"


def offline(*names: str) -> bool:
    """Whether any of these environment variables (default: the hub's own) says never to ask the hub."""
    names = names or ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(n, "").strip().upper() in ("1", "ON", "YES", "TRUE") for n in names)


@dataclass(frozen=True)
class Missing:
    """One thing a search cannot have: what is wrong (`clause`), the flag that fixes it (`fix`), and whether the
    hub was not asked because this machine is offline (then a shared HF_HOME cache is the other fix)."""

    clause: str
    fix: str
    offline: bool = False
    hub_silent: bool = False  # the hub was asked and did not answer


def check_available(task: Task, model_path: str | None, data_dir: str | None, *, ask_hub: bool = True) -> None:
    """Raise SearchError when the weights, the tokenizer or the data of this search cannot be had on this machine:
    ONE line naming every missing thing (the model and the data are both checked first, so the user fixes both at
    once), the flags that supply them (--model DIR; --data-dir DIR with what it must hold for the task) and
    HF_HUB_OFFLINE. `model_path` is where the weights come from (`finetune.models.resolve_model_path`; None: a
    tiny model built from config). `ask_hub=False` (--dry-run) judges from this machine alone: what is neither local
    nor cached counts as available unless HF_HUB_OFFLINE is set (only the hub could say)."""
    missing = [m for m in (_check_model(model_path, ask_hub) if model_path is not None else None,
                           _check_dataset(task, ask_hub) if data_dir is None and not task.generated else None) if m]
    if missing:
        raise SearchError(one_line(missing, task))


def one_line(missing: list[Missing], task: Task) -> str:
    """`model X is not ... , and dataset Y is not ... , and HF_HUB_OFFLINE is set, so neither can be downloaded;
    pass --model DIR ... and --data-dir DIR ..., or ...; --data-dir for task T holds ...`."""
    offline_n = sum(m.offline for m in missing)
    line = ", and ".join(m.clause for m in missing)
    if offline_n:
        line += (f"{' and' if len(missing) == 1 else ', and'} HF_HUB_OFFLINE is set, so "
                 f"{'it cannot' if offline_n == 1 else 'neither can'} be downloaded")
    fixes = [m.fix for m in missing]
    line += "; " + " and ".join(fixes[:1] + [f.removeprefix("pass ") for f in fixes[1:]])
    if offline_n:
        line += (f", or download {'it' if offline_n == 1 else 'them'} where the hub is reachable "
                 "(huggingface-cli download) into a shared HF_HOME")
    elif any(m.hub_silent for m in missing):
        line += ", or set HF_HUB_OFFLINE=1 with a pre-filled HF_HOME cache"
    if any(DATA_FLAG in m.fix for m in missing):
        line += f"; {DATA_FLAG} for task {task.name!r} holds {data_help(task)}"
    return line


def _check_model(model: str, ask_hub: bool = True) -> Missing | None:
    folder = Path(model).expanduser()
    if folder.is_dir():
        groups = (("config.json", ("config.json",)), ("weights", WEIGHTS), ("tokenizer files", TOKENIZER))
        lacking = [kind for kind, names in groups if not any((folder / n).is_file() for n in names)]
        if lacking:
            return Missing(f"--model {model!r}: the folder has no {' and no '.join(lacking)} (weights: one of "
                           f"{list(WEIGHTS)})", "save the model with save_pretrained() and its tokenizer with it")
        return None
    if folder.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1:
        return Missing(f"--model {model!r} is not a folder on this machine (nor a hub name like owner/model)",
                       f"pass {MODEL_FLAG} with the saved checkpoint")
    lacking = _uncached_model_files(model)
    if not lacking:
        return None
    if offline():
        return Missing(f"model {model!r} is not in the Hugging Face cache of this machine (missing {lacking})",
                       f"pass {MODEL_FLAG} with a saved copy (save_pretrained, its tokenizer included)", offline=True)
    return _ask_hub(model, "model", f"model {model!r}", MODEL_FLAG) if ask_hub else None


def _uncached_model_files(repo: str) -> list[str]:
    """Which of config / weights / tokenizer the hub cache lacks for `repo` (empty: all cached)."""
    def cached(name: str) -> bool:
        return isinstance(try_to_load_from_cache(repo, name), str)

    groups = (("config.json", ("config.json",)), ("weights", WEIGHTS), ("tokenizer", TOKENIZER))
    return [kind for kind, names in groups if not any(cached(n) for n in names)]


def _check_dataset(task: Task, ask_hub: bool = True) -> Missing | None:
    name = "/".join(task.hub_dataset)
    if _dataset_cached(task.hub_dataset[0]):
        return None
    if offline("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        return Missing(f"dataset {name!r} (task {task.name!r}) is not in the Hugging Face cache of this machine",
                       f"pass {DATA_FLAG} with the task's files", offline=True)
    return _ask_hub(task.hub_dataset[0], "dataset", f"dataset {name!r}", DATA_FLAG) if ask_hub else None


def _dataset_cached(repo: str) -> bool:
    """A downloaded hub snapshot (`datasets--owner--name`) or a prepared `datasets` cache folder for `repo`."""
    hub = Path(constants.HF_HUB_CACHE) / f"datasets--{repo.replace('/', '--')}" / "snapshots"
    prepared = Path(os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets")
    folders = [prepared / repo.replace("/", "___"), prepared / repo.split("/")[-1]]
    return (hub.is_dir() and any(hub.iterdir())) or any(f.is_dir() and any(f.iterdir()) for f in folders)


def _ask_hub(repo: str, kind: str, what: str, flag: str) -> Missing | None:
    """The hub is allowed: does it answer, within HUB_TIMEOUT_S, that `repo` exists?"""
    api = HfApi()
    try:
        (api.model_info if kind == "model" else api.dataset_info)(repo, timeout=HUB_TIMEOUT_S)
    except RepositoryNotFoundError:
        return Missing(f"{what} does not exist on the Hugging Face hub", f"check the name or pass {flag}")
    except Exception as err:  # noqa: BLE001 - any network failure means the same to the user: no hub from here
        return Missing(f"{what} is not cached on this machine and the Hugging Face hub did not answer "
                       f"({type(err).__name__})", f"pass {flag} with a local copy", hub_silent=True)
    return None


__all__ = ["Missing", "check_available", "offline", "one_line"]
