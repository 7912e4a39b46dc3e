"""PRD (Prototype-Sample Relation Distillation): its three losses by hand, its augmentation, prediction
masking, replay-freedom, resume, parameter checks and a run through the runner on split-digits."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import toy_class_incremental_stream

from protobench.benchmarks.runner import check_suite, run_suite
from protobench.benchmarks.suite import load_suite
from protobench.continual.augment import random_crop_flip
from protobench.continual.experience import Experience, Stream
from protobench.continual.learner import ContinualContext, ContinualLearner
from protobench.continual.learners.finetune import FineTune
from protobench.continual.learners.prd import PRD, augment_view, jitter_colour
from protobench.continual.learners.prd_losses import (
    prototype_loss,
    relation_distillation_loss,
    supervised_contrastive_loss,
)
from protobench.fewshot.counter_rng import role_key
from protobench.leaderboard.validate import validate_file

SHAPE = (3, 6, 6)
N_CLASSES = 6
TRAIN_PER_CLASS, TEST_PER_CLASS = 37, 10  # 74 training images per experience: a size no tensor of the model has
FAST = {"epochs": 2, "batch_size": 16, "projection_hidden": 32, "projection_dim": 16, "crop_padding": 1,
        "lr": 0.01, "prototype_lr": 0.1}


pytestmark = pytest.mark.usefixtures("seeded_one_thread")


def toy_stream(seed: int = 0) -> Stream:
    """Six classes of (3, 6, 6) images in [0, 1] (a random pattern per class plus noise 0.1), split
    class-incrementally into three experiences of two classes; stream label = class."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(N_CLASSES).repeat_interleave(TRAIN_PER_CLASS + TEST_PER_CLASS)
    patterns = torch.rand(N_CLASSES, *SHAPE, generator=generator)
    images = (patterns[labels] + 0.1 * torch.randn(len(labels), *SHAPE, generator=generator)).clamp(0, 1)
    return toy_class_incremental_stream(images, labels, TRAIN_PER_CLASS, seed)


STREAM = toy_stream()


def context(index: int) -> ContinualContext:
    return ContinualContext(device="cpu", seed=7, experience_index=index, progress=False)


def build(seed: int = 0, **params) -> PRD:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PRD(SHAPE, "cpu", N_CLASSES, **{**FAST, **params})


def train(learner: PRD, experiences) -> list[dict]:
    return [learner.train_experience(STREAM[i], context(i)) for i in experiences]


