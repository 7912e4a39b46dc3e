"""The built-in methods."""

from __future__ import annotations

from protobench.benchmarks.registry import register_method
from protobench.continual.avalanche_interop import avalanche_ewc, avalanche_lwf, avalanche_naive
from protobench.continual.learners.ewc import EWC, OnlineEWC
from protobench.continual.learners.finetune import FineTune
from protobench.continual.learners.joint import Joint
from protobench.continual.learners.lwf import LwF
from protobench.continual.learners.ncm import NearestClassMean
from protobench.continual.learners.prd import PRD
from protobench.fewshot.protonet import PrototypicalNetwork


@register_method("protonet")
def protonet(input_shape: tuple[int, ...], device: str, lr: float = 1e-3, lr_step: int = 2000,
             lr_gamma: float = 0.5) -> PrototypicalNetwork:
    """Prototypical Networks with a Conv-4 backbone (Snell et al. 2017), trained episodically."""
    return PrototypicalNetwork(in_channels=input_shape[0], device=device, lr=lr, lr_step=lr_step, lr_gamma=lr_gamma)


# --- continual learners: factories take (input_shape, device, n_classes, **params) -----------------
register_method("finetune", kind="continual")(FineTune)
register_method("joint", kind="continual")(Joint)
register_method("ewc", kind="continual")(EWC)
register_method("online-ewc", kind="continual")(OnlineEWC)
register_method("lwf", kind="continual")(LwF)
register_method("ncm", kind="continual")(NearestClassMean)
register_method("prd", kind="continual")(PRD)
register_method("avalanche-naive", kind="continual")(avalanche_naive)
register_method("avalanche-ewc", kind="continual")(avalanche_ewc)
register_method("avalanche-lwf", kind="continual")(avalanche_lwf)
