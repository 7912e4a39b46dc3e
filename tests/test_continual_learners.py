"""Continual baselines on a toy class-incremental stream: forgetting and its upper bound, EWC's Fisher
and penalty, online EWC's running Fisher, LwF's distillation, output masks, global RNG, resume."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import toy_class_incremental_stream

from protobench.continual.backbones import build_backbone
from protobench.continual.experience import Experience, ExperienceData, Stream, permutation
from protobench.continual.learner import ContinualContext, ContinualLearner
from protobench.continual.learners.ewc import EWC, OnlineEWC, empirical_fisher
from protobench.continual.learners.finetune import FineTune
from protobench.continual.learners.joint import Joint
from protobench.continual.learners.lwf import LwF, distillation_loss
from protobench.continual.learners.training import Classifier

SHAPE = (1, 4, 4)
N_CLASSES = 6
TRAIN_PER_CLASS, TEST_PER_CLASS = 40, 20
FAST = {"epochs": 4, "batch_size": 16, "lr": 0.1}
LEARNERS = [(FineTune, {}), (Joint, {}), (EWC, {"ewc_lambda": 10.0}), (OnlineEWC, {"ewc_lambda": 10.0, "gamma": 0.5}),
            (LwF, {"alpha": 1.0, "temperature": 2.0})]


pytestmark = pytest.mark.usefixtures("seeded_one_thread")


def toy_stream(seed: int = 0) -> Stream:
    """Six Gaussian blobs in 16 dimensions as (1, 4, 4) images (class c centred at 3 on pixel c, 0 elsewhere,
    noise 0.3), split class-incrementally into three experiences of two classes; stream label = class."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(N_CLASSES).repeat_interleave(TRAIN_PER_CLASS + TEST_PER_CLASS)
    centres = 3.0 * torch.eye(16)[:N_CLASSES]
    images = (centres[labels] + 0.3 * torch.randn(len(labels), 16, generator=generator)).reshape(-1, *SHAPE)
    return toy_class_incremental_stream(images, labels, TRAIN_PER_CLASS, seed)


STREAM = toy_stream()


def context(index: int) -> ContinualContext:
    return ContinualContext(device="cpu", seed=7, experience_index=index, progress=False)


def build(cls, seed: int = 0, **params):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(SHAPE, "cpu", N_CLASSES, **{**FAST, **params})


def train(learner, experiences) -> list[dict]:
    return [learner.train_experience(STREAM[i], context(i)) for i in experiences]


def accuracy(learner, index: int, n_seen: int) -> float:
    """Task-agnostic accuracy on experience ``index``'s test set: argmax over classes 0 .. n_seen - 1."""
    x, y = STREAM[index].test.tensors()
    return (learner.predict(x)[:, :n_seen].argmax(1) == y).float().mean().item()


