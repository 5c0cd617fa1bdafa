"""Which training rows form micro-batch k: by sentences or by tokens, deterministic and addressable by step.

A trial must resume at any step and give the same batches as an uninterrupted run, so a batch is a pure function of
(micro-batch index k, rank, world size, seed): no iterator state to save. Per epoch the order is a fresh seeded
permutation (`torch.randperm` with its own generator), so epochs differ while every rerun is identical.

- `SentenceBatches`: a global batch of `size × world` rows from the epoch's permutation of all rows, rank r taking
  rows r, r + world, ...; the last partial batch of an epoch is dropped (every rank needs its share). With
  `group_by_length` the epoch's order is grouped by length as transformers' Trainer does
  (`get_length_grouped_indices`: the seeded permutation cut into mega-batches of 50 global batches, each sorted by
  length), so a batch pads to about its own length: the same rows per epoch, 2.8x less CPU per step on SST-2.
- `TokenBatches`: the en-ro recipe's fairseq `batch_by_size` (spec §4): rows sorted by length (an example's length is
  max(source, target) tokens) and packed so that `rows × longest <= max_tokens` — the padded batch the collator
  builds never exceeds the budget. The batches are built once; each epoch permutes their order, and rank r of `world`
  takes batch `j·world + r`, so every rank trains on a whole batch within the budget.

Hand-written because no maintained library does this: torchdata's `MaxTokenBucketizer` was deleted in 0.9 and
fairseq's `batch_by_size` drags in an unmaintained framework; HF's `LengthGroupedSampler` keeps a fixed batch size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def _permutation(n: int, seed: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


class SentenceBatches:
    """`size` rows per rank and micro-batch; epoch e uses the permutation seeded `seed + e`, grouped by `lengths`
    (tokens per row) when given."""

    def __init__(self, n: int, size: int, seed: int, lengths: Sequence[int] | None = None) -> None:
        if n < 1 or size < 1:
            raise ValueError(f"a sentence batch needs >= 1 row and size >= 1, got {n} rows and size {size}")
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"lengths must give one length per training row ({n}), got {len(lengths)}")
        self.n, self.size, self.seed, self.lengths = n, size, seed, lengths
        self._cached: tuple[tuple[int, int], list[int]] | None = None  # grouping 55k rows takes ~0.1 s: once per epoch

    def order(self, epoch: int, width: int) -> list[int]:
        """The epoch's row order for global batches of `width` rows."""
        if self.lengths is None:
            return _permutation(self.n, self.seed + epoch)
        if self._cached is None or self._cached[0] != (epoch, width):
            # deferred on purpose: transformers' trainer utilities load only for length-grouped batches
            from transformers.trainer_pt_utils import get_length_grouped_indices

            gen = torch.Generator().manual_seed(self.seed + epoch)
            self._cached = (epoch, width), get_length_grouped_indices(list(self.lengths), width, generator=gen)
        return self._cached[1]

    def per_epoch(self, world: int = 1) -> int:
        """Micro-batches per epoch (each spanning all ranks); at least 1, wrapping a set smaller than a batch."""
        return max(1, self.n // (self.size * world))

    def rows(self, k: int, rank: int = 0, world: int = 1) -> list[int]:
        epoch, j = divmod(k, self.per_epoch(world))
        width = self.size * world
        return self.order(epoch, width)[j * width:(j + 1) * width][rank::world]


class TokenBatches:
    """Batches of at most `max_tokens` padded tokens, built once from per-row lengths; see the module docstring."""

    def __init__(self, lengths: Sequence[int], max_tokens: int, seed: int, multiple: int = 1,
                 max_rows: int | None = None) -> None:
        self.batches = token_batches(lengths, max_tokens, multiple, max_rows)
        self.seed = seed

    def per_epoch(self, world: int = 1) -> int:
        if len(self.batches) < world:
            raise ValueError(f"token batching made {len(self.batches)} batch(es), fewer than the {world} workers "
                             "that each need one; add training rows or lower max_tokens")
        return len(self.batches) // world

    def rows(self, k: int, rank: int = 0, world: int = 1) -> list[int]:
        epoch, j = divmod(k, self.per_epoch(world))
        order = _permutation(len(self.batches), self.seed + epoch)
        return list(self.batches[order[j * world + rank]])


def item_lengths(items: Sequence[Mapping[str, Sequence[int]]]) -> list[int]:
    """What an encoded row costs in a padded batch: max(source, target) tokens (fairseq's batch_by_size), or its
    input's length for classification."""
    return [max(len(it["input_ids"]), len(it.get("labels", ()))) for it in items]


def token_batches(lengths: Sequence[int], max_tokens: int, multiple: int = 1,
                  max_rows: int | None = None) -> list[list[int]]:
    """Group example indices, sorted by length (stable), so that `len(batch) * longest <= max_tokens`.

    `multiple` rounds a batch down to a multiple of it when it holds at least that many rows (fairseq's
    `required_batch_size_multiple`); `max_rows` caps the rows per batch (a recipe's batch_size used as a cap).
    """
    if max_tokens < 1 or multiple < 1 or (max_rows is not None and max_rows < 1):
        raise ValueError(f"max_tokens, batch_multiple and batch_size must be >= 1, got {max_tokens}, {multiple}, "
                         f"{max_rows}")
    too_long = [i for i, n in enumerate(lengths) if n > max_tokens]
    if too_long:
        raise ValueError(
            f"every example must fit max_tokens={max_tokens}, got length {lengths[too_long[0]]} at index "
            f"{too_long[0]}; truncate (max_length, max_target_length) or raise max_tokens"
        )
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        while current and ((len(current) + 1) * lengths[i] > max_tokens or len(current) == max_rows):
            keep = len(current) // multiple * multiple or len(current)
            batches.append(current[:keep])
            current = current[keep:]
        current.append(i)
    if current:
        batches.append(current)
    return batches
