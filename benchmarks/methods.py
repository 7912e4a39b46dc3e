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
from protobench.fewshot.encoders import DEFAULT_PROMPT
from protobench.fewshot.protonet import PrototypicalNetwork
from protobench.fewshot.vl_learners import (
    OFFLINE_ENCODER,
    TIP_F_INIT_ALPHA,
    TIP_F_INIT_BETA,
    ProtoCLIPFLearner,
    ProtoCLIPLearner,
    ProtoNetFrozenLearner,
    TipAdapterFLearner,
    TipAdapterLearner,
    ZeroShotTextLearner,
    build_encoders,
)


@register_method("protonet")
def protonet(input_shape: tuple[int, ...], device: str, lr: float = 1e-3, lr_step: int = 2000,
             lr_gamma: float = 0.5) -> PrototypicalNetwork:
    """Prototypical Networks with a Conv-4 backbone (Snell et al. 2017), trained episodically."""
    return PrototypicalNetwork(in_channels=input_shape[0], device=device, lr=lr, lr_step=lr_step, lr_gamma=lr_gamma)



# --- training-free learners on a frozen encoder pair (protobench.fewshot.vl_learners) ----------------
# encoder: "offline-efficientnet-minilm" (EfficientNet-Lite0 + MiniLM ridge map, not CLIP; ridge and
# resolution apply to it) or "open_clip:<model>:<pretrained>". alpha and beta have no default: a suite
# gives the values chosen on validation classes (docs/protoclip_val_search.py) and says so in chosen_on.

@register_method("proto-clip")
def proto_clip(input_shape: tuple[int, ...], device: str, alpha: float, beta: float,
               encoder: str = OFFLINE_ENCODER, prompt: str = DEFAULT_PROMPT, ridge: float | None = None,
               resolution: int | None = None) -> ProtoCLIPLearner:
    """Training-free Proto-CLIP (Palanisamy et al. 2024): image prototypes of the support fused with text
    prototypes of the class names, alpha softmax(-beta d_img) + (1 - alpha) softmax(-beta d_txt)."""
    built = build_encoders(encoder, device=device, prompt=prompt, ridge=ridge, resolution=resolution)
    return ProtoCLIPLearner(built.pair, alpha=alpha, beta=beta, prompt=prompt, pretraining=built.pretraining,
                            text_held_out=built.text_held_out)


@register_method("proto-clip-f")
def proto_clip_f(input_shape: tuple[int, ...], device: str, alpha: float, beta: float, adapter: str | None = "fc",
                 epochs: int = 20, lr: float = 1e-4, train_text_memory: bool = True, encoder: str = OFFLINE_ENCODER,
                 prompt: str = DEFAULT_PROMPT, ridge: float | None = None,
                 resolution: int | None = None) -> ProtoCLIPFLearner:
    """Proto-CLIP-F: Proto-CLIP with its memories and an adapter fine-tuned on each episode's support."""
    built = build_encoders(encoder, device=device, prompt=prompt, ridge=ridge, resolution=resolution)
    return ProtoCLIPFLearner(built.pair, alpha=alpha, beta=beta, adapter=adapter, epochs=epochs, lr=lr,
                             train_text_memory=train_text_memory, prompt=prompt, pretraining=built.pretraining,
                             text_held_out=built.text_held_out)


@register_method("zero-shot-text")
def zero_shot_text(input_shape: tuple[int, ...], device: str, encoder: str = OFFLINE_ENCODER,
                   prompt: str = DEFAULT_PROMPT, ridge: float | None = None,
                   resolution: int | None = None) -> ZeroShotTextLearner:
    """Zero-shot classification by text prototypes of the class names alone (zero-shot CLIP on a CLIP pair)."""
    built = build_encoders(encoder, device=device, prompt=prompt, ridge=ridge, resolution=resolution)
    return ZeroShotTextLearner(built.pair, prompt=prompt, pretraining=built.pretraining,
                               text_held_out=built.text_held_out)


@register_method("tip-adapter")
def tip_adapter(input_shape: tuple[int, ...], device: str, alpha: float, beta: float,
                encoder: str = OFFLINE_ENCODER, prompt: str = DEFAULT_PROMPT, ridge: float | None = None,
                resolution: int | None = None) -> TipAdapterLearner:
    """Training-free Tip-Adapter (Zhang et al. 2022): zero-shot text logits plus a cache model of the support."""
    built = build_encoders(encoder, device=device, prompt=prompt, ridge=ridge, resolution=resolution)
    return TipAdapterLearner(built.pair, alpha=alpha, beta=beta, prompt=prompt, pretraining=built.pretraining,
                             text_held_out=built.text_held_out)


@register_method("tip-adapter-f")
def tip_adapter_f(input_shape: tuple[int, ...], device: str, alpha: float, beta: float, epochs: int = 20,
                  lr: float = 1e-3, train_views: int = 10, train_alpha: float = TIP_F_INIT_ALPHA,
                  train_beta: float = TIP_F_INIT_BETA, encoder: str = OFFLINE_ENCODER, prompt: str = DEFAULT_PROMPT,
                  ridge: float | None = None, resolution: int | None = None) -> TipAdapterFLearner:
    """Tip-Adapter-F (Zhang et al. 2022): Tip-Adapter with its cache keys fine-tuned (at ``train_alpha``,
    ``train_beta``) on augmented views (``train_views`` per image) of each episode's support, then
    scored at ``alpha``, ``beta``."""
    built = build_encoders(encoder, device=device, prompt=prompt, ridge=ridge, resolution=resolution)
    return TipAdapterFLearner(built.pair, alpha=alpha, beta=beta, epochs=epochs, lr=lr, train_views=train_views,
                              train_alpha=train_alpha, train_beta=train_beta, prompt=prompt,
                              pretraining=built.pretraining, text_held_out=built.text_held_out)


@register_method("protonet-frozen")
def protonet_frozen(input_shape: tuple[int, ...], device: str, encoder: str = OFFLINE_ENCODER,
                    resolution: int | None = None) -> ProtoNetFrozenLearner:
    """Prototypical Networks' nearest mean (squared Euclidean) on a frozen pretrained encoder's image features."""
    built = build_encoders(encoder, device=device, resolution=resolution, text=False)
    return ProtoNetFrozenLearner(built.pair.image, pretraining=built.image_pretraining)


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
