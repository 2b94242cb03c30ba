"""The global random generators' state, handed from step to step in notebook order.

The rule (issue 25, item 1): in a notebook that seeds a global generator (numpy's legacy
RandomState, Python's `random`, torch's default generator; see notebook.randomness), each
step starts from the state the step before it in the notebook left, as in one kernel run top
to bottom, although every step re-runs the imports cell (and its seed). The state is an
implicit input: an artifact (RANDOM_STATE) the earlier step saves and the next one loads
after its own set-up, so it is fingerprinted, tracked by DVC and a Ploomber product like any
other. Where a step must run before the step that precedes it in the notebook (a `prev:` tag
or a file pointing forward), it cannot continue that sequence: compile warns, naming both.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

RANDOM_STATE = "_mlops_nb_random"  # the artifact's name; never a name a notebook binds


def _ancestors(name: str, drafts: dict[str, Any]) -> set[str]:
    seen: set[str] = set()
    queue = [name]
    while queue:
        for u in drafts[queue.pop()].upstream:
            if u not in seen and u in drafts:
                seen.add(u)
                queue.append(u)
    return seen


def chain(order: list[Any], drafts: dict[str, Any], notebook: str) -> None:
    """Make each draft of `order` (one notebook's steps, in notebook order) load the random
    state the one before it saves. Drafts have .name, .inputs, .outputs, .upstream."""
    before = None
    for d in order:
        if before is not None:
            if d.name in _ancestors(before.name, drafts):
                log.warning(
                    "%s: step '%s' runs before step '%s' (a 'prev:' tag or a file it writes"
                    " points forward), so it cannot continue the seeded global random"
                    " sequence '%s' leaves in a top-to-bottom run: its draws from"
                    " np.random, random or torch may differ from the notebook's; seed in"
                    " the step itself or use a generator object"
                    " (np.random.default_rng(seed))", notebook, d.name, before.name,
                    before.name)
            else:
                d.inputs[RANDOM_STATE] = before.name
                d.upstream.add(before.name)
                before.outputs.add(RANDOM_STATE)
        before = d
