"""Prototypical Networks (Snell, Swersky and Zemel 2017).

A class prototype is the mean embedding of its support examples; a query's logits are minus its
squared Euclidean distances to the prototypes. Training is episodic: Adam, learning rate
multiplied by ``lr_gamma`` every ``lr_step`` episodes, cross-entropy on the query logits.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fewshot.backbones import Conv4
from fewshot.episodes import EpisodeSpec
from fewshot.evaluation import stack_images
from fewshot.sampler import EpisodeSampler


def prototype_logits(
    support: torch.Tensor, support_labels: torch.Tensor, n_way: int, query: torch.Tensor
) -> torch.Tensor:
    """Negative squared Euclidean distance of each query to each class prototype.

    support (B, S, d), support_labels (S,) or (B, S) in 0..n_way-1, query (B, Q, d) -> (B, Q, n_way).
    """
    one_hot = F.one_hot(support_labels, n_way).to(support.dtype)
    if one_hot.dim() == 2:
        one_hot = one_hot.expand(support.shape[0], -1, -1)
    prototypes = one_hot.transpose(1, 2) @ support / one_hot.sum(1).unsqueeze(-1)
    cross = query @ prototypes.transpose(1, 2)
    return 2 * cross - (query * query).sum(-1, keepdim=True) - (prototypes * prototypes).sum(-1).unsqueeze(1)


class PrototypicalNetwork:
    """A prototypical classifier over a backbone (Conv-4 by default).

    ``fit`` meta-trains on a labelled source; ``embed`` maps images to features;
    ``predict`` scores one episode; ``logits_from_embeddings`` scores many at once.
    """

    name = "protonet"
    version = "1"
    pretraining = None

    def __init__(self, backbone: nn.Module | None = None, *, in_channels: int = 1, device: str = "cpu") -> None:
        self.device = torch.device(device)
        # channels_last throughout (faster on CPU); one memory format, so one set of kernels and
        # bit-identical embeddings whether the weights were just trained or loaded
        self.backbone = (backbone if backbone is not None else Conv4(in_channels)).to(
            self.device, memory_format=torch.channels_last)
        self.backbone_name = "conv4" if backbone is None else type(backbone).__name__
        self.history: list[dict] = []
        self.trained_episodes = 0
        self.train_seconds = 0.0

    def state_dict(self) -> dict:
        """The backbone's weights (all a trained prototypical network needs)."""
        return self.backbone.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.backbone.load_state_dict(state)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Features of images ``x`` (n, C, H, W) -> (n, d), in eval mode, without gradients."""
        self.backbone.eval()
        with torch.no_grad():
            return self.backbone(self._prepare(x))

    logits_from_embeddings = staticmethod(prototype_logits)

    def predict(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        """Logits (n_query, n_way) for one episode; support_y holds labels 0..n_way-1."""
        support_y = torch.as_tensor(support_y, dtype=torch.long)
        n_way = int(support_y.max()) + 1
        logits = prototype_logits(self.embed(support_x)[None].float(), support_y.cpu(), n_way,
                                  self.embed(query_x)[None].float())
        return logits[0]

    def fit(
        self,
        train_source,
        spec: EpisodeSpec,
        *,
        n_episodes: int,
        seed: int,
        lr: float = 1e-3,
        lr_step: int = 2000,
        lr_gamma: float = 0.5,
        validate: Callable[[PrototypicalNetwork], float] | None = None,
        validate_every: int = 500,
        checkpoint: str | Path | None = None,
        progress: bool = True,
    ) -> PrototypicalNetwork:
        """Episodic training for ``n_episodes`` episodes of ``spec`` drawn with ``seed``.

        ``validate(self) -> accuracy`` runs every ``validate_every`` episodes and at the end; the
        weights with the best validation accuracy are kept (model selection on val, never test).
        With ``checkpoint``, state is saved there after each validation and a run that finds the
        file resumes from it: episodes are random-access, so the resumed run sees the same
        episodes as an uninterrupted one.
        """
        sampler = EpisodeSampler(train_source, spec, seed=seed, n_episodes=n_episodes)
        optimizer = torch.optim.Adam(self.backbone.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_step, gamma=lr_gamma)
        best = {"accuracy": -1.0, "episode": 0, "state": None}
        start = 0
        if checkpoint is not None and Path(checkpoint).is_file():
            state = torch.load(checkpoint, weights_only=True)
            self.backbone.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            best, start = state["best"], state["episode"]
            self.history, self.train_seconds = state["history"], state["train_seconds"]
        support_labels = torch.from_numpy(np.repeat(np.arange(spec.n_way), spec.n_shot))
        query_labels = torch.from_numpy(np.repeat(np.arange(spec.n_way), spec.n_query)).to(self.device)
        bar = tqdm(total=n_episodes, initial=start, desc="train", unit="ep", disable=not progress)
        window_loss, window_start = [], time.perf_counter()
        for number, episode in enumerate(sampler.episodes(start), start=start):
            self.backbone.train()
            images = self._prepare(stack_images(train_source, episode.indices))
            features = self.backbone(images)
            n_support = len(episode.support)
            logits = prototype_logits(features[None, :n_support], support_labels.to(self.device),
                                      spec.n_way, features[None, n_support:])[0]
            loss = F.cross_entropy(logits, query_labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            window_loss.append(loss.item())
            bar.update(1)
            done = number + 1
            if done % validate_every == 0 or done == n_episodes:
                self.train_seconds += time.perf_counter() - window_start
                record = {"episode": done, "train_loss": float(np.mean(window_loss)),
                          "lr": optimizer.param_groups[0]["lr"], "seconds": round(self.train_seconds, 1)}
                if validate is not None:
                    record["val_accuracy"] = float(validate(self))
                    if record["val_accuracy"] > best["accuracy"]:
                        best = {"accuracy": record["val_accuracy"], "episode": done,
                                "state": copy.deepcopy(self.backbone.state_dict())}
                self.history.append(record)
                bar.set_postfix(loss=f"{record['train_loss']:.3f}", val=record.get("val_accuracy"))
                if checkpoint is not None:
                    _save_atomic({"model": self.backbone.state_dict(), "optimizer": optimizer.state_dict(),
                                  "schedule": schedule.state_dict(), "best": best, "episode": done,
                                  "history": self.history, "train_seconds": self.train_seconds}, checkpoint)
                window_loss, window_start = [], time.perf_counter()
        bar.close()
        if best["state"] is not None:
            self.backbone.load_state_dict(best["state"])
        self.trained_episodes = n_episodes
        self.selected_episode = best["episode"] or n_episodes
        return self


def _save_atomic(state: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    partial.replace(path)