def roundtrip(state: dict) -> dict:
    """The state as the runner's checkpoint gives it back (torch.save, torch.load(weights_only=True))."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# --- losses ---------------------------------------------------------------------------------------

def supcon_reference(z: np.ndarray, labels: list[int], t: float) -> float:
    """SupCon by loops: anchors without a positive are left out of the mean."""
    losses = []
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            continue
        log_denominator = math.log(sum(math.exp(z[i] @ z[a] / t) for a in others))
        losses.append(-(t / 0.07) * np.mean([z[i] @ z[p] / t - log_denominator for p in positives]))
    return float(np.mean(losses))


def test_supcon_by_hand_with_anchors_without_positives():
    # four unit vectors at right angles; anchors 0 and 1 (label 0) are each other's positive, anchors 2
    # and 3 have none and contribute nothing (they still sit in the denominators):
    # l_0 = l_1 = (T / 0.07) * log(e^0 + e^(-1/T) + e^0) with cos(0, 2) = -1, cos(0, 3) = 0 (and 1, 3: -1)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    t = 0.5
    expected = (t / 0.07) * math.log(2 + math.exp(-1 / t))
    loss = supervised_contrastive_loss(z, torch.tensor([0, 0, 1, 2]), t)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.item() == pytest.approx(supcon_reference(z.numpy(), [0, 0, 1, 2], t), rel=1e-6)


def test_supcon_by_hand_with_two_views_and_several_positives():
    generator = torch.Generator().manual_seed(1)
    z = F.normalize(torch.randn(10, 4, generator=generator), dim=1)
    labels = [0, 1, 0, 2, 1] * 2  # two views of five images: every anchor has at least its other view
    loss = supervised_contrastive_loss(z, torch.tensor(labels), 0.2)
    assert loss.item() == pytest.approx(supcon_reference(z.numpy(), labels, 0.2), rel=1e-6)


def test_supcon_without_any_positive_is_zero_and_differentiable():
    z = F.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(2)), dim=1).requires_grad_()
    loss = supervised_contrastive_loss(z, torch.tensor([0, 1, 2]), 0.2)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(z.grad, torch.zeros_like(z))


def test_prototype_loss_by_hand_trains_only_the_prototypes_present():
    features = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 5.0], [1.0, 1.0]], requires_grad=True)
    loss = prototype_loss(features, torch.tensor([0, 0, 1]), prototypes)
    assert loss.item() == pytest.approx((1 - 3 / 5 + 0 + 0) / 3, rel=1e-6)  # cosines 3/5, 1, 1
    loss.backward()
    assert features.grad is None  # detached features: the encoder gets nothing
    assert prototypes.grad[2].eq(0).all() and prototypes.grad[0].abs().sum() > 0


def kl(p: np.ndarray, q: np.ndarray) -> float:
    return float((p * (np.log(p) - np.log(q))).sum())


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def distillation_inputs():
    generator = torch.Generator().manual_seed(3)
    new_f, old_f = (torch.randn(5, 3, generator=generator, dtype=torch.float64) for _ in range(2))
    new_p, old_p = (torch.randn(4, 3, generator=generator, dtype=torch.float64) for _ in range(2))
    return new_f, new_p, old_f, old_p


def test_relation_distillation_over_samples_by_hand():
    new_f, new_p, old_f, old_p = distillation_inputs()
    t = 2.0

    def cosines(f, p):
        f, p = f.numpy(), p.numpy()
        return (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (p / np.linalg.norm(p, axis=1, keepdims=True)).T

    # per old prototype k (a column), a softmax over the five samples; KL(old || new), summed over k
    q_new, q_old = softmax(cosines(new_f, new_p) / t, 0), softmax(cosines(old_f, old_p) / t, 0)
    expected = sum(kl(q_old[:, k], q_new[:, k]) for k in range(4))
    loss = relation_distillation_loss(new_f, new_p, old_f, old_p, t, "samples")
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert relation_distillation_loss(old_f, old_p, old_f, old_p, t, "samples").item() == pytest.approx(0, abs=1e-12)
    scaled = relation_distillation_loss(3 * new_f, 2 * new_p, old_f, old_p, t, "samples")  # cosines: scale-free
    assert scaled.item() == pytest.approx(expected, rel=1e-9)


def test_relation_distillation_over_prototypes_by_hand():
    new_f, new_p, old_f, old_p = distillation_inputs()
    t = 2.0

    def scores(f, p):  # feature . p / ||p||, the feature not normalised
        return f.numpy() @ (p.numpy() / np.linalg.norm(p.numpy(), axis=1, keepdims=True)).T / t

    groups = [[0, 1], [2, 3]]
    expected = 0.0
    for group in groups:  # per sample a softmax over one group's prototypes; batch mean; sum over groups
        p_new, p_old = softmax(scores(new_f, new_p)[:, group], 1), softmax(scores(old_f, old_p)[:, group], 1)
        expected += np.mean([kl(p_old[i], p_new[i]) for i in range(5)])
    loss = relation_distillation_loss(new_f, new_p, old_f, old_p, t, "prototypes", groups)
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    p_new, p_old = softmax(scores(new_f, new_p), 1), softmax(scores(old_f, old_p), 1)
    one_group = relation_distillation_loss(new_f, new_p, old_f, old_p, t, "prototypes")
    assert one_group.item() == pytest.approx(np.mean([kl(p_old[i], p_new[i]) for i in range(5)]), rel=1e-9)
    scaled = relation_distillation_loss(3 * new_f, new_p, old_f, old_p, t, "prototypes", groups)
    assert scaled.item() != pytest.approx(expected, rel=1e-3)  # the feature's norm counts on this axis


@pytest.mark.parametrize("axis", ["samples", "prototypes"])
def test_distillation_trains_the_new_side_only(axis):
    new_f, new_p, old_f, old_p = (t.clone().requires_grad_() for t in distillation_inputs())
    relation_distillation_loss(new_f, new_p, old_f, old_p, 2.0, axis).backward()
    assert new_f.grad.abs().sum() > 0 and new_p.grad.abs().sum() > 0
    assert old_f.grad is None and old_p.grad is None


# --- augmentation ---------------------------------------------------------------------------------

def test_colour_jitter_by_hand():
    image = torch.tensor([[[[0.2, 0.9]], [[0.5, 0.1]], [[0.4, 0.6]]]])  # (1, 3, 1, 2)
    b, c, s = 1.5, 0.5, 2.0
    x = np.clip(image.numpy()[0] * b, 0, 1)
    gray = 0.2989 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    x = np.clip(c * x + (1 - c) * gray.mean(), 0, 1)
    gray = 0.2989 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    x = np.clip(s * x + (1 - s) * gray, 0, 1)
    out = jitter_colour(image, torch.tensor([b]), torch.tensor([c]), torch.tensor([s]))
    np.testing.assert_allclose(out[0].numpy(), x, rtol=1e-6)
    ones = torch.ones(1)
    assert torch.equal(jitter_colour(image, ones, ones, ones), image)


def test_augmentation_is_keyed_and_one_channel_images_get_crop_and_flip_only():
    generator = torch.Generator().manual_seed(4)
    grey, colour = torch.rand(8, 1, 6, 6, generator=generator), torch.rand(8, 3, 6, 6, generator=generator)
    assert torch.equal(augment_view(grey, 11, 2), random_crop_flip(grey, role_key("crop", 11), 2))
    assert torch.equal(augment_view(colour, 11, 2), augment_view(colour, 11, 2))
    assert not torch.equal(augment_view(colour, 11, 2), augment_view(colour, 12, 2))


def test_colour_jitter_and_grayscale_rates():
    # 1x1 images: crop (padding 0) and flip change nothing, so only the colour operations act
    n = 4000
    images = torch.rand(n, 3, 1, 1, generator=torch.Generator().manual_seed(5)) * 0.5 + 0.25
    views = augment_view(images, 21, padding=0)
    gray = ((views[:, 0] == views[:, 1]) & (views[:, 1] == views[:, 2])).flatten()
    untouched = (views == images).all(dim=(1, 2, 3))
    assert abs(gray.float().mean().item() - 0.2) < 0.03
    assert abs(untouched.float().mean().item() - 0.2 * 0.8) < 0.03  # neither jittered nor gray


# --- the learner ----------------------------------------------------------------------------------

def test_prd_satisfies_the_protocol_and_is_registered():
    from protobench.benchmarks.registry import build_method

    learner = build()
    assert isinstance(learner, ContinualLearner)
    assert (learner.backbone_name, learner.pretraining, learner.version) == ("mlp", None, "1")
    assert isinstance(build_method("prd", SHAPE, "cpu", n_classes=N_CLASSES, **FAST), PRD)


def test_prediction_is_the_cosine_to_the_prototypes_and_masks_unseen_classes():
    learner = build()
    x = torch.cat([STREAM[i].test.tensors()[0] for i in range(3)])
    assert torch.equal(learner.predict(x), torch.full((len(x), N_CLASSES), -math.inf))  # nothing trained yet
    train(learner, [0])
    logits = learner.predict(x)
    assert logits.shape == (len(x), N_CLASSES) and logits.dtype == torch.float32
    assert logits[:, 2:].eq(-math.inf).all()
    with torch.no_grad():
        expected = F.cosine_similarity(learner.encoder.eval()(x)[:, None], learner.prototypes[None, :2], dim=2)
    torch.testing.assert_close(logits[:, :2], expected)
    train(learner, [1])
    assert learner.predict(x)[:, :4].isfinite().all() and learner.predict(x)[:, 4:].eq(-math.inf).all()
    assert torch.equal(learner.predict(x, task_id=0), learner.predict(x))


def test_it_learns_the_first_experience():
    learner = build(epochs=5)
    train(learner, [0])
    x, y = STREAM[0].test.tensors()
    assert (learner.predict(x)[:, :2].argmax(1) == y).float().mean() > 0.9


def tensors_in(value) -> list[torch.Tensor]:
    """Every tensor inside nested dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors_in(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors_in(v)]
    return []


