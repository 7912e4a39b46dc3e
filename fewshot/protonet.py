"""Prototypical Networks (Snell, Swersky and Zemel 2017).

A class prototype is the mean embedding of its support examples; a query's logits are minus its
squared Euclidean distances to the prototypes. Training is episodic: Adam, learning rate
multiplied by ``lr_gamma`` every ``lr_step`` episodes, cross-entropy on the query logits.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from protobench.fewshot.backbones import Conv4
from protobench.fewshot.episodes import Episode, EpisodeSpec, VariableEpisodeSpec
from protobench.fewshot.evaluation import stack_images
from protobench.fewshot.learner import EpisodeTask, TaskBatch
from protobench.fewshot.sampler import EpisodeSampler
from protobench.fewshot.training import TrainingContext, TrainingRecord


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

    ``fit`` meta-trains on a labelled source (Adam with learning rate ``lr``, multiplied by
    ``lr_gamma`` every ``lr_step`` episodes); ``embed`` maps images to features; ``score`` scores
    many episodes from cached features; ``predict`` scores one episode from its images.
    """

    version = "2"
    backbone_name = "conv4"
    pretraining = None

    def __init__(self, backbone: nn.Module | None = None, *, in_channels: int = 1, device: str = "cpu",
                 lr: float = 1e-3, lr_step: int = 2000, lr_gamma: float = 0.5) -> None:
        if not lr > 0 or not 0 < lr_gamma <= 1 or isinstance(lr_step, bool) or not isinstance(lr_step, int) \
                or lr_step < 1:
            raise ValueError(f"need lr > 0, 0 < lr_gamma <= 1 and a positive integer lr_step; got lr={lr!r}, "
                             f"lr_step={lr_step!r}, lr_gamma={lr_gamma!r}")
        self.device = torch.device(device)
        # channels_last throughout (faster on CPU); one memory format, so one set of kernels and
        # bit-identical embeddings whether the weights were just trained or loaded
        self.backbone = (backbone if backbone is not None else Conv4(in_channels)).to(
            self.device, memory_format=torch.channels_last)
        if backbone is not None:
            self.backbone_name = type(backbone).__name__
        self.lr, self.lr_step, self.lr_gamma = lr, lr_step, lr_gamma

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

    def score(self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
              task: TaskBatch) -> torch.Tensor:
        """Logits (B, Q, n_way): minus squared distances of the query features to the prototypes."""
        return prototype_logits(support, support_labels, task.n_way, query)

    def predict(self, task: EpisodeTask) -> torch.Tensor:
        """Logits (n_query, n_way) for one episode."""
        support = self.embed(task.support_x)[None].float().cpu()
        query = self.embed(task.query_x)[None].float().cpu()
        return prototype_logits(support, task.support_y.long(), task.n_way, query)[0]

    def fit(self, train_source, spec: EpisodeSpec | VariableEpisodeSpec, context: TrainingContext) -> TrainingRecord:
        """Episodic training on ``context.n_episodes`` episodes of ``spec`` drawn with ``context.seed``.

        ``context.validate(self)`` runs when due; the weights with the best validation accuracy
        are kept (model selection on val, never test), else the last ones. Resumable state is
        saved through the context when it says so, and a run that finds it resumes from it:
        episodes are random-access, so the resumed run sees the same episodes as an
        uninterrupted one and ends with the same weights.
        """
        sampler = EpisodeSampler(train_source, spec, seed=context.seed, n_episodes=context.n_episodes)
        optimizer = torch.optim.Adam(self.backbone.parameters(), lr=self.lr)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.lr_step, gamma=self.lr_gamma)
        best = {"accuracy": -1.0, "episode": 0, "state": None}
        start, curve, seconds = 0, [], 0.0
        state = context.load_checkpoint()
        if state is not None:
            self.backbone.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            best, start, curve, seconds = state["best"], state["episode"], state["curve"], state["seconds"]
        window_loss, window_start = [], time.perf_counter()
        with context.progress_bar(initial=start) as bar:
            for done, episode in enumerate(sampler.episodes(start), start=start + 1):
                loss = self._train_step(train_source, episode, optimizer)
                schedule.step()
                window_loss.append(loss)
                bar.update(1)
                validate, save = context.validation_due(done), context.checkpoint_due(done)
                if not (validate or save or done == context.n_episodes):
                    continue
                seconds += time.perf_counter() - window_start
                record = {"episode": done, "train_loss": float(np.mean(window_loss)),
                          "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 1)}
                if validate:
                    record["val_accuracy"] = float(context.validate(self))
                    if record["val_accuracy"] > best["accuracy"]:
                        best = {"accuracy": record["val_accuracy"], "episode": done,
                                "state": copy.deepcopy(self.backbone.state_dict())}
                    bar.set_postfix(loss=f"{record['train_loss']:.3f}", val=f"{record['val_accuracy']:.4f}")
                curve.append(record)
                if save:
                    context.save_checkpoint({"model": self.backbone.state_dict(), "optimizer": optimizer.state_dict(),
                                             "schedule": schedule.state_dict(), "best": best, "episode": done,
                                             "curve": curve, "seconds": seconds})
                window_loss, window_start = [], time.perf_counter()
        if best["state"] is not None:
            self.backbone.load_state_dict(best["state"])
        return TrainingRecord(episodes=context.n_episodes, selected_episode=best["episode"] or context.n_episodes,
                              train_seconds=round(seconds, 1), curve=curve)

    def _train_step(self, source, episode: Episode, optimizer: torch.optim.Optimizer) -> float:
        """One episode's loss, backward pass and optimizer step; returns the loss."""
        self.backbone.train()
        features = self.backbone(self._prepare(stack_images(source, episode.indices)))
        n_support = len(episode.support)
        logits = prototype_logits(features[None, :n_support], torch.from_numpy(episode.support_labels).to(self.device),
                                  episode.n_way, features[None, n_support:])[0]
        loss = F.cross_entropy(logits, torch.from_numpy(episode.query_labels).to(self.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()
