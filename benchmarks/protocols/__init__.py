"""Protocol kinds: each owns its suite settings, run units, evaluation and result body.

:func:`protocol_for` maps a suite's ``kind`` to its protocol object; the common runner
(:mod:`protobench.benchmarks.runner`) keeps only what every kind shares (resume, device,
processes, atomic writing, the summary).
"""

from __future__ import annotations

from protobench.benchmarks.protocols.continual import ContinualProtocol
from protobench.benchmarks.protocols.fewshot import FewShotProtocol

PROTOCOLS = {"fewshot": FewShotProtocol(), "continual": ContinualProtocol()}


def protocol_for(kind: str, where: str = "suite"):
    """The protocol of ``kind``; ValueError naming the known kinds otherwise."""
    if kind not in PROTOCOLS:
        raise ValueError(f"{where}: unknown kind {kind!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[kind]