def test_the_state_holds_no_data_of_past_experiences():
    learner = build()
    train(learner, [0, 1, 2])
    state = learner.state_dict()
    assert set(state) == {"encoder", "projection", "prototypes", "optimizer", "past_classes", "teacher",
                          "teacher_prototypes"}
    assert state["past_classes"] == [[0, 1], [2, 3], [4, 5]]
    # every tensor of the state has the shape of a parameter or buffer of the model (or is a scalar)
    shapes = {tuple(t.shape) for module in (learner.encoder, learner.projection)
              for t in [*module.parameters(), *module.buffers()]} | {tuple(learner.prototypes.shape), ()}
    state_tensors = tensors_in(state)
    assert {tuple(t.shape) for t in state_tensors} <= shapes
    # and no tensor anywhere in the learner has a dimension the size of an experience's data or of the stream's
    sizes = {len(STREAM[i].train) for i in range(3)} | {len(STREAM[0].train.images), 2 * len(STREAM[0].train)}
    everywhere = state_tensors + tensors_in(vars(learner)) + tensors_in(learner.teacher.state_dict())
    assert not [tuple(t.shape) for t in everywhere if sizes & set(t.shape)]
    # the teacher is the encoder frozen at the end of the last experience, no more
    assert set(state["teacher"]) == set(state["encoder"])
    assert all(torch.equal(state["teacher"][k], v) for k, v in state["encoder"].items())
    assert torch.equal(state["teacher_prototypes"], state["prototypes"])