def roundtrip(state: dict) -> dict:
    """The state as the runner's checkpoint gives it back (torch.save, torch.load(weights_only=True))."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(("cls", "params"), LEARNERS)
def test_learners_satisfy_the_protocol(cls, params):
    learner = build(cls, **params)
    assert isinstance(learner, ContinualLearner)
    assert (learner.backbone_name, learner.pretraining, learner.version) == ("mlp", None, "1")
    assert learner.predict(STREAM[0].test.tensors()[0]).shape == (len(STREAM[0].test), N_CLASSES)


def test_finetuning_forgets_and_joint_does_not():
    finetune, joint = build(FineTune), build(Joint)
    for learner in (finetune, joint):
        train(learner, [0])
        assert accuracy(learner, 0, 2) > 0.95
        train(learner, [1])
        assert accuracy(learner, 1, 4) > 0.95
    assert accuracy(finetune, 0, 4) < 0.05  # class-incremental fine-tuning: experience 0 is forgotten
    assert accuracy(joint, 0, 4) > 0.95


def test_joint_retrains_from_the_initial_weights_on_the_union():
    joint = build(Joint)
    train(joint, [0, 1])
    # one experience holding the rows of experiences 0 and 1 in that order, trained once from the same
    # initial weights with experience 1's keys, gives the very same model
    union = ExperienceData(STREAM[0].train.images, STREAM[0].train.labels,
                           torch.cat([STREAM[0].train.indices, STREAM[1].train.indices]))
    once = build(Joint)
    record = once.train_experience(Experience(1, 1, (0, 1, 2, 3), union, STREAM[1].test), context(1))
    x = STREAM[0].test.tensors()[0]
    assert torch.equal(joint.predict(x), once.predict(x))
    assert record["examples"] == FAST["epochs"] * (len(STREAM[0].train) + len(STREAM[1].train))
    assert len(joint.stored_labels) == len(STREAM[0].train) + len(STREAM[1].train)


def test_training_record():
    learner = build(FineTune)
    (record,) = train(learner, [0])
    n = len(STREAM[0].train)
    assert record["epochs"] == FAST["epochs"] and record["examples"] == FAST["epochs"] * n
    assert record["steps"] == FAST["epochs"] * math.ceil(n / FAST["batch_size"])
    assert 0 < record["loss"] < math.log(2)  # mean cross-entropy over two classes, after learning them
    assert record["seconds"] >= 0


def test_recorded_loss_is_the_mean_over_examples():
    learner = build(FineTune, epochs=1, batch_size=24, lr=1e-12)  # 80 examples: batches of 24, 24, 24, 8
    x, y = STREAM[0].train.tensors()
    with torch.no_grad():
        expected = F.cross_entropy(learner.model(x)[:, :2], y).item()
    (record,) = train(learner, [0])
    assert record["loss"] == pytest.approx(expected, rel=1e-5)


def test_output_mask_seen_trains_only_the_seen_columns():
    learner = build(FineTune, mask="seen")
    head = learner.model.head
    initial = head.weight.detach().clone()
    train(learner, [0])
    after_0 = head.weight.detach().clone()
    assert torch.equal(after_0[2:], initial[2:]) and not torch.equal(after_0[:2], initial[:2])
    train(learner, [1])
    assert torch.equal(head.weight[4:], initial[4:])  # never seen
    assert not torch.equal(head.weight[:2], after_0[:2])  # seen: pushed down by experience 1's data


def test_output_mask_experience_trains_only_the_experience_columns():
    learner = build(FineTune, mask="experience")
    train(learner, [0])
    after_0 = learner.model.head.weight.detach().clone()
    train(learner, [1])
    assert torch.equal(learner.model.head.weight[:2], after_0[:2])
    assert not torch.equal(learner.model.head.weight[2:4], after_0[2:4])
    x, y = STREAM[1].train.take(slice(0, 10))
    logits = learner.model(x)
    torch.testing.assert_close(learner.loss(logits, x, y), F.cross_entropy(logits[:, 2:4], y - 2))


def test_output_mask_all_trains_every_column_like_avalanches_naive():
    learner = build(FineTune, mask="all")
    before = learner.model.head.bias.detach().clone()
    train(learner, [0])
    assert (learner.model.head.bias != before).all()  # unseen classes' columns are pushed down too
    x, y = STREAM[0].train.take(slice(0, 10))
    logits = learner.model(x)
    torch.testing.assert_close(learner.loss(logits, x, y), F.cross_entropy(logits, y))


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize(("cls", "params"), LEARNERS)
def test_training_leaves_the_global_generators_alone(cls, params, augment):
    learner = build(cls, augment=augment, **params)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    train(learner, [0, 1])
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]


@pytest.mark.parametrize(("cls", "params"), [*LEARNERS, (Joint, {"mask": "experience"}),
                                             (EWC, {"augment": True, "momentum": 0.9, "mask": "experience"})])
def test_resumed_training_is_identical(cls, params):
    straight = build(cls, **params)
    train(straight, [0, 1, 2])
    first = build(cls, **params)
    train(first, [0])
    resumed = build(cls, seed=1, **params)  # other initial weights: the state must overwrite everything
    resumed.load_state_dict(roundtrip(first.state_dict()))
    assert resumed.n_seen == 2
    train(resumed, [1, 2])
    x = torch.cat([STREAM[i].test.tensors()[0] for i in range(3)])
    assert torch.equal(straight.predict(x), resumed.predict(x))


def test_a_state_of_another_learner_is_refused():
    with pytest.raises(ValueError, match="not a EWC state: it lacks anchors, fishers"):
        build(EWC).load_state_dict(build(FineTune).state_dict())


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError, match="mask must be one of seen, experience, all"):
        build(FineTune, mask="everything")
    with pytest.raises(ValueError, match="gamma must be a number >= 0.0 and <= 1.0"):
        build(OnlineEWC, gamma=1.5)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        build(LwF, epochs=0)
    with pytest.raises(ValueError, match="within 0..5"):
        build(FineTune).train_experience(Experience(0, 0, (6,), STREAM[0].train, STREAM[0].test), context(0))


# --- EWC ------------------------------------------------------------------------------------------

def softmax_linear_fisher(weight: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray,
                          allowed: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Closed form for logits = W x + b: d log p_y / dW = (e_y - p) x^T, d log p_y / db = e_y - p,
    with p the softmax over the allowed columns (0 elsewhere); mean of the squares over examples."""
    fisher_w, fisher_b = np.zeros_like(weight), np.zeros_like(bias)
    for xi, yi in zip(x, y, strict=True):
        logits = weight @ xi + bias
        p = np.zeros_like(bias)
        p[allowed] = np.exp(logits[allowed] - logits[allowed].max())
        p /= p.sum()
        residual = np.eye(len(bias))[yi] - p
        fisher_w += np.outer(residual, xi) ** 2
        fisher_b += residual ** 2
    return fisher_w / len(x), fisher_b / len(x)


