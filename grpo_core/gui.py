"""GUI control, text first: procedurally generated app screens shown as an accessibility tree.

An app is built from a spec (kind, fold, seed: :func:`build_app`), deterministically, so a
problem's meta fixes its app and an env rebuilds it on every reset. Four kinds:

- ``settings``: toggles (value on / off) and one text field;
- ``form``: text fields and a Submit button (Submit records the values: ``sent:<field>``);
- ``list``: selectable items, more than fit on the screen (``scroll(up|down)`` moves the
  visible window);
- ``files``: a file manager (folders open on click, a Back button, files open on click:
  ``opened``).

The screen is an accessibility tree, one element a line::

    Screen: Settings
    [1] toggle Wi-Fi: off
    [2] text Device name: ""
    Showing 1-2 of 2

Actions (the first line of the policy's turn): ``click(id)``, ``type(id, "text")``,
``scroll(up)`` / ``scroll(down)``, ``done``. :func:`parse_action` returns an :class:`Action`
or a :class:`Bad` (unparseable, too long, empty); :meth:`App.apply` refuses an unknown id, an
element off the screen, typing into a non-text element or a text over the cap (a :class:`Bad`
too). Nothing here raises on model output.

The app's state is a flat dict (``App.state()``: toggle / field / item label -> value,
``sent:<field>``, ``opened``, ``folder``); a task's goal is a sub-dict of it, and
:func:`state_diff` is what changed (the world state a judge reads).

Folds: ``train`` / ``test`` / ``novel`` draw labels from disjoint vocabularies and layouts
from different ranges (the number of elements, where the text field sits), so held-out apps
are unseen layouts with unseen labels. Imports nothing of the project but errors.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from grpo_core.errors import BadAction, UserError

KINDS = ("settings", "form", "list", "files")
FOLDS = ("train", "test", "novel")

# disjoint label vocabularies per fold (held-out: unseen labels)
_TOGGLES = {
    "train": ["Wi-Fi", "Bluetooth", "Dark mode", "Airplane mode", "Location", "Sync", "Hotspot",
              "Vibration"],
    "test": ["NFC", "Night light", "Auto rotate", "Battery saver", "Do not disturb",
             "Data saver", "Hot corners"],
    "novel": ["Cast", "Roaming", "Captions", "Haptics", "Screen lock", "Auto brightness",
              "Backup"],
}  # fmt: skip
_TEXTS = {
    "train": ["Device name", "Username", "Hostname"],
    "test": ["Nickname", "Display name", "Label"],
    "novel": ["Alias", "Owner", "Tag"],
}
_FIELDS = {
    "train": ["Name", "Email", "City", "Phone", "Company"],
    "test": ["Country", "Street", "Title", "Website"],
    "novel": ["Team", "Role", "Zip", "Office"],
}
_ITEMS = {
    "train": ["Apple", "Banana", "Cherry", "Grape", "Lemon", "Mango", "Melon", "Peach", "Pear",
              "Plum", "Kiwi", "Lime", "Fig", "Date"],
    "test": ["Amber", "Coral", "Ivory", "Olive", "Navy", "Teal", "Cyan", "Rose", "Sand", "Jade",
             "Ruby", "Pearl", "Onyx", "Slate"],
    "novel": ["Otter", "Llama", "Bison", "Koala", "Panda", "Moose", "Zebra", "Tiger", "Horse",
              "Eagle", "Raven", "Shark", "Whale", "Camel"],
}  # fmt: skip
_FOLDERS = {
    "train": ["docs", "photos", "music", "work", "games"],
    "test": ["notes", "videos", "backup", "school", "recipes"],
    "novel": ["travel", "taxes", "drafts", "art", "code"],
}
_FILES = {
    "train": ["report.txt", "plan.txt", "song.mp3", "cat.png", "budget.csv", "todo.md"],
    "test": ["essay.doc", "clip.mp4", "menu.pdf", "map.png", "list.csv", "readme.md"],
    "novel": ["trip.txt", "form.pdf", "sketch.png", "main.py", "data.json", "memo.doc"],
}
_TITLES = {
    "settings": {"train": "Settings", "test": "Preferences", "novel": "Control panel"},
    "form": {"train": "Sign up", "test": "Contact form", "novel": "Profile editor"},
    "list": {"train": "Fruit list", "test": "Palette", "novel": "Zoo"},
    "files": {"train": "Files", "test": "Explorer", "novel": "Finder"},
}
# layouts per fold: element counts, where the text field sits (first / last / middle), the
# list's window, a Cancel button; held-out apps have layouts no train app has (the text field
# in the middle, a Cancel button, more elements, a taller list window)
_LAYOUT = {
    "train": {"toggles": (2, 4), "text_at": ("first", "last"), "fields": (2, 3), "items": (7, 10),
              "window": 4, "folders": (2, 3), "files": (2, 3), "cancel": False},
    "test": {"toggles": (3, 5), "text_at": ("middle",), "fields": (3, 4), "items": (9, 12),
             "window": 5, "folders": (3, 4), "files": (2, 4), "cancel": True},
    "novel": {"toggles": (3, 5), "text_at": ("first", "middle"), "fields": (3, 4),
              "items": (9, 12), "window": 5, "folders": (3, 4), "files": (2, 4), "cancel": True},
}  # fmt: skip
_SYL = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "be", "da")
_EXTS = (".txt", ".png", ".pdf", ".csv")


def _made_up_words() -> dict[str, list[str]]:
    """Two-syllable made-up words ("Vomi"), split into the folds by a hash of the word (test:
    1 in 6, novel: 1 in 6, train: the rest): labels no other fold has, from the same syllables
    (so a tokenizer fitted to the train text splits a held-out label into known pieces)."""
    import zlib

    cons, vows = "bdfgklmnprstvz", "aeiou"
    sy = [c + v for c in cons for v in vows]
    named = {
        w.split(".")[0].lower()
        for pools in (_TOGGLES, _TEXTS, _FIELDS, _ITEMS, _FOLDERS, _FILES)
        for ws in pools.values()
        for w in ws
    }
    out: dict[str, list[str]] = {f: [] for f in FOLDS}
    for a in sy:
        for b in sy:
            w = (a + b).capitalize()
            if w.lower() in named:  # a named label ("Date", "Lime") stays in its own fold
                continue
            h = zlib.crc32(w.encode()) % 6
            out["test" if h == 0 else "novel" if h == 1 else "train"].append(w)
    return out


_WORDS = _made_up_words()


def _labels(rng: random.Random, fold: str, named: list[str], n: int) -> list[str]:
    """``n`` distinct labels: each a named one (``named``, the fold's real-looking labels) or a
    made-up word of the fold, half and half."""
    out: list[str] = []
    while len(out) < n:
        pool = named if rng.random() < 0.5 else _WORDS[fold]
        w = rng.choice(pool)
        if w not in out:
            out.append(w)
    return out


FORMAT = 'click(id), type(id, "text"), scroll(up), scroll(down), done'


def value_text(rng: random.Random) -> str:
    """A short made-up value to type ("kamo-3")."""
    return rng.choice(_SYL) + rng.choice(_SYL) + "-" + str(rng.randint(1, 9))


@dataclass
class Element:
    role: str  # toggle | text | button | item | folder | file
    label: str
    value: str | None = None  # toggle: on/off; text: the text; item: selected/unselected

    def line(self, i: int) -> str:
        if self.role == "text":
            return f'[{i}] text {self.label}: "{self.value}"'
        if self.value is None:
            return f"[{i}] {self.role} {self.label}"
        return f"[{i}] {self.role} {self.label}: {self.value}"


@dataclass
class Action:
    kind: str  # click | type | scroll | done
    id: int | None = None
    text: str | None = None
    direction: str | None = None


# Bad kinds here: empty | too_long | unparseable | unknown_id | not_visible | not_text | text_too_long
Bad = BadAction


_CLICK = re.compile(r"click\(\s*([0-9]+)\s*\)")
_TYPE = re.compile(r'type\(\s*([0-9]+)\s*,\s*"([^"\n]*)"\s*\)')
_SCROLL = re.compile(r"scroll\(\s*(up|down)\s*\)")


def parse_action(text: str, max_chars: int) -> Action | Bad:
    """The first line of ``text`` as an action; a :class:`Bad` saying what was wrong."""
    lines = str(text).strip().splitlines()
    line = lines[0].strip() if lines else ""
    if not line:
        return Bad("empty", f"empty action; write one action: {FORMAT}")
    if len(line) > max_chars:
        return Bad(
            "too_long",
            f"action too long ({len(line)} characters, at most {max_chars}); one action: {FORMAT}",
        )
    if line in ("done", "done()"):
        return Action("done")
    if m := _CLICK.fullmatch(line):
        return Action("click", id=int(m[1]))
    if m := _TYPE.fullmatch(line):
        return Action("type", id=int(m[1]), text=m[2])
    if m := _SCROLL.fullmatch(line):
        return Action("scroll", direction=m[1])
    shown = line if len(line) <= 40 else line[:37] + "..."
    return Bad("unparseable", f"cannot parse {shown!r}; write one action: {FORMAT}")


@dataclass
class App:
    """One app's screens and state. ``elements``: the current screen's elements in order
    (ids 1..n); ``top``: the first visible index (scrolling); ``window``: how many fit."""

    kind: str
    fold: str
    title: str
    elements: list[Element]
    window: int
    tree: dict = field(default_factory=dict)  # files: folder path -> (subfolders, files)
    path: str = ""  # files: the open folder ("" = root)
    opened: str = ""  # files: the opened file's path
    sent: dict = field(default_factory=dict)  # form: the values at Submit
    top: int = 0

    # ------------------------------------------------------------------ screen
    def visible(self) -> range:
        return range(self.top, min(self.top + self.window, len(self.elements)))

    def screen(self) -> str:
        head = f"Screen: {self.title}" + (f" /{self.path}" if self.kind == "files" else "")
        rows = [head] + [self.elements[i].line(i + 1) for i in self.visible()]
        vis = self.visible()
        n = len(self.elements)
        rows.append(f"Showing {vis.start + 1}-{vis.stop} of {n}" if n else "Showing 0 of 0")
        return "\n".join(rows)

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, str]:
        s: dict[str, str] = {}
        if self.kind == "files":
            s["folder"] = self.path
            s["opened"] = self.opened
            return s
        for e in self.elements:
            if e.role in ("toggle", "text", "item"):
                s[e.label] = str(e.value)
        for k, v in self.sent.items():
            s[f"sent:{k}"] = v
        return s

    # ------------------------------------------------------------------ actions
    def _element(self, i: int | None) -> Element | Bad:
        n = len(self.elements)
        if i is None or not 1 <= i <= n:
            return Bad("unknown_id", f"no element [{i}] on this screen (ids 1-{n}); {FORMAT}")
        if i - 1 not in self.visible():
            vis = self.visible()
            way = "down" if i - 1 >= vis.stop else "up"
            return Bad(
                "not_visible",
                f"element [{i}] is not on the screen (showing {vis.start + 1}-{vis.stop}); "
                f"scroll({way}) to see it",
            )
        return self.elements[i - 1]

    def apply(self, act: Action, max_text: int) -> tuple[str, Bad | None]:
        """Apply a parsed action (not ``done``); (a status line, the refusal or None)."""
        if act.kind == "scroll":
            n = len(self.elements)
            old = self.top
            step = max(1, self.window - 1)
            if act.direction == "down":
                self.top = max(0, min(self.top + step, n - self.window))
            else:
                self.top = max(0, self.top - step)
            if self.top == old:
                return (
                    f"cannot scroll {act.direction}: already at the {'end' if act.direction == 'down' else 'top'}",
                    None,
                )
            return f"scrolled {act.direction}", None
        el = self._element(act.id)
        if isinstance(el, Bad):
            return el.message, el
        if act.kind == "type":
            if el.role != "text":
                bad = Bad(
                    "not_text",
                    f"[{act.id}] is a {el.role}, not a text field; type only into text "
                    "elements, click others",
                )
                return bad.message, bad
            if len(act.text or "") > max_text:
                bad = Bad(
                    "text_too_long",
                    f"text too long ({len(act.text)} characters, at most {max_text})",
                )
                return bad.message, bad
            el.value = act.text
            return f"typed into [{act.id}]", None
        # click
        if el.role == "toggle":
            el.value = "off" if el.value == "on" else "on"
            return f"[{act.id}] {el.label} is {el.value}", None
        if el.role == "item":
            el.value = "unselected" if el.value == "selected" else "selected"
            return f"[{act.id}] {el.label} {el.value}", None
        if el.role == "text":
            return f'[{act.id}] focused; write into it with type({act.id}, "text")', None
        if el.role == "button" and el.label == "Submit":
            self.sent = {e.label: str(e.value) for e in self.elements if e.role == "text"}
            return "form submitted", None
        if el.role == "button" and el.label == "Cancel":
            for e in self.elements:
                if e.role == "text":
                    e.value = ""
            return "form cleared", None
        if el.role == "button" and el.label == "Back":
            self._open(self.path.rsplit("/", 1)[0] if "/" in self.path else "")
            return "went back", None
        if el.role == "folder":
            self._open(f"{self.path}/{el.label}" if self.path else el.label)
            return f"opened folder {el.label}", None
        if el.role == "file":
            self.opened = f"{self.path}/{el.label}" if self.path else el.label
            return f"opened {self.opened}", None
        return f"clicked [{act.id}]", None

    def _open(self, path: str) -> None:
        self.path, self.top = path, 0
        subs, files = self.tree[path]
        els = [Element("button", "Back")] if path else []
        els += [Element("folder", s) for s in subs] + [Element("file", f) for f in files]
        self.elements = els


def state_diff(before: dict, after: dict) -> list[list]:
    """What changed: [key, before, after] per key whose value differs, sorted by key."""
    keys = sorted(set(before) | set(after))
    return [[k, before.get(k), after.get(k)] for k in keys if before.get(k) != after.get(k)]


def goal_met(goal: dict, state: dict) -> bool:
    return all(state.get(k) == v for k, v in goal.items())


# ---------------------------------------------------------------------------- generation


def build_app(kind: str, fold: str, seed: int) -> App:
    """The app of (kind, fold, seed), always the same one."""
    if kind not in KINDS:
        raise UserError(f"gui app kind {kind!r}: want one of {list(KINDS)}")
    if fold not in FOLDS:
        raise UserError(f"gui fold {fold!r}: want one of {list(FOLDS)}")
    rng = random.Random(f"gui:{kind}:{fold}:{seed}")
    lay = _LAYOUT[fold]
    title = _TITLES[kind][fold]
    if kind == "settings":
        toggles = _labels(rng, fold, _TOGGLES[fold], rng.randint(*lay["toggles"]))
        els = [Element("toggle", t, rng.choice(["on", "off"])) for t in toggles]
        label = _labels(rng, fold, _TEXTS[fold], 1)[0]
        while label in toggles:
            label = _labels(rng, fold, _TEXTS[fold], 1)[0]
        text = Element("text", label, value_text(rng))
        at = rng.choice(lay["text_at"])
        k = {"first": 0, "last": len(els), "middle": max(1, len(els) // 2)}[at]
        els.insert(k, text)
        return App(kind, fold, title, els, window=len(els))
    if kind == "form":
        fields = _labels(rng, fold, _FIELDS[fold], rng.randint(*lay["fields"]))
        els = [Element("text", f, "") for f in fields] + [Element("button", "Submit")]
        if lay["cancel"]:
            els.append(Element("button", "Cancel"))
        return App(kind, fold, title, els, window=len(els))
    if kind == "list":
        items = _labels(rng, fold, _ITEMS[fold], rng.randint(*lay["items"]))
        els = [Element("item", t, "unselected") for t in items]
        return App(kind, fold, title, els, window=lay["window"])
    # files
    n_f = rng.randint(*lay["folders"])
    dirs = [
        w.lower() for w in _labels(rng, fold, [x.capitalize() for x in _FOLDERS[fold]], n_f + 4)
    ]
    folders, spare = dirs[:n_f], dirs[n_f:]

    def files(k: int) -> list[str]:
        named = [x.split(".")[0].capitalize() for x in _FILES[fold]]
        return sorted(w.lower() + rng.choice(_EXTS) for w in _labels(rng, fold, named, k))

    tree: dict[str, tuple[list[str], list[str]]] = {"": (folders, [])}
    for f in folders:
        subs = []
        if rng.random() < 0.5:
            sub = spare.pop()
            subs = [sub]
            tree[f"{f}/{sub}"] = ([], files(rng.randint(*lay["files"])))
        tree[f] = (subs, files(rng.randint(*lay["files"])))
    app = App(kind, fold, title, [], window=6, tree=tree)
    app._open("")
    return app


def make_goal(app: App, level: int, rng: random.Random) -> tuple[str, dict[str, str]]:
    """An instruction and its goal (a sub-dict of the final state) of ``level`` sub-goals on
    ``app`` (fresh from :func:`build_app`)."""
    if app.kind == "settings":
        toggles = [e for e in app.elements if e.role == "toggle"]
        text = next(e for e in app.elements if e.role == "text")
        # level 1: one toggle; 2: two toggles, or a toggle and the text; 3: two and the text
        with_text = level >= 3 or (level == 2 and rng.random() < 0.5)
        n_t = min(len(toggles), 1 if level == 1 or (level == 2 and with_text) else 2)
        picks = rng.sample(toggles, n_t)
        goal, parts = {}, []
        for e in picks:
            want = "off" if e.value == "on" else "on"  # always a change
            goal[e.label] = want
            parts.append(f"turn {want} {e.label}")
        if with_text:
            v = value_text(rng)
            goal[text.label] = v
            parts.append(f"set {text.label} to {v}")
        return " and ".join(parts), goal
    if app.kind == "form":
        fields = [e for e in app.elements if e.role == "text"]
        picks = rng.sample(fields, min(len(fields), level))
        goal, parts = {}, []
        for e in picks:
            v = value_text(rng)
            goal[f"sent:{e.label}"] = v
            parts.append(f"fill {e.label} with {v}")
        return " and ".join(parts) + " and submit", goal
    if app.kind == "list":
        items = app.elements
        # at least one item off the first screen
        off = [e for e in items[app.window :]]
        picks = [rng.choice(off)]
        rest = [e for e in items if e is not picks[0]]
        if level >= 2:
            picks.append(rng.choice(rest))
        picks.sort(key=items.index)
        goal = {e.label: "selected" for e in picks}
        return "select " + " and ".join(e.label for e in picks), goal
    # files: level 1 a file in a top folder, level >= 2 in a subfolder where there is one
    deep = [p for p in app.tree if p.count("/") == 1]
    tops = [p for p in app.tree if p and "/" not in p]
    where = rng.choice(deep) if level >= 2 and deep else rng.choice(tops)
    f = rng.choice(app.tree[where][1])
    path = f"{where}/{f}"
    return f"open {path}", {"opened": path}


def gold_actions(app: App, goal: dict[str, str]) -> list[str]:
    """Actions that reach ``goal`` from ``app``'s first screen, then ``done`` (played on a copy
    of the app's logic: the ids are those the env will show)."""
    import copy

    a = copy.deepcopy(app)
    out: list[str] = []

    def do(s: str) -> None:
        act = parse_action(s, 10_000)
        assert isinstance(act, Action), s
        _, bad = a.apply(act, 10_000)
        assert bad is None, (s, bad)
        out.append(s)

    if a.kind == "settings":
        for i, e in enumerate(a.elements):
            if e.label in goal and e.role == "toggle" and e.value != goal[e.label]:
                do(f"click({i + 1})")
        for i, e in enumerate(a.elements):
            if e.label in goal and e.role == "text":
                do(f'type({i + 1}, "{goal[e.label]}")')
    elif a.kind == "form":
        for i, e in enumerate(a.elements):
            if f"sent:{e.label}" in goal:
                do(f'type({i + 1}, "{goal["sent:" + e.label]}")')
        do(f"click({next(i for i, e in enumerate(a.elements) if e.label == 'Submit') + 1})")
    elif a.kind == "list":
        for i, e in enumerate(a.elements):
            if e.label in goal:
                while i not in a.visible():
                    do("scroll(down)")
                do(f"click({i + 1})")
    else:
        parts = goal["opened"].split("/")
        for name in parts:
            i = next(j for j, e in enumerate(a.elements) if e.label == name)
            do(f"click({i + 1})")
    out.append("done")
    if not goal_met(goal, a.state()):
        raise AssertionError(f"gold actions miss the goal {goal}: {a.state()}")
    return out