@pytest.mark.parametrize("params", [{}, {"distill_axis": "prototypes"}, {"distill_coef": 0.0},
                                    {"backbone": "resnet18-reduced", "teacher_mode": "train", "epochs": 1}])
def test_resumed_training_is_identical(params):
    straight = build(**params)
    train(straight, [0, 1, 2])
    first = build(**params)
    train(first, [0])
    resumed = build(seed=1, **params)  # other initial weights: the state must overwrite everything
    resumed.load_state_dict(roundtrip(first.state_dict()))
    train(resumed, [1, 2])
    x = torch.cat([STREAM[i].test.tensors()[0] for i in range(3)])
    assert torch.equal(straight.predict(x), resumed.predict(x))
    assert torch.equal(straight.prototypes, resumed.prototypes)


def test_training_record_and_prototype_drift():
    still = build(lr=1e-12, prototype_lr=1e-12, augment=False, epochs=1)  # the model does not move
    with torch.no_grad():
        x, y = STREAM[0].train.tensors()
        expected = prototype_loss(still.encoder(x), y, still.prototypes).item()
    (record,) = train(still, [0])
    assert record["prototype"] == pytest.approx(expected, rel=1e-5)  # the per-image mean over the epoch
    assert record["distill"] is None and record["prototype_drift"] is None and record["prototype_lr"] == 1e-12
    learner = build(distill_temperature=0.1)  # sharper than the default 2: a KL well above rounding
    initial = learner.prototypes.detach().clone()
    train(learner, [0])
    after_0 = learner.prototypes.detach().clone()
    (record,) = train(learner, [1])
    n = len(STREAM[1].train)
    assert (record["epochs"], record["examples"]) == (2, 2 * n)
    assert record["steps"] == 2 * math.ceil(n / FAST["batch_size"])
    assert record["loss"] == pytest.approx(record["supcon"] + record["prototype"] + record["distill"], rel=1e-5)
    assert record["distill"] > 0 and record["seconds"] >= 0
    drift = (1 - F.cosine_similarity(after_0[:2], learner.prototypes[:2].detach(), dim=1)).mean().item()
    assert record["prototype_drift"] == pytest.approx(drift, rel=1e-5) and drift > 0
    assert torch.equal(learner.prototypes[4:], initial[4:])  # never trained: never moved


def test_without_distillation_old_prototypes_never_move():
    learner = build(distill_coef=0.0)
    train(learner, [0])
    after_0 = learner.prototypes.detach().clone()
    (record,) = train(learner, [1])
    assert record["distill"] is None and record["prototype_drift"] == 0.0
    assert torch.equal(learner.prototypes[:2], after_0[:2])  # only the current experience's prototypes train
    with_distillation = build()
    train(with_distillation, [0])
    after_0 = with_distillation.prototypes.detach().clone()
    train(with_distillation, [1])
    assert not torch.equal(with_distillation.prototypes[:2], after_0[:2])  # the distillation moves them