@pytest.mark.parametrize("allowed", [[0, 1, 2], [0, 1]])
def test_empirical_fisher_of_a_linear_softmax_model(allowed):
    generator = torch.Generator().manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(3, 4, generator=generator))
        model[1].bias.copy_(torch.randn(3, generator=generator))
    images = torch.randn(10, 1, 2, 2, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 0, 0, 1, 1, 1, 0, 0]) if allowed == [0, 1] else torch.arange(10) % 3
    mask = torch.full((3,), -math.inf, dtype=torch.float64)
    mask[allowed] = 0.0
    fisher = empirical_fisher(model, ExperienceData(images, labels, torch.arange(10)), mask, batch_size=3)
    expected_w, expected_b = softmax_linear_fisher(model[1].weight.detach().numpy(), model[1].bias.detach().numpy(),
                                                   images.reshape(10, 4).numpy(), labels.numpy(), allowed)
    np.testing.assert_allclose(fisher["1.weight"].numpy(), expected_w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fisher["1.bias"].numpy(), expected_b, rtol=1e-10, atol=1e-12)
    # per example, not per batch: the squared mean gradient is smaller
    batch_grad = torch.autograd.grad(torch.log_softmax(model(images) + mask, 1)[torch.arange(10), labels].mean(),
                                     model[1].bias)[0]
    assert (batch_grad.square()[allowed] < fisher["1.bias"][allowed]).all()


def test_ewc_keeps_the_fisher_of_its_trained_model_per_experience():
    learner = build(EWC)
    train(learner, [0])
    model, mask = learner.model.eval(), learner.output_mask
    params = [p for p in model.parameters()]
    expected = [torch.zeros_like(p) for p in params]
    x, y = STREAM[0].train.tensors()
    for xi, yi in zip(x, y, strict=True):  # autograd, one example at a time
        log_likelihood = torch.log_softmax(model(xi[None]) + mask, 1)[0, yi]
        for total, g in zip(expected, torch.autograd.grad(log_likelihood, params), strict=True):
            total += g.square() / len(x)
    for (name, p), e in zip(model.named_parameters(), expected, strict=True):
        torch.testing.assert_close(learner.fishers[0][name], e, rtol=1e-4, atol=1e-9)
        assert torch.equal(learner.anchors[0][name], p.detach())
    assert mask[:2].eq(0).all() and mask[2:].eq(-math.inf).all()
    fisher_0 = {name: f.clone() for name, f in learner.fishers[0].items()}
    train(learner, [1])
    assert len(learner.fishers) == len(learner.anchors) == 2
    assert all(torch.equal(fisher_0[name], learner.fishers[0][name]) for name in fisher_0)


def test_fisher_of_a_batchnorm_network_is_per_example_in_eval_mode():
    model = Classifier(build_backbone("resnet18-reduced", (3, 8, 8)), 4)
    generator = torch.Generator().manual_seed(5)
    x, y = torch.randn(12, 3, 8, 8, generator=generator), torch.arange(12) % 4
    model.train()(x)  # running statistics away from their initial values
    fisher = empirical_fisher(model, ExperienceData(x, y, torch.arange(12)), torch.zeros(4), batch_size=5)
    assert not model.training
    params = list(model.parameters())
    expected = [torch.zeros_like(p) for p in params]
    for xi, yi in zip(x, y, strict=True):
        log_likelihood = torch.log_softmax(model(xi[None]), 1)[0, yi]
        for total, g in zip(expected, torch.autograd.grad(log_likelihood, params), strict=True):
            total += g.square() / len(x)
    for (name, _), e in zip(model.named_parameters(), expected, strict=True):
        torch.testing.assert_close(fisher[name], e, rtol=1e-4, atol=1e-10)


