"""A four-voter consensus gate of the original kind, for demos and benchmarks.

Voters ``safety``, ``alignment``, ``performance`` and ``cost`` each pass or veto a proposal;
the gate approves only when no voter vetoes. Every verdict is recorded before it is acted on,
and says in its subject that it is a demo record (``"demo": true``).
Tests: ``tests/test_cli.py`` (``rtrace demo``).
"""

from __future__ import annotations

import random

from .log import DecisionLog
from .record import Decision

__all__ = ["VOTERS", "gate_decision", "run_gate"]

VOTERS = ("safety", "alignment", "performance", "cost")
ACTIONS = ("upgrade_proposal", "upgrade_proposal", "model_promotion", "rollback", "halt")
GOALS = ("summarise", "plan", "code_review", "triage")
_REASONS = {
    "safety": ("no unsafe tool calls in eval", "jailbreak rate above threshold"),
    "alignment": ("goal adherence 0.97", "drifts from operator intent"),
    "performance": ("p95 latency within budget", "regression on held-out suite"),
    "cost": ("tokens per task down 8%", "cost per task up 30%"),
}


def gate_decision(rng: random.Random, n: int) -> dict[str, object]:
    """One proposal with its four votes, as keyword arguments for ``record``."""
    votes = {}
    for voter in VOTERS:
        passed = rng.random() > 0.12
        votes[voter] = {"passed": passed, "reason": _REASONS[voter][0 if passed else 1]}
    approved = all(v["passed"] for v in votes.values())
    vetoes = [name for name, v in votes.items() if not v["passed"]]
    return {
        "action": rng.choice(ACTIONS),
        "approved": approved,
        "votes": votes,
        "subject": {
            "agent_id": f"agent-{rng.randrange(1, 9)}",
            "prompt_id": f"p-{n:05d}",
            "goal_type": rng.choice(GOALS),
            "version": f"1.{rng.randrange(0, 20)}.{rng.randrange(0, 5)}",
            "demo": True,  # never mistaken for a real gate's decision
        },
        "reason": "unanimous" if approved else f"vetoed by {', '.join(vetoes)}",
    }


def run_gate(log: DecisionLog, count: int, *, seed: int | None = None) -> list[Decision]:
    """Record ``count`` gate decisions (fail closed: each must be durable before it counts)."""
    rng = random.Random(seed)
    return [log.record(**gate_decision(rng, n)) for n in range(count)]  # type: ignore[arg-type]
