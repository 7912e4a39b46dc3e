"""Training state that belongs to the caller (the runner), not to the learner.

A trainable learner's ``fit(train_source, spec, context)`` reads its budget and its seed from a
:class:`TrainingContext`, resumes from ``context.load_checkpoint()``, calls
``context.save_checkpoint(state)`` whenever ``context.checkpoint_due(done)`` says so (every
``checkpoint_every`` episodes and at each validation), validates when ``context.validation_due``
says so, reports progress through ``context.progress_bar``, and returns a
:class:`TrainingRecord`. No learner writes resume code of its own: a context without a
checkpoint path simply never saves, and a checkpoint the context cannot use (unreadable,
truncated, not written by a context, or of a model with other parameter shapes) is set aside
with a one-line notice, so that ``load_checkpoint`` returns None and the training starts over.

Checkpoint files are written atomically (:func:`save_atomic`: a uniquely named temporary file
in the same folder, flushed to disk, then renamed into place), so a crash or a concurrent writer
never leaves a half-written checkpoint under the real name.

Units: episodes are counted from 1 (``done`` = episodes finished); seconds are wall time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from protobench.fewshot.atomic import write_atomic
from protobench.fewshot.progress import progress_bar

# save_checkpoint writes the learner's state with two keys added, which a state may not use: the
# format (this number) and the signature of the model it belongs to (TrainingContext.signature)
CHECKPOINT_FORMAT = 1
RESERVED_KEYS = ("checkpoint_format", "checkpoint_signature")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and says why, on one line."""


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` with :func:`protobench.fewshot.atomic.write_atomic`: readers see
    the old file or the new one, concurrent writers never collide, a failure leaves ``path`` as it was."""
    import torch

    write_atomic(path, lambda stream: torch.save(obj, stream))


def load_torch(path: str | Path, device: str = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` onto ``device``; :class:`CheckpointError` naming the
    file, on one line, when it cannot be read (empty, damaged, truncated, not a torch file, or a
    pickle of objects other than tensors and plain containers)."""
    import torch

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch.load raises many types (RuntimeError, UnpicklingError, EOFError, ...)
        raise CheckpointError(f"{path}: {_unreadable(Path(path), error)}") from error


def _unreadable(path: Path, error: Exception) -> str:
    """Why ``torch.load`` failed on ``path``, in a few words (torch's own messages run to a page,
    and their advice to pass ``weights_only=False`` is wrong for a file of unknown origin)."""
    text = str(error)
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if refused:
        return f"holds a pickled {refused.group(1)}, not plain weights (torch.load(weights_only=True) refuses it)"
    if path.is_file() and path.stat().st_size == 0:
        return "empty file"
    if "Weights only load failed" in text:
        return "damaged, truncated or not a torch file"
    first_sentence = one_line(error, 200).split(". ")[0].rstrip(".")
    return f"damaged, truncated or not a torch file ({first_sentence})"


def set_aside(path: str | Path) -> Path:
    """Rename ``path`` to ``<name>.corrupt-<UTC time>`` (with ``-N`` added if that exists) beside
    it, keeping it for inspection; return the new path."""
    path = Path(path)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    target, n = path.with_name(f"{path.name}.corrupt-{stamp}"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    path.replace(target)
    return target


def one_line(error: BaseException, limit: int = 160) -> str:
    """An exception's message on one line, at most ``limit`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def state_signature(state: Mapping) -> str:
    """``sha256:<hex>`` of a state dict's structure: its keys (nested), and each tensor's shape and
    dtype. Two states of the same model have the same signature whatever their values."""
    def describe(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(key): describe(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [describe(item) for item in value]
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            return [list(value.shape), str(value.dtype)]
        return type(value).__name__

    payload = json.dumps(describe(state), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass
class TrainingRecord:
    """What a training run did: episodes run, the episode whose weights were kept (chosen on
    validation, else the last), wall seconds without validation, and the curve (one dict per
    validation or checkpoint: episode, train_loss, lr, seconds, val_accuracy when validated)."""

    episodes: int
    selected_episode: int
    train_seconds: float
    curve: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainingContext:
    """The budget, seed, checkpointing, validation and progress of one training run.

    ``n_episodes``: training episodes; ``seed``: the key the training episodes are drawn with;
    ``device``: where the learner trains; ``validate(learner) -> accuracy`` (or None) runs every
    ``validate_every`` episodes and at the end; ``checkpoint_path`` (or None) is where resumable
    state is written every ``checkpoint_every`` episodes, atomically. ``signature`` (from
    :func:`state_signature` of the learner's initial ``state_dict()``, or None) is stored with
    each checkpoint, and a checkpoint saved under another signature is not resumed from.
    ``notice(line)`` reports a checkpoint set aside (default: print to standard error).
    """

    n_episodes: int
    seed: int
    device: str = "cpu"
    validate: Callable[[Any], float] | None = None
    validate_every: int = 500
    checkpoint_path: Path | None = None
    checkpoint_every: int = 100
    progress: bool = True
    description: str = "train"
    signature: str | None = None
    notice: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        for name in ("n_episodes", "validate_every", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainingContext.{name} must be a positive integer, got {value!r}")

    def validation_due(self, done: int) -> bool:
        """Whether to validate after ``done`` episodes (every ``validate_every``, and at the end)."""
        return self.validate is not None and (done % self.validate_every == 0 or done == self.n_episodes)

    def checkpoint_due(self, done: int) -> bool:
        """Whether to save resumable state after ``done`` episodes (every ``checkpoint_every``,
        at each validation, never after the last episode: the caller keeps the final weights)."""
        if self.checkpoint_path is None or done >= self.n_episodes:
            return False
        return done % self.checkpoint_every == 0 or self.validation_due(done)

    def load_checkpoint(self) -> dict | None:
        """The state saved by an interrupted run of this training, or None: when there is none, and
        when the file cannot be used (unreadable, truncated, not written by :meth:`save_checkpoint`,
        or saved under another ``signature``). An unusable file is set aside (:func:`set_aside`)
        with a one-line notice, and the training starts from episode 0."""
        if self.checkpoint_path is None or not Path(self.checkpoint_path).is_file():
            return None
        path = Path(self.checkpoint_path)
        try:
            saved = load_torch(path, self.device)
            problem = self._problem(saved)
        except CheckpointError as error:
            saved, problem = None, str(error).removeprefix(f"{path}: ")
        if problem is None:
            return {key: value for key, value in saved.items() if key not in RESERVED_KEYS}
        moved = set_aside(path)
        (self.notice or _print_to_stderr)(
            f"{path}: {problem}; set aside as {moved.name}, the training starts from episode 0")
        return None

    def _problem(self, saved: Any) -> str | None:
        """Why ``saved`` (a loaded checkpoint file) cannot be resumed from, or None."""
        if not isinstance(saved, dict) or saved.get("checkpoint_format") != CHECKPOINT_FORMAT:
            return f"not a training checkpoint (format {CHECKPOINT_FORMAT} expected)"
        if saved.get("checkpoint_signature") != self.signature:
            return "saved for a model with other parameters or shapes"
        return None

    def save_checkpoint(self, state: dict) -> None:
        """Write ``state`` to ``checkpoint_path`` atomically (:func:`save_atomic`), adding the keys
        ``checkpoint_format`` and ``checkpoint_signature`` (reserved: a state may not use them)."""
        if self.checkpoint_path is None:
            return
        reserved = sorted(set(state) & set(RESERVED_KEYS))
        if reserved:
            raise ValueError(f"a training state may not use the key(s) {', '.join(reserved)}: the context adds them")
        save_atomic({**state, "checkpoint_format": CHECKPOINT_FORMAT, "checkpoint_signature": self.signature},
                    self.checkpoint_path)

    def discard_checkpoint(self) -> None:
        """Remove the resumable state once the training has finished."""
        if self.checkpoint_path is not None:
            Path(self.checkpoint_path).unlink(missing_ok=True)

    def progress_bar(self, initial: int = 0):
        """A progress reporter over the training episodes, named by ``description``."""
        return progress_bar(self.n_episodes, self.description, "ep", initial=initial, enabled=self.progress)


def _print_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
