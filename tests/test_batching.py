"""Which rows form micro-batch k: token batches stay within their budget, every sampler is deterministic and resumable."""

from __future__ import annotations

import random

import pytest

from finetune import data as D
from finetune.batching import SentenceBatches, TokenBatches, item_lengths, token_batches
from finetune.loop import prepare_data
from finetune.tasks import get_task
from finetune.trainconfig import TrainConfig


def test_token_batches_by_hand() -> None:
    assert token_batches([5, 1, 3, 2], max_tokens=6) == [[1, 3], [2], [0]]  # 2×2, 1×3, 1×5 padded tokens
    assert token_batches([1] * 5, max_tokens=4, multiple=2) == [[0, 1, 2, 3], [4]]
    assert token_batches([1] * 5, max_tokens=4, multiple=3) == [[0, 1, 2], [3, 4]]  # 4 rounds down to 3
    assert token_batches([1] * 5, max_tokens=100, max_rows=2) == [[0, 1], [2, 3], [4]]  # batch_size caps rows
    with pytest.raises(ValueError, match=r"every example must fit max_tokens=4, got length 9 at index 1"):
        token_batches([1, 9], max_tokens=4)


@pytest.mark.parametrize("seed", range(5))
def test_token_batches_stay_within_the_budget_and_cover_every_row_once(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(1, 150) for _ in range(3000)]
    batches = token_batches(lengths, max_tokens=4096, multiple=64)
    assert sorted(i for b in batches for i in b) == list(range(3000))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 4096  # the padded batch the collator builds
        # fairseq's multiple: a batch that could hold 64 rows holds a multiple of 64 (the last one excepted)
        assert len(b) < 64 or len(b) % 64 == 0 or b is batches[-1]


def test_real_padded_token_batches_never_exceed_max_tokens() -> None:
    """Through the trial's own encoding and collator: input and label tensors both fit the budget."""
    task = get_task("toy-s2s")
    cfg = TrainConfig.for_task("toy-s2s", max_tokens=96, batch_size=None, batch_multiple=4)
    data = prepare_data(task, D.toy_tokenizer(task), cfg)
    assert isinstance(data.batches, TokenBatches)
    sizes = set()
    for k in range(data.batches.per_epoch()):
        batch = data.collate([data.train[i] for i in data.batches.rows(k)])
        assert batch["input_ids"].numel() <= 96 and batch["labels"].numel() <= 96
        sizes.add(batch["input_ids"].shape[0])
    assert len(sizes) > 1  # rows per batch follow the lengths: short rows pack more per batch
    for rows in data.eval_batches:  # evaluation batches by the same budget
        assert max(item_lengths([data.eval[i] for i in rows])) * len(rows) <= 96


def test_token_sampler_is_deterministic_resumable_and_reshuffles_per_epoch() -> None:
    lengths = [random.Random(1).randint(1, 40) for _ in range(500)]
    a, b = TokenBatches(lengths, 256, seed=7), TokenBatches(lengths, 256, seed=7)
    n = a.per_epoch()
    # A pure function of k: a resumed run (a fresh sampler) sees exactly the batches an uninterrupted one saw.
    assert [a.rows(k) for k in range(2 * n)] == [b.rows(k) for k in range(2 * n)]
    epoch0 = [tuple(a.rows(k)) for k in range(n)]
    epoch1 = [tuple(a.rows(k)) for k in range(n, 2 * n)]
    assert sorted(epoch0) == sorted(epoch1) == sorted(tuple(x) for x in a.batches)  # each epoch: every batch once
    assert epoch0 != epoch1  # in a fresh order
    assert TokenBatches(lengths, 256, seed=8).rows(0) != a.rows(0) or TokenBatches(lengths, 256, seed=8).rows(1) != \
        a.rows(1)


def test_each_rank_takes_whole_batches_disjoint_from_the_others() -> None:
    lengths = [random.Random(2).randint(1, 40) for _ in range(400)]
    s = TokenBatches(lengths, 200, seed=0)
    for k in range(s.per_epoch(world=2)):
        r0, r1 = s.rows(k, 0, 2), s.rows(k, 1, 2)
        assert r0 in s.batches and r1 in s.batches and not set(r0) & set(r1)
    sentences = SentenceBatches(100, 8, seed=0)
    assert sentences.per_epoch(world=2) == 100 // 16
    both = sentences.rows(3, 0, 2) + sentences.rows(3, 1, 2)
    assert len(both) == 16 and len(set(both)) == 16  # one global batch of 8 × 2 workers, split by rank


def test_sentence_sampler_permutes_per_epoch_and_drops_the_tail() -> None:
    s = SentenceBatches(10, 3, seed=5)
    assert s.per_epoch() == 3  # 10 // 3: the last row of each epoch's permutation waits for another epoch
    epoch0 = [i for k in range(3) for i in s.rows(k)]
    assert len(set(epoch0)) == 9 and s.rows(3) != s.rows(0)
    assert SentenceBatches(10, 3, seed=5).rows(4) == s.rows(4)


def test_too_few_token_batches_for_the_workers_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"token batching made 1 batch\(es\), fewer than the 2 workers"):
        TokenBatches([3, 3], 100, seed=0).per_epoch(world=2)
