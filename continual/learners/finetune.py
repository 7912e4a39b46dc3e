"""Fine-tuning: the lower bound of continual learning.

The model is trained on each experience in turn with plain SGD and nothing else: no stored data,
no regulariser. In a class-incremental stream it forgets the earlier experiences almost entirely.
"""

from __future__ import annotations

from protobench.continual.learners.training import SGDLearner


class FineTune(SGDLearner):
    """Plain SGD on each experience in turn (:class:`SGDLearner` with nothing added).

    ``FineTune(input_shape, device, n_classes, *, backbone="mlp", epochs=1, batch_size=64, lr=0.01,
    momentum=0.0, weight_decay=0.0, augment=False, mask="seen")``.
    """

    version = "1"
