"""Episodes are identical across processes, DataLoader workers and episode files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from protobench.fewshot import (
    Episode,
    EpisodeSampler,
    EpisodeSpec,
    VariableEpisodeSpec,
    episode_digest,
    load_episodes,
    save_episodes,
)
from protobench.fewshot.collate import collate_episode
from protobench.fewshot.datasets import TensorSource

SEED = 123_456_789_012_345
FIXED = EpisodeSpec(n_way=5, n_shot=2, n_query=3)


def make_labels() -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(11))
    sizes = rng.integers(6, 30, size=20)
    labels = np.repeat(np.arange(20, dtype=np.int64) * 5 + 100, sizes)  # non-contiguous label values
    return labels[rng.permutation(len(labels))]


def index_source(labels: np.ndarray) -> TensorSource:
    """Images are the example indices themselves, so a batch tells which examples it holds."""
    n = len(labels)
    return TensorSource(torch.arange(n).float().view(n, 1), labels)


def episode_from_collated(batch: dict) -> Episode:
    return Episode(
        classes=batch["classes"].numpy().astype(np.int64),
        support=batch["support_x"].view(-1).long().numpy(),
        support_labels=batch["support_y"].numpy().astype(np.int64),
        query=batch["query_x"].view(-1).long().numpy(),
        query_labels=batch["query_y"].numpy().astype(np.int64),
    )


def assert_same_episode(got: Episode, want: Episode) -> None:
    for field in ("classes", "support", "support_labels", "query", "query_labels"):
        assert np.array_equal(getattr(got, field), getattr(want, field)), field


@pytest.mark.parametrize("spec_code", ["EpisodeSpec(5, 2, 3)", "VariableEpisodeSpec()"])
def test_digest_in_another_process(tmp_path, spec_code):
    labels = make_labels()
    np.save(tmp_path / "labels.npy", labels)
    spec = eval(spec_code)  # the same expression is evaluated in the child
    here = EpisodeSampler(labels, spec, seed=SEED, n_episodes=40).digest()
    code = (
        "import sys, numpy as np\n"
        "from protobench.fewshot import EpisodeSampler, EpisodeSpec, VariableEpisodeSpec\n"
        f"labels = np.load({str(tmp_path / 'labels.npy')!r})\n"
        f"print(EpisodeSampler(labels, {spec_code}, seed={SEED}, n_episodes=40).digest())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == here
    assert len(here) == 64 and int(here, 16) >= 0


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_batches_rebuild_the_episodes(num_workers):
    labels = make_labels()
    source = index_source(labels)
    sampler = EpisodeSampler(source, FIXED, seed=SEED, n_episodes=30)
    loader = DataLoader(source, batch_sampler=sampler, collate_fn=collate_episode, num_workers=num_workers)
    assert len(loader) == 30
    rebuilt = []
    for i, batch in enumerate(loader):
        want = sampler[i]
        assert batch["support_x"].shape == (FIXED.n_way * FIXED.n_shot, 1)
        assert batch["query_x"].shape == (FIXED.n_way * FIXED.n_query, 1)
        assert batch["support_y"].dtype == batch["query_y"].dtype == torch.long
        assert batch["support_y"].tolist() == np.repeat(np.arange(5), 2).tolist()
        assert batch["query_y"].tolist() == np.repeat(np.arange(5), 3).tolist()
        # classes holds the source label values, and y indexes into it
        assert batch["classes"].tolist() == want.classes.tolist()
        got = episode_from_collated(batch)
        assert np.array_equal(batch["classes"][batch["support_y"]].numpy(), labels[got.support])
        assert np.array_equal(batch["classes"][batch["query_y"]].numpy(), labels[got.query])
        assert_same_episode(got, want)
        rebuilt.append(got)
    assert i == 29
    assert episode_digest(rebuilt) == sampler.digest()


def test_variable_episodes_through_collate():
    labels = make_labels()
    source = index_source(labels)
    sampler = EpisodeSampler(source, VariableEpisodeSpec(), seed=SEED, n_episodes=12)
    loader = DataLoader(source, batch_sampler=sampler, collate_fn=collate_episode, num_workers=0)
    rebuilt = []
    for episode, batch in zip(sampler.episodes(), loader, strict=True):
        direct = collate_episode([source[i] for i in episode.indices])
        for key in ("support_x", "support_y", "query_x", "query_y", "classes"):
            assert torch.equal(direct[key], batch[key]), key
        got = episode_from_collated(batch)
        assert_same_episode(got, episode)
        assert batch["classes"].tolist() == episode.classes.tolist()
        rebuilt.append(got)
    assert len(rebuilt) == 12
    assert len({e.n_way for e in rebuilt}) > 1 or len({len(e.support) for e in rebuilt}) > 1
    assert episode_digest(rebuilt) == sampler.digest()


def test_collate_rejects_a_batch_that_is_not_an_episode():
    labels = make_labels()
    source = index_source(labels)
    one_class = np.flatnonzero(labels == labels[0])[:4]
    with pytest.raises(ValueError, match="not an episode"):
        collate_episode([source[int(i)] for i in one_class])


@pytest.mark.parametrize("spec", [FIXED, VariableEpisodeSpec()], ids=["fixed", "variable"])
def test_save_load_round_trip(tmp_path, spec):
    sampler = EpisodeSampler(make_labels(), spec, seed=SEED, n_episodes=25)
    path = tmp_path / "episodes.json"
    digest = save_episodes(path, sampler.episodes(), metadata={"seed": SEED})
    assert digest == sampler.digest()
    payload = json.loads(path.read_text())
    assert payload["digest"] == digest and payload["metadata"] == {"seed": SEED}
    loaded = load_episodes(path)
    assert len(loaded) == 25
    for got, want in zip(loaded, sampler.episodes(), strict=True):
        assert_same_episode(got, want)
    assert episode_digest(loaded) == digest


def test_tampered_file_raises(tmp_path):
    labels = make_labels()
    sampler = EpisodeSampler(labels, FIXED, seed=SEED, n_episodes=5)
    path = tmp_path / "episodes.json"
    save_episodes(path, sampler.episodes())
    payload = json.loads(path.read_text())
    group = payload["episodes"][3]["query"][1]
    same_class = np.flatnonzero(labels == payload["episodes"][3]["classes"][1])
    group[0] = int(next(i for i in same_class if i not in group))  # still a plausible index
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="digest"):
        load_episodes(path)


MALFORMED = {
    "not json": "{not json",
    "a list": "[1, 2, 3]",
    "wrong format": json.dumps({"format": "other", "version": 1, "episodes": []}),
    "wrong version": json.dumps({"format": "protobench.episodes", "version": 99, "episodes": []}),
    "missing query": json.dumps(
        {
            "format": "protobench.episodes",
            "version": 1,
            "digest": "x",
            "episodes": [{"classes": [0, 1], "support": [[0], [1]]}],
        }
    ),
    "length mismatch": json.dumps(
        {
            "format": "protobench.episodes",
            "version": 1,
            "digest": "x",
            "episodes": [{"classes": [0, 1], "support": [[0], [1]], "query": [[2]]}],
        }
    ),
    "non-integer index": json.dumps(
        {
            "format": "protobench.episodes",
            "version": 1,
            "digest": "x",
            "episodes": [{"classes": [0, 1], "support": [["a"], [1]], "query": [[2], [3]]}],
        }
    ),
    "no classes": json.dumps(
        {
            "format": "protobench.episodes",
            "version": 1,
            "digest": "x",
            "episodes": [{"classes": [], "support": [], "query": []}],
        }
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_files_raise_value_error(tmp_path, name):
    path = tmp_path / "bad.json"
    path.write_text(MALFORMED[name])
    with pytest.raises(ValueError, match="bad.json"):
        load_episodes(path)


def test_missing_file_raises_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_episodes(tmp_path / "absent.json")
