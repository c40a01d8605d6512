"""ALFWorld-style household worlds: the vocabulary, seeded generation of one layout, and the dynamics.

The dynamics follow ALFWorld's own PDDL domain (``alfworld/data/alfred.pddl`` in the ``alfworld`` 0.4.2 wheel)
and its TextWorld command grammar (``alfred.twl2``: "go to", "open", "close", "take X from Y", "move X to Y",
"heat/clean/cool X with Y", "use X"):

* the agent starts in the middle of the room and must ``go to`` a receptacle before acting on it;
* ``take`` needs empty hands and, for an openable receptacle (fridge, microwave, cabinet, drawer, safe), an open
  one; ``move`` puts the held object in or on the receptacle the agent is at, under the same condition;
* ``clean`` needs a sinkbasin, ``heat`` a microwave, ``cool`` a fridge, each with the object held and the agent
  at it (as in the PDDL, not whether it is open); heating makes an object hot and not cool, cooling the reverse;
* ``use desklamp`` switches the lamp on or off where it stands (it cannot be carried).

Goals are ALFWorld's six task types, on object and receptacle *types* as in its PDDL problems: "put a clean mug
in cabinet" is met by any mug that is clean, in any cabinet. Only the properties a goal reads are tracked
(cleanliness of the target type in a clean task, temperature in heat and cool tasks): heating a distractor
changes nothing the goal or the text depends on, so it leaves the state as it was.

A state is a plain tuple (see ``Layout.start``), so the environment can enumerate and number all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TASK_TYPES = (
    "pick_and_place_simple",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "look_at_obj_in_light",
    "pick_two_obj_and_place",
)
OPENABLE = frozenset({"fridge", "microwave", "cabinet", "drawer", "safe"})
# Receptacle kinds that may appear more than once in a room (numbered "cabinet 1", "cabinet 2", ...).
REPEATABLE = frozenset({"cabinet", "drawer", "shelf", "countertop", "sidetable"})
# Object affordances as in ALFRED's object classes (the ones its clean / heat / cool tasks use).
CLEANABLE = frozenset(
    {"apple", "bowl", "butterknife", "cup", "dishsponge", "egg", "fork", "knife", "ladle", "lettuce", "mug"}
    | {"pan", "plate", "pot", "potato", "spatula", "spoon", "tomato"}
)
HEATABLE = frozenset({"apple", "bread", "cup", "egg", "mug", "plate", "potato", "tomato"})
COOLABLE = frozenset({"apple", "bowl", "bread", "cup", "egg", "lettuce", "mug", "pan", "plate", "pot", "potato"})
COOLABLE |= {"tomato", "winebottle"}


@dataclass(frozen=True)
class Room:
    kinds: tuple[str, ...]  # receptacle kinds that may be drawn
    places: tuple[str, ...]  # receptacle kinds a goal may name
    objects: tuple[str, ...]  # object types found here


ROOMS = {
    "kitchen": Room(
        ("cabinet", "drawer", "countertop", "diningtable", "shelf", "stoveburner", "coffeemachine", "garbagecan"),
        ("cabinet", "countertop", "diningtable", "shelf", "garbagecan", "drawer"),
        ("apple", "bowl", "bread", "butterknife", "cup", "egg", "fork", "knife", "lettuce", "mug", "pan", "plate")
        + ("pot", "potato", "spatula", "spoon", "tomato", "winebottle", "saltshaker", "peppershaker"),
    ),
    "bedroom": Room(
        ("bed", "desk", "dresser", "drawer", "shelf", "sidetable", "garbagecan", "safe"),
        ("bed", "desk", "dresser", "drawer", "shelf", "sidetable", "safe"),
        ("alarmclock", "book", "cd", "cellphone", "creditcard", "keychain", "pen", "pencil", "pillow", "mug"),
    ),
    "livingroom": Room(
        ("sofa", "armchair", "coffeetable", "sidetable", "drawer", "cabinet", "shelf", "garbagecan"),
        ("sofa", "armchair", "coffeetable", "sidetable", "drawer", "cabinet", "shelf"),
        ("remotecontrol", "keychain", "creditcard", "newspaper", "statue", "vase", "box", "watch", "book"),
    ),
}
LAMP_STANDS = ("desk", "sidetable", "dresser")  # where a desklamp stands (look_at_obj_in_light)
HELD = -1  # position of an object in the agent's hands
MIDDLE = -1  # the agent's location before its first "go to"
CLEAN, HOT, COLD = 1, 2, 4  # property bits of a tracked object


@dataclass(frozen=True)
class Layout:
    """One generated game: what is where, the goal, and which properties are tracked.

    A state is ``(agent, positions, opened, props, lamp_on)``: the receptacle index the agent is at (MIDDLE at the
    start), each object's receptacle index (HELD when carried), a bitmask of open receptacles, each object's
    property bits (0 for untracked objects) and whether the desklamp is on.
    """

    task_type: str
    room: str
    receptacles: tuple[str, ...]  # "countertop 1", ...
    kinds: tuple[str, ...]  # "countertop", ...
    objects: tuple[str, ...]  # "mug 1", ...
    types: tuple[str, ...]  # "mug", ...
    start_positions: tuple[int, ...]
    target: str  # the object type the goal names
    place: str  # the receptacle kind the goal names ("" for look_at_obj_in_light)
    lamp: int  # receptacle index the desklamp stands on, or -1
    tracked: tuple[int, ...]  # objects whose properties are tracked

    @property
    def start(self) -> tuple:
        return (MIDDLE, self.start_positions, 0, (0,) * len(self.objects), False)

    def goal_text(self) -> str:
        t, p = self.target, self.place
        return {
            "pick_and_place_simple": f"put some {t} on {p}.",
            "pick_clean_then_place_in_recep": f"put a clean {t} in {p}.",
            "pick_heat_then_place_in_recep": f"put a hot {t} in {p}.",
            "pick_cool_then_place_in_recep": f"put a cool {t} in {p}.",
            "look_at_obj_in_light": f"look at {t} under the desklamp.",
            "pick_two_obj_and_place": f"put two {t} in {p}.",
        }[self.task_type]

    def needed_property(self) -> int:
        return {
            "pick_clean_then_place_in_recep": CLEAN,
            "pick_heat_then_place_in_recep": HOT,
            "pick_cool_then_place_in_recep": COLD,
        }.get(self.task_type, 0)

    # --- goal ------------------------------------------------------------------------------------------------

    def won(self, state) -> bool:
        agent, pos, _, props, lamp_on = state
        targets = [i for i, t in enumerate(self.types) if t == self.target]
        if self.task_type == "look_at_obj_in_light":
            return lamp_on and agent == self.lamp and any(pos[i] == HELD for i in targets)
        need = self.needed_property()
        placed = [i for i in targets if pos[i] >= 0 and self.kinds[pos[i]] == self.place and props[i] & need == need]
        return len(placed) >= (2 if self.task_type == "pick_two_obj_and_place" else 1)

    # --- dynamics --------------------------------------------------------------------------------------------

    def transitions(self, state) -> list[tuple[str, tuple]]:
        """(command, next state) for every admissible command, in ALFWorld's wording."""
        agent, pos, opened, props, lamp_on = state
        out = [(f"go to {r}", (i, pos, opened, props, lamp_on)) for i, r in enumerate(self.receptacles) if i != agent]
        if agent == MIDDLE:
            return out
        here, kind = self.receptacles[agent], self.kinds[agent]
        is_open = bool(opened >> agent & 1)
        if kind in OPENABLE:
            verb = "close" if is_open else "open"
            out.append((f"{verb} {here}", (agent, pos, opened ^ (1 << agent), props, lamp_on)))
        reachable = kind not in OPENABLE or is_open
        held = next((i for i, p in enumerate(pos) if p == HELD), None)
        if held is None and reachable:
            for i, p in enumerate(pos):
                if p == agent:
                    moved = pos[:i] + (HELD,) + pos[i + 1 :]
                    out.append((f"take {self.objects[i]} from {here}", (agent, moved, opened, props, lamp_on)))
        if held is not None:
            name, kind_of = self.objects[held], self.types[held]
            if reachable:
                moved = pos[:held] + (agent,) + pos[held + 1 :]
                out.append((f"move {name} to {here}", (agent, moved, opened, props, lamp_on)))
            for verb, device, able, add, remove in (
                ("clean", "sinkbasin", CLEANABLE, CLEAN, 0),
                ("heat", "microwave", HEATABLE, HOT, COLD),
                ("cool", "fridge", COOLABLE, COLD, HOT),
            ):
                if kind == device and kind_of in able:
                    bits = props[held]
                    if held in self.tracked:
                        bits = (bits | add) & ~remove
                    new_props = props[:held] + (bits,) + props[held + 1 :]
                    out.append((f"{verb} {name} with {here}", (agent, pos, opened, new_props, lamp_on)))
        if agent == self.lamp:
            out.append(("use desklamp 1", (agent, pos, opened, props, not lamp_on)))
        return out

    # --- text ------------------------------------------------------------------------------------------------

    def _things(self, indices, props) -> str:
        words = []
        for i in indices:
            adjectives = [w for bit, w in ((CLEAN, "clean"), (HOT, "hot"), (COLD, "cool")) if props[i] & bit]
            words.append(f"a {self.objects[i]}" + (f" ({', '.join(adjectives)})" if adjectives else ""))
        return _listing(words)

    def describe(self, state) -> str:
        """ALFWorld's opening line, then what the agent sees where it stands and what it carries."""
        agent, pos, opened, props, lamp_on = state
        around = _listing([f"a {r}" for r in self.receptacles])
        if agent == MIDDLE:  # ALFWorld's opening observation, word for word
            lines = [f"You are in the middle of a room. Looking quickly around you, you see {around}."]
        else:
            lines = [f"In the room you see {around}."]
            here = self.receptacles[agent]
            inside = [i for i, p in enumerate(pos) if p == agent]
            contents = self._things(inside, props)
            if agent == self.lamp:
                lamp = f"a desklamp 1 ({'on' if lamp_on else 'off'})"
                contents = _listing([lamp] + ([contents] if inside else []))
            if self.kinds[agent] in OPENABLE and not opened >> agent & 1:
                lines.append(f"You are at the {here}. The {here} is closed.")
            elif self.kinds[agent] in OPENABLE:
                lines.append(f"You are at the {here}. The {here} is open. In it, you see {contents or 'nothing'}.")
            else:
                lines.append(f"You are at the {here}. On the {here}, you see {contents or 'nothing'}.")
        held = [i for i, p in enumerate(pos) if p == HELD]
        lines.append(f"You are carrying: {self._things(held, props)}." if held else "You are not carrying anything.")
        return "\n".join(lines)


