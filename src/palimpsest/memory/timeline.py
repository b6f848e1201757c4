"""A synthetic long-horizon timeline for forgetting policies: do rehearsed facts survive while old,
never-touched facts fade?

Simulated users state facts over simulated days ("Alice said the blue locker code is maple 41").
Some facts are rehearsed: the user brings them up again every `rehearse_every` days (a search with
limit 1 that recalls, and so reinforces, what it finds); the others are never touched again. A
forgetting pass runs at the end of each day. At the last day every fact is queried once more (without
reinforcement) and counted as recalled when it is in the top `k` of its user's memories:

  rehearsed_recall        facts that were rehearsed                         (a good policy: high)
  old_unrehearsed_recall  never-rehearsed facts at least `old_days` old     (a forgetting policy: low)
  recent_recall           never-rehearsed facts from the last `recent_days` (a useful memory: high)
  size                    memories per user at the end

Everything runs on a `SimulatedClock`, so sixty days take seconds.
"""
from __future__ import annotations

import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.config import Settings
from .clock import SimulatedClock

USERS = ["Alice", "Bruno", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Jola"]
QUALIFIERS = ["blue", "old", "secret", "spare", "weekend", "office", "garden", "travel", "winter", "backup",
              "favourite", "kitchen", "library", "gym", "night", "morning", "school", "family", "summer", "red"]
THINGS = ["locker code", "book", "song", "restaurant", "doctor", "bike", "password hint", "recipe", "plant",
          "film", "car", "coffee order", "tea", "dentist", "hotel", "cafe", "podcast", "game", "teacher", "trail"]
VALUES = ["maple", "cobalt", "juniper", "saffron", "harbor", "velvet", "quartz", "tundra", "lantern", "meadow",
          "orchid", "pebble", "falcon", "ember", "willow", "glacier", "canyon", "thistle", "copper", "nimbus"]


class TimelineSettings(Settings):
    users: int = 5
    days: int = 60
    facts_per_day: int = 2
    rehearse_fraction: float = 0.3
    rehearse_every: int = 5
    old_days: int = 30
    recent_days: int = 7
    k: int = 5
    seed: int = 0


@dataclass
class Fact:
    user: str
    day: int
    text: str
    query: str
    rehearsed: bool
    id: str = ""


def make_facts(s: TimelineSettings) -> list[Fact]:
    """The timeline's facts, in order of the day they are stated (seeded)."""
    rng = random.Random(s.seed)
    attributes = [f"{q} {t}" for q in QUALIFIERS for t in THINGS]
    facts = []
    for user in USERS[: s.users]:
        chosen = rng.sample(attributes, s.days * s.facts_per_day)
        for i, attribute in enumerate(chosen):
            value = f"{rng.choice(VALUES)} {rng.randrange(10, 100)}"
            facts.append(Fact(user, i // s.facts_per_day, f"{user} said the {attribute} is {value}.",
                              f"What is the {attribute} {user} mentioned?", rng.random() < s.rehearse_fraction))
    return sorted(facts, key=lambda f: (f.day, f.user))


def run_timeline(policy: str, policy_settings: dict | None = None, settings: TimelineSettings | None = None,
                 retriever: str = "hybrid", folder: str | Path | None = None) -> dict:
    """Play the timeline into a fresh store with `policy` and return the recalls (module docstring)."""
    from .store import MemoryStore
    s = settings or TimelineSettings()
    facts = make_facts(s)
    clock = SimulatedClock()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        store = MemoryStore(Path(tmp) / "timeline.sqlite", policy=policy, policy_settings=policy_settings or {},
                            clock=clock, retriever=retriever, synchronous="normal")
        by_day: dict[int, list[Fact]] = {}
        for f in facts:
            by_day.setdefault(f.day, []).append(f)
        for day in range(s.days):
            clock.set(day * 86400.0 + 9 * 3600.0)
            for f in by_day.get(day, []):
                f.id = store.add(f.text, user_id=f.user).id
            clock.set(day * 86400.0 + 18 * 3600.0)
            for f in facts:
                if f.rehearsed and f.day < day and (day - f.day) % s.rehearse_every == 0:
                    store.search(f.query, user_id=f.user, limit=1)
            clock.set(day * 86400.0 + 23 * 3600.0)
            store.forget()
        clock.set(s.days * 86400.0)
        found = {}
        for f in facts:
            hits = store.search(f.query, user_id=f.user, limit=s.k, reinforce=False)
            found[id(f)] = any(h.id == f.id for h in hits)
        size = len(store) / s.users
        store.close()

    def recall(group: list[Fact]) -> float:
        return sum(found[id(f)] for f in group) / len(group) if group else float("nan")

    last = s.days
    return {"policy": policy, "seed": s.seed,
            "rehearsed_recall": recall([f for f in facts if f.rehearsed]),
            "old_unrehearsed_recall": recall([f for f in facts if not f.rehearsed and last - f.day >= s.old_days]),
            "recent_recall": recall([f for f in facts if not f.rehearsed and last - f.day <= s.recent_days]),
            "size": size, "facts": len(facts), "seconds": time.perf_counter() - started}


__all__ = ["Fact", "TimelineSettings", "make_facts", "run_timeline"]
