"""Elastic Weight Consolidation (Kirkpatrick et al. 2017) and online EWC (Schwarz et al. 2018).

After each experience the learner computes the diagonal empirical Fisher information of its
parameters (:func:`empirical_fisher`) and keeps it with a copy of the parameters. While training
later experiences the loss is the cross-entropy plus

    EWC:        (ewc_lambda / 2) * sum_k sum_p F_k[p] * (theta[p] - theta*_k[p])^2

one Fisher ``F_k`` and one anchor ``theta*_k`` per past experience ``k`` (the parameters at its
end); online EWC keeps a single running Fisher ``F = gamma * F_old + F_new`` and one anchor, the
parameters at the end of the last experience. The sums run over every trainable parameter
(backbone and head, BatchNorm affine weights included; BatchNorm running statistics are buffers
and are not regularised).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from protobench.continual.experience import ExperienceData, permutation
from protobench.continual.learner import ContinualContext
from protobench.continual.learners.training import SGDLearner, check_number


def empirical_fisher(model: nn.Module, data: ExperienceData, output_mask: torch.Tensor,
                     batch_size: int) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher of ``model``'s trainable parameters on ``data``, by name.

    ``F[p] = (1/N) sum_i (d/d theta_p log softmax(model(x_i) + output_mask)[y_i])^2`` over the N
    examples of ``data`` (no augmentation), with ``y_i`` the true label: the gradient is taken per
    example (``torch.func.vmap``, ``batch_size`` examples at a time), which is the definition;
    squaring a mini-batch's mean gradient instead would understate the Fisher by mixing the
    examples' gradients before squaring. The model runs in eval mode (BatchNorm uses its running
    statistics, so each example's gradient does not depend on the rest of its batch) with autocast
    off (the squares of reduced-precision gradients underflow). ``output_mask`` (0 or -inf per
    column) is the one the model was trained with.
    """
    model.eval()
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def log_likelihood(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (params, buffers), (x.unsqueeze(0),))[0]
        return torch.log_softmax(logits + output_mask, dim=0).gather(0, y.unsqueeze(0))[0]

    per_example_grads = vmap(grad(log_likelihood), in_dims=(None, 0, 0))
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    device = next(iter(params.values())).device
    with torch.autocast(device.type, enabled=False):
        for x, y in data.batches(batch_size):
            grads = per_example_grads(params, x.to(device), y.to(device))
            for name, g in grads.items():
                fisher[name] += g.square().sum(0)
    return {name: total / len(data) for name, total in fisher.items()}


class EWC(SGDLearner):
    """Fine-tuning plus a quadratic penalty that keeps the parameters near each past experience's,
    weighted by that experience's Fisher (see the module docstring).

    ``EWC(input_shape, device, n_classes, *, ewc_lambda=100.0, backbone="mlp", epochs=1, batch_size=64,
    lr=0.01, momentum=0.0, weight_decay=0.0, augment=False, mask="seen", fisher_examples=None)``.
    ``ewc_lambda`` scales the penalty (the Fisher is a mean over examples, so its scale is per
    example); it needs tuning per benchmark. The Fisher is computed ``batch_size`` examples at a
    time, over every training example of the experience, or over ``fisher_examples`` of them drawn
    with the context's ``"fisher"`` key (van de Ven et al.'s ``fisher_n``: per-example gradients
    cost about as much as an epoch of training).
    """

    version = "1"

    def __init__(self, input_shape: tuple[int, ...], device: str, n_classes: int, *, ewc_lambda: float = 100.0,
                 fisher_examples: int | None = None, **params) -> None:
        check_number("ewc_lambda", ewc_lambda)
        if fisher_examples is not None:
            check_number("fisher_examples", fisher_examples, low=1, integer=True)
        super().__init__(input_shape, device, n_classes, **params)
        self.ewc_lambda, self.fisher_examples = ewc_lambda, fisher_examples
        self.fishers: list[dict[str, torch.Tensor]] = []  # one per past experience (online EWC: one in all)
        self.anchors: list[dict[str, torch.Tensor]] = []  # the parameters each Fisher was computed at

    def loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Masked cross-entropy plus :meth:`penalty` (nothing on the first experience)."""
        loss = super().loss(logits, x, y)
        return loss + self.penalty() if self.fishers else loss

    def penalty(self) -> torch.Tensor:
        """``(ewc_lambda / 2) * sum_k sum_p F_k[p] * (theta[p] - anchor_k[p])^2`` (a scalar tensor)."""
        params = dict(self.model.named_parameters())
        total = torch.zeros((), device=self.device)
        for fisher, anchor in zip(self.fishers, self.anchors, strict=True):
            for name, weight in fisher.items():
                total = total + (weight * (params[name] - anchor[name]).square()).sum()
        return self.ewc_lambda / 2 * total

    def consolidate(self, data: ExperienceData, context: ContinualContext) -> None:
        """Append this experience's Fisher and the current parameters."""
        self.fishers.append(self.fisher(data, context))
        self.anchors.append(self.current_parameters())

    def fisher(self, data: ExperienceData, context: ContinualContext) -> dict[str, torch.Tensor]:
        """:func:`empirical_fisher` on ``data``, or on ``fisher_examples`` of its examples (the first
        ones in the order :func:`permutation` gives with the context's ``"fisher"`` key)."""
        if self.fisher_examples is not None and self.fisher_examples < len(data):
            chosen = torch.from_numpy(permutation(len(data), context.key("fisher"))[:self.fisher_examples])
            data = ExperienceData(data.images, data.labels, data.indices[chosen.to(data.indices.device)],
                                  data.transform)
        return empirical_fisher(self.model, data, self.output_mask, self.batch_size)

    def current_parameters(self) -> dict[str, torch.Tensor]:
        """A detached copy of the trainable parameters, by name."""
        return {name: p.detach().clone() for name, p in self.model.named_parameters() if p.requires_grad}

    def state_dict(self) -> dict:
        """The model, the classes seen, and every Fisher with its anchor."""
        return super().state_dict() | {"fishers": self.fishers, "anchors": self.anchors}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.fishers, self.anchors = ([{name: value.to(self.device) for name, value in entry.items()} for entry in
                                       state[key]] for key in ("fishers", "anchors"))


class OnlineEWC(EWC):
    """EWC with one running Fisher ``F = gamma * F_old + F_new`` and one anchor, the last parameters
    (Schwarz et al. 2018): memory and cost do not grow with the number of experiences.

    ``OnlineEWC(input_shape, device, n_classes, *, ewc_lambda=100.0, gamma=1.0, **EWC's other params)``;
    ``gamma`` in [0, 1] decays the older experiences' Fisher (1: no decay, as in van de Ven et al. 2022).
    """

    version = "1"

    def __init__(self, input_shape: tuple[int, ...], device: str, n_classes: int, *, gamma: float = 1.0,
                 **params) -> None:
        check_number("gamma", gamma, high=1.0)
        super().__init__(input_shape, device, n_classes, **params)
        self.gamma = gamma

    def consolidate(self, data: ExperienceData, context: ContinualContext) -> None:
        """Replace the running Fisher by ``gamma * F_old + F_new`` and the anchor by the current parameters."""
        fisher = self.fisher(data, context)
        if self.fishers:
            fisher = {name: self.gamma * old + fisher[name] for name, old in self.fishers[0].items()}
        self.fishers, self.anchors = [fisher], [self.current_parameters()]