def _listing(words: list[str]) -> str:
    """ALFWorld's list style: "a, b, and c"."""
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + ", and " + words[-1]


def generate(task_type: str, seed: int, layout: int, n_receptacles: int, n_distractors: int) -> Layout:
    """A seeded layout of ``task_type``: the receptacles the task needs plus random ones of its room (up to
    ``n_receptacles``), the target object(s) away from the goal's receptacles and ``n_distractors`` other objects."""
    rng = np.random.default_rng([seed, layout, TASK_TYPES.index(task_type)])
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    if task_type in (
        "pick_clean_then_place_in_recep",
        "pick_heat_then_place_in_recep",
        "pick_cool_then_place_in_recep",
    ):
        room = "kitchen"
    elif task_type == "look_at_obj_in_light":
        room = pick(("bedroom", "livingroom"))
    else:
        room = pick(tuple(ROOMS))
    spec = ROOMS[room]
    able = {
        "pick_clean_then_place_in_recep": CLEANABLE,
        "pick_heat_then_place_in_recep": HEATABLE,
        "pick_cool_then_place_in_recep": COOLABLE,
    }.get(task_type)
    target = pick(tuple(t for t in spec.objects if able is None or t in able))
    kinds: list[str] = []
    place = ""
    if task_type == "look_at_obj_in_light":
        kinds.append(pick(tuple(k for k in LAMP_STANDS if k in spec.kinds)))
    else:
        place = pick(spec.places)
        kinds.append(place)
    if room == "kitchen":  # a kitchen always has the appliances (clean/heat/cool tasks happen only in kitchens)
        kinds += [k for k in ("fridge", "sinkbasin", "microwave") if k not in kinds]
    while len(kinds) < n_receptacles:
        kind = pick(spec.kinds)
        if kind in REPEATABLE or kind not in kinds:
            kinds.append(kind)
    kinds.sort()
    names: list[str] = []
    counts: dict[str, int] = {}
    for k in kinds:
        counts[k] = counts.get(k, 0) + 1
        names.append(f"{k} {counts[k]}")
    lamp = -1
    if task_type == "look_at_obj_in_light":
        lamp = next(i for i, k in enumerate(kinds) if k in LAMP_STANDS)
    # Targets start away from every receptacle of the goal's kind, so no game starts won.
    away = [i for i, k in enumerate(kinds) if k != place]
    n_targets = 2 if task_type == "pick_two_obj_and_place" else 1
    types = [target] * n_targets
    others = [t for t in spec.objects if t != target]
    types += [others[int(i)] for i in rng.choice(len(others), size=min(n_distractors, len(others)), replace=False)]
    positions = [pick(away) for _ in range(n_targets)] + [int(rng.integers(len(kinds))) for _ in types[n_targets:]]
    objects: list[str] = []
    seen: dict[str, int] = {}
    for t in types:
        seen[t] = seen.get(t, 0) + 1
        objects.append(f"{t} {seen[t]}")
    tracked = tuple(i for i, t in enumerate(types) if t == target) if able is not None else ()
    return Layout(
        task_type=task_type,
        room=room,
        receptacles=tuple(names),
        kinds=tuple(kinds),
        objects=tuple(objects),
        types=tuple(types),
        start_positions=tuple(positions),
        target=target,
        place=place,
        lamp=lamp,
        tracked=tracked,
    )
