"""Joint training on every experience so far: the upper bound of continual learning.

At experience ``i`` the model is reset to its initial weights and trained, for ``epochs`` epochs,
on the union of the training data of experiences ``0 .. i``: row ``i`` of the accuracy matrix is
the model a non-continual learner would get from the data seen so far, whatever happened before.
It necessarily stores all past training data (that is what makes it the upper bound, not a
continual method): the images, as the experience's transform left them, and their labels, on
the training device, and its state (hence each checkpoint) holds them too.
"""

from __future__ import annotations

import copy

import torch

from protobench.continual.experience import Experience, ExperienceData
from protobench.continual.learner import ContinualContext
from protobench.continual.learners.training import SGDLearner


class Joint(SGDLearner):
    """Retrain from the initial weights on the union of all training data so far, at every experience.

    ``Joint(input_shape, device, n_classes, *, backbone="mlp", epochs=1, batch_size=64, lr=0.01,
    momentum=0.0, weight_decay=0.0, augment=False, mask="seen")``; ``mask="experience"`` masks to
    the classes of the union, which in a class-split stream are the classes seen.
    """

    version = "1"

    def __init__(self, input_shape: tuple[int, ...], device: str, n_classes: int, **params) -> None:
        super().__init__(input_shape, device, n_classes, **params)
        self.initial = copy.deepcopy(self.model.state_dict())
        self.stored_images: torch.Tensor | None = None
        self.stored_labels: torch.Tensor | None = None
        self.stored_classes: list[int] = []

    def train_experience(self, experience: Experience, context: ContinualContext) -> dict:
        """Add ``experience.train`` to the stored data, reset the model, train on everything stored."""
        self.see(experience.classes)
        images, labels = experience.train.tensors()
        if self.stored_images is not None:
            images, labels = torch.cat([self.stored_images, images]), torch.cat([self.stored_labels, labels])
        self.stored_images, self.stored_labels = images, labels
        self.stored_classes = sorted(set(self.stored_classes) | set(experience.classes))
        self.model.load_state_dict(self.initial)
        union = ExperienceData(images, labels, torch.arange(len(labels), device=labels.device))
        return self.fit(union, self.stored_classes, context)

    def state_dict(self) -> dict:
        """The model, the initial weights, and the stored training data (images, labels, classes)."""
        return super().state_dict() | {"initial": self.initial, "stored_images": self.stored_images,
                                       "stored_labels": self.stored_labels, "stored_classes": self.stored_classes}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.initial = {name: value.to(self.device) for name, value in state["initial"].items()}
        stored = state["stored_images"], state["stored_labels"]
        self.stored_images, self.stored_labels = (None if value is None else value.to(self.device) for value in stored)
        self.stored_classes = list(state["stored_classes"])
