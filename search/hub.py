"""Can this machine have the model and the data? Checked before Ray starts, in seconds, from files alone when offline.

A search whose model or dataset cannot be had used to start Ray and fail every trial after minutes of retries
against an unreachable hub (issue 16). `check_available` answers first, from (in order) a local folder, the Hugging
Face cache (`HF_HOME`, `HF_HUB_CACHE`, `HF_DATASETS_CACHE`), or, only when the hub may be asked, the hub itself
with a short timeout. `HF_HUB_OFFLINE=1` (also `TRANSFORMERS_OFFLINE`, `HF_DATASETS_OFFLINE` for data) means the
hub is never asked. A model needs its config, weights and tokenizer; a hub dataset needs its cached copy.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import HfApi, constants, try_to_load_from_cache
from huggingface_hub.errors import RepositoryNotFoundError

from search.names import SearchError
from trainables.tasks import Task

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "sentencepiece.bpe.model", "spiece.model", "vocab.json",
             "vocab.txt")
HUB_TIMEOUT_S = 10.0


def offline(*names: str) -> bool:
    """Whether any of these environment variables (default: the hub's own) says never to ask the hub."""
    names = names or ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(n, "").strip().upper() in ("1", "ON", "YES", "TRUE") for n in names)


def check_available(task: Task, model_path: str | None, data_dir: str | None) -> None:
    """Raise SearchError (one line, naming --model DIR / --data-dir DIR and HF_HUB_OFFLINE) when the weights, the
    tokenizer or the data of this search cannot be had on this machine. `model_path` is where the weights come from
    (`trainables.models.resolve_model_path`; None: a tiny model built from config)."""
    if model_path is not None:
        _check_model(model_path)
    if data_dir is None and not task.generated:
        _check_dataset(task)


def _check_model(model: str) -> None:
    folder = Path(model).expanduser()
    if folder.is_dir():
        groups = (("config.json", ("config.json",)), ("weights", WEIGHTS), ("tokenizer files", TOKENIZER))
        missing = [kind for kind, names in groups if not any((folder / n).is_file() for n in names)]
        if missing:
            raise SearchError(f"--model {model!r}: the folder has no {' and no '.join(missing)} (weights: one of "
                              f"{list(WEIGHTS)}); save the model with save_pretrained() and its tokenizer with it")
        return
    if folder.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1:
        raise SearchError(f"--model {model!r} is not a folder on this machine (nor a hub name like owner/model); "
                          "pass --model DIR with the saved checkpoint")
    lacking = _uncached_model_files(model)
    if not lacking:
        return
    if offline():
        raise SearchError(f"model {model!r} is not in the Hugging Face cache of this machine (missing {lacking}) and "
                          "HF_HUB_OFFLINE is set, so it cannot be downloaded; download it where the hub is reachable "
                          "(huggingface-cli download) into a shared HF_HOME, or pass --model DIR with a saved copy")
    _ask_hub(model, "model", f"model {model!r}", "--model DIR")


def _uncached_model_files(repo: str) -> list[str]:
    """Which of config / weights / tokenizer the hub cache lacks for `repo` (empty: all cached)."""
    def cached(name: str) -> bool:
        return isinstance(try_to_load_from_cache(repo, name), str)

    groups = (("config.json", ("config.json",)), ("weights", WEIGHTS), ("tokenizer", TOKENIZER))
    return [kind for kind, names in groups if not any(cached(n) for n in names)]


def _check_dataset(task: Task) -> None:
    name = "/".join(task.hub_dataset)
    if _dataset_cached(task.hub_dataset[0]):
        return
    if offline("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        raise SearchError(f"dataset {name!r} (task {task.name!r}) is not in the Hugging Face cache of this machine "
                          "and "
                          f"HF_HUB_OFFLINE is set, so it cannot be downloaded; pass --data-dir DIR with the task's "
                          f"files (petl-search --help lists them), or load it once where the hub is reachable into a "
                          "shared HF_HOME")
    _ask_hub(task.hub_dataset[0], "dataset", f"dataset {name!r}", "--data-dir DIR")


def _dataset_cached(repo: str) -> bool:
    """A downloaded hub snapshot (`datasets--owner--name`) or a prepared `datasets` cache folder for `repo`."""
    hub = Path(constants.HF_HUB_CACHE) / f"datasets--{repo.replace('/', '--')}" / "snapshots"
    prepared = Path(os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets")
    folders = [prepared / repo.replace("/", "___"), prepared / repo.split("/")[-1]]
    return (hub.is_dir() and any(hub.iterdir())) or any(f.is_dir() and any(f.iterdir()) for f in folders)


def _ask_hub(repo: str, kind: str, what: str, flag: str) -> None:
    """The hub is allowed: does it answer, within HUB_TIMEOUT_S, that `repo` exists?"""
    api = HfApi()
    try:
        (api.model_info if kind == "model" else api.dataset_info)(repo, timeout=HUB_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise SearchError(f"{what} does not exist on the Hugging Face hub; check the name or pass {flag}") from None
    except Exception as err:  # noqa: BLE001 - any network failure means the same to the user: no hub from here
        raise SearchError(f"{what} is not cached on this machine and the Hugging Face hub did not answer "
                          f"({type(err).__name__}); pass {flag} with a local copy, or set HF_HUB_OFFLINE=1 with a "
                          "pre-filled HF_HOME cache") from None


__all__ = ["check_available", "offline"]
