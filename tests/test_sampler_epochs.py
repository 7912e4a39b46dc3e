"""set_epoch, rank and world_size: the sampler as a DataLoader batch_sampler, like DistributedSampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from protobench.fewshot import EpisodeSampler, EpisodeSpec, VariableEpisodeSpec
from protobench.fewshot.collate import collate_episode
from protobench.fewshot.counter_rng import role_key
from protobench.fewshot.datasets import TensorSource

LABELS = (np.arange(150) * 7) % 12 + 100  # 12 classes of 12 or 13 examples, interleaved
FIXED = EpisodeSpec(5, 2, 3)
VARIABLE = VariableEpisodeSpec(min_way=3, max_way=8, max_query=4, max_support=40, max_support_per_class=6)
SPECS = pytest.mark.parametrize("spec", [FIXED, VARIABLE], ids=["fixed", "variable"])
SEED = 2024
# digest of EpisodeSampler(LABELS, FIXED, seed=SEED, n_episodes=20) before epochs existed
DIGEST_BEFORE_EPOCHS = "c31c4d4e94739d82ef150bea1d68fadd4ad138736738eba9ae2df7a48db5922d"


def make(spec=FIXED, n_episodes: int = 20, **kwargs) -> EpisodeSampler:
    return EpisodeSampler(LABELS, spec, seed=SEED, n_episodes=n_episodes, **kwargs)


def test_epoch_zero_gives_the_episodes_of_a_sampler_without_epochs():
    sampler = make()
    assert sampler.epoch == 0
    assert sampler.digest() == DIGEST_BEFORE_EPOCHS
    sampler.set_epoch(3)
    sampler.set_epoch(0)
    assert sampler.digest() == DIGEST_BEFORE_EPOCHS


@SPECS
def test_epoch_zero_equals_the_default(spec):
    default, switched = make(spec), make(spec)
    switched.set_epoch(5)
    switched.set_epoch(0)
    assert list(switched) == list(default)
    assert switched.digest() == default.digest()


@SPECS
def test_epochs_differ_and_follow_their_role_key(spec):
    sampler = make(spec)
    digests = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        digests.append(sampler.digest())
        in_order = list(sampler)  # iteration, random access and episodes() all give the current epoch
        assert [sampler[i].indices for i in range(20)] == [e.indices for e in sampler.episodes()] == in_order
        if epoch > 0:  # epoch e draws episode i from (role_key("epoch-e", seed), i)
            seed = role_key(f"epoch-{epoch}", SEED)
            assert in_order == list(EpisodeSampler(LABELS, spec, seed=seed, n_episodes=20))
    assert len(set(digests)) == 4
    sampler.set_epoch(2)
    assert sampler.digest() == digests[2]  # an epoch can be revisited


@SPECS
def test_an_iterator_keeps_the_epoch_it_was_made_in(spec):
    n_episodes = 2100 if spec == FIXED else 20  # past one vectorised chunk of fixed episodes
    sampler = make(spec, n_episodes)
    want = list(sampler)
    iterator, episodes = iter(sampler), sampler.episodes()
    first, first_episode = next(iterator), next(episodes)
    sampler.set_epoch(1)
    assert [first, *iterator] == want
    assert [first_episode.indices, *(e.indices for e in episodes)] == want
    assert list(sampler) != want


@SPECS
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_ranks_are_disjoint_and_their_union_is_every_episode_in_order(spec, world_size):
    n_episodes = 10  # 3 does not divide it: ranks 0..2 get 4, 3, 3 episodes
    everything = make(spec, n_episodes)
    everything.set_epoch(1)
    shares = []
    for rank in range(world_size):
        sampler = make(spec, n_episodes, rank=rank, world_size=world_size)
        sampler.set_epoch(1)
        shares.append(list(sampler))
        assert len(sampler) == len(shares[-1]) == len(range(rank, n_episodes, world_size))
        assert sampler.digest() == everything.digest()  # digest, [i] and episodes() ignore the rank
        assert sampler[rank].indices == everything[rank].indices
    interleaved = [shares[i % world_size][i // world_size] for i in range(n_episodes)]
    assert interleaved == list(everything)
    owners = {}
    for rank, share in enumerate(shares):
        for indices in share:
            owners.setdefault(tuple(indices), set()).add(rank)
    assert all(len(ranks) == 1 for ranks in owners.values())


def test_dataloader_workers_give_the_same_batches_after_set_epoch():
    n = len(LABELS)
    source = TensorSource(torch.arange(n).float().view(n, 1), LABELS)  # an image is its own index
    sampler = EpisodeSampler(source, FIXED, seed=SEED, n_episodes=12, rank=1, world_size=2)
    sampler.set_epoch(4)
    batches = {}
    for num_workers in (0, 2):
        loader = DataLoader(source, batch_sampler=sampler, collate_fn=collate_episode, num_workers=num_workers)
        batches[num_workers] = [torch.cat([b["support_x"], b["query_x"]]).view(-1).long().tolist() for b in loader]
    assert batches[0] == batches[2] == list(sampler)
    assert len(batches[0]) == 6


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"world_size": 0}, ValueError, "world_size must be an integer >= 1"),
        ({"world_size": 2.0}, TypeError, "world_size must be an integer"),
        ({"rank": -1}, ValueError, r"rank must be an integer \[0, 1\)"),
        ({"rank": 2, "world_size": 2}, ValueError, r"rank must be an integer \[0, 2\).*get_rank"),
        ({"rank": True, "world_size": 2}, TypeError, "rank must be an integer"),
    ],
)
def test_bad_rank_or_world_size(kwargs, error, match):
    with pytest.raises(error, match=match):
        make(**kwargs)


@pytest.mark.parametrize(("epoch", "error"), [(-1, ValueError), (1.0, TypeError), ("1", TypeError), (None, TypeError)])
def test_bad_epoch_is_refused_and_keeps_the_current_epoch(epoch, error):
    sampler = make()
    sampler.set_epoch(2)
    before = list(sampler)
    with pytest.raises(error, match="epoch must be an integer >= 0"):
        sampler.set_epoch(epoch)
    assert sampler.epoch == 2
    assert list(sampler) == before
