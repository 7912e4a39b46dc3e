"""Learning without Forgetting (Li and Hoiem 2017), for a single-head classifier.

At the end of each experience the learner keeps a frozen copy of its model (the teacher; eval
mode, no gradients), replacing the previous one, and remembers the number of classes it had seen
(``n_old``). While training a later experience the loss on a batch ``x`` (the current experience's
data only: no stored samples) is

    cross_entropy(masked logits, y) + alpha * T^2 * KL(q || p)

with ``q = softmax(teacher(x)[:, :n_old] / T)``, ``p = softmax(model(x)[:, :n_old] / T)``, the KL
divergence summed over the old classes and averaged over the batch (:func:`distillation_loss`).
KL(q || p) differs from Li and Hoiem's cross-entropy with the teacher's softened probabilities
by the teacher's entropy, which does not depend on the model: the gradients are the same. The
``T^2`` factor (Hinton et al. 2015) keeps the gradient's scale independent of ``T``. In a
domain-incremental stream the old classes are all classes.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from protobench.continual.experience import ExperienceData
from protobench.continual.learner import ContinualContext
from protobench.continual.learners.training import SGDLearner, check_number


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * mean_i KL(softmax(teacher_i / T) || softmax(student_i / T))`` for logits (n, c)."""
    log_p = F.log_softmax(student / temperature, dim=1)
    q = F.softmax(teacher / temperature, dim=1)
    return temperature**2 * F.kl_div(log_p, q, reduction="batchmean")


class LwF(SGDLearner):
    """Fine-tuning plus distillation of the previous model's old-class outputs on the current data.

    ``LwF(input_shape, device, n_classes, *, alpha=1.0, temperature=2.0, backbone="mlp", epochs=1,
    batch_size=64, lr=0.01, momentum=0.0, weight_decay=0.0, augment=False, mask="seen")``.
    """

    version = "1"

    def __init__(self, input_shape: tuple[int, ...], device: str, n_classes: int, *, alpha: float = 1.0,
                 temperature: float = 2.0, **params) -> None:
        check_number("alpha", alpha)
        check_number("temperature", temperature, low_open=True)
        super().__init__(input_shape, device, n_classes, **params)
        self.alpha, self.temperature = alpha, temperature
        self.teacher: torch.nn.Module | None = None
        self.n_old = 0  # classes the teacher was trained on: 0 .. n_old - 1

    def loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Masked cross-entropy plus ``alpha`` times the distillation loss (none on the first experience)."""
        loss = super().loss(logits, x, y)
        if self.teacher is None:
            return loss
        with torch.no_grad():
            old = self.teacher(x)[:, :self.n_old]
        return loss + self.alpha * distillation_loss(logits[:, :self.n_old], old, self.temperature)

    def consolidate(self, data: ExperienceData, context: ContinualContext) -> None:
        """Freeze a copy of the model as the next experiences' teacher."""
        self.teacher = self.frozen_copy()
        self.n_old = self.n_seen

    def frozen_copy(self) -> torch.nn.Module:
        """A copy of the model in eval mode with gradients off."""
        teacher = copy.deepcopy(self.model).eval()
        teacher.requires_grad_(False)
        return teacher

    def state_dict(self) -> dict:
        """The model, the classes seen, the teacher's weights (None before the first experience) and ``n_old``."""
        teacher = None if self.teacher is None else self.teacher.state_dict()
        return super().state_dict() | {"teacher": teacher, "n_old": self.n_old}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.teacher = None
        if state["teacher"] is not None:
            self.teacher = self.frozen_copy()
            self.teacher.load_state_dict(state["teacher"])
        self.n_old = int(state["n_old"])