def test_ewc_penalty_by_hand():
    learner = EWC((1, 2, 2), "cpu", 3, ewc_lambda=3.0)
    n_params = (4 * 400 + 400) + (400 * 400 + 400) + (400 * 3 + 3)
    with torch.no_grad():
        for p in learner.model.parameters():
            p.fill_(1.0)
    names = [name for name, _ in learner.model.named_parameters()]
    learner.fishers = [{n: torch.full_like(p, f) for n, p in learner.model.named_parameters()} for f in (0.5, 2.0)]
    learner.anchors = [{n: torch.full_like(p, a) for n, p in learner.model.named_parameters()} for a in (0.0, 3.0)]
    assert len(names) == 6
    # (lambda / 2) * sum_k F_k (theta - anchor_k)^2 = 1.5 * (0.5 * 1 + 2 * 4) per parameter
    expected = 1.5 * 8.5 * n_params
    assert learner.penalty().item() == pytest.approx(expected, rel=1e-6)
    x, y = torch.zeros(2, 1, 2, 2), torch.tensor([0, 1])
    logits = learner.model(x)
    learner.output_mask = torch.zeros(3)
    torch.testing.assert_close(learner.loss(logits, x, y), F.cross_entropy(logits, y) + expected)
    # its gradient: lambda * sum_k F_k (theta - anchor_k) = 3 * (0.5 * 1 + 2 * (-2)) = -10.5
    learner.penalty().backward()
    assert all(torch.equal(p.grad, torch.full_like(p, -10.5)) for p in learner.model.parameters())


def test_online_ewc_keeps_one_running_fisher():
    learner = build(OnlineEWC, gamma=0.5)
    train(learner, [0])
    fisher_0 = {name: f.clone() for name, f in learner.fishers[0].items()}
    train(learner, [1])
    fisher_1 = empirical_fisher(learner.model, STREAM[1].train, learner.output_mask, FAST["batch_size"])
    assert len(learner.fishers) == len(learner.anchors) == 1
    for name, p in learner.model.named_parameters():
        torch.testing.assert_close(learner.fishers[0][name], 0.5 * fisher_0[name] + fisher_1[name])
        assert torch.equal(learner.anchors[0][name], p.detach())


# --- LwF ------------------------------------------------------------------------------------------

def test_distillation_loss_by_hand():
    student = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    teacher = torch.tensor([[3.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    t = 2.0

    def softmax(row):
        e = [math.exp(v / t) for v in row]
        return [v / sum(e) for v in e]

    kl = [sum(qc * math.log(qc / pc) for qc, pc in zip(softmax(tr), softmax(sr), strict=True))
          for sr, tr in zip(student.tolist(), teacher.tolist(), strict=True)]
    expected = t * t * sum(kl) / 2
    assert distillation_loss(student, teacher, t).item() == pytest.approx(expected, rel=1e-6)
    assert distillation_loss(teacher, teacher, t).item() == pytest.approx(0.0, abs=1e-7)


def test_lwf_distils_the_old_columns_of_a_frozen_teacher():
    learner = build(LwF, alpha=0.7, temperature=2.0)
    train(learner, [0])
    x, y = STREAM[1].train.take(slice(0, 12))
    before = learner.predict(x)
    assert learner.n_old == 2
    train(learner, [1])
    assert learner.n_old == learner.n_seen == 4
    assert torch.equal(learner.teacher(x), learner.model.eval()(x))  # consolidated at the end of experience 1
    learner = build(LwF, alpha=0.7, temperature=2.0)
    train(learner, [0])
    learner.see((2, 3))
    learner.fit(STREAM[1].train, (2, 3), context(1))  # train without consolidating: the teacher is experience 0's
    assert torch.equal(learner.teacher(x), before)
    logits = learner.model(x)
    q = torch.softmax(before[:, :2] / 2, 1)
    log_p = torch.log_softmax(logits[:, :2] / 2, 1)
    kd = 4 * (q * (q.log() - log_p)).sum(1).mean()
    torch.testing.assert_close(learner.loss(logits, x, y), F.cross_entropy(logits[:, :4], y) + 0.7 * kd)


def test_ewc_fisher_on_fisher_examples_uses_the_keyed_subset():
    learner = build(EWC, fisher_examples=5)
    train(learner, [0])
    data = STREAM[0].train
    chosen = torch.from_numpy(permutation(len(data), context(0).key("fisher"))[:5])
    subset = ExperienceData(data.images, data.labels, data.indices[chosen])
    expected = empirical_fisher(learner.model, subset, learner.output_mask, batch_size=4)
    everything = empirical_fisher(learner.model, data, learner.output_mask, batch_size=4)
    for name, value in learner.fishers[0].items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-10)
    assert any(not torch.allclose(learner.fishers[0][n], everything[n]) for n in everything)
    with pytest.raises(ValueError, match="fisher_examples"):
        build(EWC, fisher_examples=0)