@pytest.mark.parametrize(("mode", "training"), [("eval", False), ("train", True)])
def test_the_frozen_encoder_stays_frozen_in_either_mode(mode, training):
    learner = build(backbone="resnet18-reduced", teacher_mode=mode, epochs=1)
    train(learner, [0])
    teacher = learner.teacher
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert teacher.training is training and not any(p.requires_grad for p in teacher.parameters())
    learner.fit(STREAM[1].train, context(1), [0, 1])  # experience 1 with distillation, without consolidating
    assert all(torch.equal(frozen[k], v) for k, v in teacher.state_dict().items())  # running statistics too
    assert not all(torch.equal(frozen[k], v) for k, v in learner.encoder.state_dict().items())


def test_training_leaves_the_global_generators_alone():
    learner = build()
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    train(learner, [0, 1])
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])


@pytest.mark.parametrize(("params", "message"), [
    ({"distill_axis": "rows"}, "distill_axis must be one of samples, prototypes, got 'rows'"),
    ({"teacher_mode": "frozen"}, "teacher_mode must be one of eval, train, got 'frozen'"),
    ({"prototype_lr": 0.0}, "prototype_lr must be a number > 0.0, got 0.0"),
    ({"distill_coef": -1.0}, "distill_coef must be a number >= 0.0, got -1.0"),
    ({"supcon_temperature": math.nan}, "supcon_temperature must be a number > 0.0"),
    ({"projection_dim": 0}, "projection_dim must be an integer >= 1"),
    ({"crop_padding": 1.5}, "crop_padding must be an integer >= 0"),
    ({"augment": "yes"}, "augment must be true or false"),
    ({"backbone": "vit"}, "unknown backbone 'vit'"),
])
def test_invalid_parameters_are_refused(params, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        build(**params)


def test_invalid_classes_and_foreign_states_are_refused():
    with pytest.raises(ValueError, match="within 0..5"):
        build().train_experience(Experience(0, 0, (6,), STREAM[0].train, STREAM[0].test), context(0))
    with pytest.raises(ValueError, match="not a PRD state: it lacks"):
        build().load_state_dict(FineTune(SHAPE, "cpu", N_CLASSES).state_dict())


# --- through the runner ---------------------------------------------------------------------------

SUITE = """
name = "tiny-prd"
kind = "continual"
benchmarks = ["split-digits"]
seeds = [0]

[[methods]]
label = "prd"
method = "prd"
params = { backbone = "mlp", epochs = 2, batch_size = 32, lr = 0.01, prototype_lr = 0.1, projection_hidden = 64 }
"""

ABLATIONS = """
[[methods]]
label = "prd-no-distill"
method = "prd"
params = { backbone = "mlp", distill_coef = 0.0 }

[[methods]]
label = "prd-prototype-axis"
method = "prd"
params = { backbone = "mlp", distill_axis = "prototypes", teacher_mode = "train" }
"""


def test_a_prd_suite_runs_through_the_runner_and_validates(tmp_path):
    path = tmp_path / "tiny-prd.toml"
    path.write_text(SUITE + ABLATIONS)
    check_suite(load_suite(path), None)  # the ablations are method configurations the runner accepts
    path.write_text(SUITE)
    (result,) = run_suite(load_suite(path), out_dir=tmp_path / "out", data_root=None, device="cpu", progress=False)
    assert validate_file(tmp_path / "out" / "split-digits__prd__seed0.json") == []
    R = np.array(result["evidence"]["accuracy_matrix"])
    assert R.shape == (5, 5) and np.all(R[np.triu_indices(5, k=1)] == 0.0)  # unseen classes never predicted
    assert R[0, 0] > 0.7
    records = result["training"]["experiences"]
    assert records[0]["distill"] is None and all(r["distill"] > -1e-6 for r in records[1:])  # KL >= 0 up to rounding
    assert all(r["prototype_drift"] is not None for r in records[1:])
    assert result["method"]["name"] == "prd" and result["method"]["params"]["prototype_lr"] == 0.1
