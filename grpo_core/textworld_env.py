"""TextWorld (the ``textworld`` package, 1.7): games generated offline by its generator (what
``tw-make`` runs), cached as compiled Z-machine files, played through its Jericho (frotz)
backend. The task ``tw_games`` (grpo_core.tasks) generates and lists games through it, the env
``textworld`` (grpo_core.episodes) plays them.

Families (``GameSpec.family``):

- ``simple``: ``tw-make custom``'s games (``textworld.generator.make_game``): ``world_size``
  rooms, ``nb_objects`` objects, a quest of ``quest_length`` actions (go / open / take / put /
  close ...), one point for the quest.
- ``cooking``: ``tw-make tw-cooking``'s household task (``textworld.challenges.tw_cooking``,
  the ALFWorld-like family made offline): read the cookbook, gather ``quest_length``
  ingredients (``nb_objects`` of them to take from containers), optionally cut / cook them,
  prepare and eat the meal; ``world_size`` maps to the package's room counts 1 / 6 / 9 / 12. The
  package's own ``split`` (train / test ingredient sets) follows the game's split.
- ``alfworld``: ALFWorld's games (``.tw-pddl`` files of its ``json_2.1.1`` data, a download:
  never fetched here), read from a local directory (:func:`alfworld_games`); playing them needs
  TextWorld's PDDL backend (the ``fast-downward-textworld`` package, not installed here).

A generated game is cached under ``games_dir/<key>/<name>.z8`` with ``<name>.meta.json`` (the
walkthrough, objective, max score, the package's game id) next to it; generation writes into a
temporary directory and renames, under a file lock, so concurrent processes (seeds run side by
side) share one copy. Generating takes ~10 s per game plus ~13 s to compile (inform7) on a
loaded 2-core CPU, and ~35 s once per process to load the generator's knowledge base; a cached
game starts in ~0.3 s and steps in a few milliseconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from grpo_core.errors import UserError

FAMILIES = ("simple", "cooking", "alfworld")
# seed ranges of the splits: train games draw seeds from [0, TEST_SEED0), test games from
# [TEST_SEED0, ...): a test game is never a train game's seed
TEST_SEED0 = 1_000_000
COOKING_ROOMS = (1, 6, 9, 12)  # tw_cooking's --go choices
META_VERSION = 1


def require_textworld():
    try:
        import textworld  # noqa: F401
    except ImportError as e:
        raise UserError(
            f"TextWorld (task tw_games, env textworld) needs the package textworld==1.7.0 (a "
            f"dependency of this project: pip install 'textworld==1.7.0'; it builds jericho): {e}"
        ) from None
    import textworld

    return textworld


@dataclass(frozen=True)
class GameSpec:
    """One generated game: its family, sizes, split and seed (the game's whole identity)."""

    family: str
    world_size: int
    nb_objects: int
    quest_length: int
    split: str  # train | test (cooking: the package's ingredient split)
    seed: int
    cook: bool = False  # cooking only: recipes need cooking / cutting
    cut: bool = False

    def __post_init__(self):
        if self.family not in ("simple", "cooking"):
            raise UserError(
                f"TextWorld family {self.family!r} cannot be generated: want simple or cooking "
                "(alfworld games are read from task.params.alfworld_dir)"
            )
        if self.split not in ("train", "test"):
            raise UserError(f"TextWorld split {self.split!r}: want train or test")

    @property
    def key(self) -> str:
        k = f"{self.family}-w{self.world_size}-o{self.nb_objects}-q{self.quest_length}"
        if self.family == "cooking":
            k += f"-c{int(self.cook)}{int(self.cut)}"
        return k

    @property
    def name(self) -> str:
        return f"{self.split}-s{self.seed}"


def games_root(games_dir: str) -> Path:
    """``games_dir`` (task.params.games_dir) as a directory: a relative one is under
    $GRPO_ROOT when set, else the current directory (the workflow runs in the checkout)."""
    d = Path(games_dir).expanduser()
    return d if d.is_absolute() else Path(os.environ.get("GRPO_ROOT") or os.getcwd()) / d


def game_file(spec: GameSpec, root: str | Path) -> Path:
    return Path(root) / spec.key / f"{spec.name}.z8"


def _cooking_settings(spec: GameSpec) -> dict:
    go = next((g for g in COOKING_ROOMS if g >= spec.world_size), COOKING_ROOMS[-1])
    recipe = max(1, min(5, spec.quest_length))
    return {
        "recipe": recipe,
        "take": max(0, min(recipe, spec.nb_objects)),
        "go": go,
        "open": True,
        "cook": spec.cook,
        "cut": spec.cut,
        "drop": False,
        "recipe_seed": spec.seed,
        "split": "train" if spec.split == "train" else "test",
    }


def _make_game(spec: GameSpec):
    textworld = require_textworld()
    from textworld.generator import make_game

    opts = textworld.GameOptions()
    opts.seeds = int(spec.seed)
    if spec.family == "simple":
        opts.nb_rooms = spec.world_size
        opts.nb_objects = spec.nb_objects
        opts.quest_length = spec.quest_length
        return make_game(opts), opts
    from textworld.challenges.tw_cooking import cooking

    return cooking.make(_cooking_settings(spec), opts), opts


def generate(spec: GameSpec, root: str | Path) -> dict:
    """The cached game of ``spec`` under ``root`` (generated and compiled when missing): its
    meta (path, walkthrough, objective, max_score, game_id, spec)."""
    path = game_file(spec, root)
    meta_path = path.with_suffix(".meta.json")
    if meta_path.is_file() and path.is_file():
        return _read_meta(meta_path, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(path.parent / f".{spec.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if meta_path.is_file() and path.is_file():  # another process made it meanwhile
            return _read_meta(meta_path, path)
        from textworld.generator import compile_game

        game, opts = _make_game(spec)
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=path.parent))
        try:
            opts.path = str(tmp / path.name)
            opts.force_recompile = True
            try:
                compile_game(game, opts)
            except Exception as e:  # noqa: BLE001 (inform7 failed: name it)
                raise UserError(
                    f"TextWorld: compiling {spec} failed: {type(e).__name__}: {e}"
                ) from None
            walk = list(game.walkthrough or [])
            objective, first, _ = _check_walkthrough(str(tmp / path.name), walk, spec)
            meta = {
                "version": META_VERSION,
                "spec": asdict(spec),
                "walkthrough": walk,
                "objective": objective,
                "first": first,
                "max_score": float(game.max_score),
                "game_id": str(game.metadata.get("uuid", "")),
            }
            os.replace(tmp / path.name, path)
            js = tmp / path.with_suffix(".json").name  # the game's own json (its state graph)
            if js.is_file():
                os.replace(js, path.with_suffix(".json"))
            meta_tmp = tmp / meta_path.name
            meta_tmp.write_text(json.dumps(meta, indent=1))
            os.replace(meta_tmp, meta_path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _read_meta(meta_path, path)


def _check_walkthrough(path: str, walk: list[str], spec: GameSpec) -> tuple[str, str, bool]:
    """(objective, first observation) of a freshly compiled game, after checking that its
    walkthrough wins it (the gold path SFT teaches)."""
    g = TwGame(path)
    try:
        objective, out = g.reset()
        first = out.observation
        for a in walk:
            out = g.step(a)
            if out.done:
                break
    finally:
        g.close()
    if not out.won:
        raise UserError(f"TextWorld {spec}: the generator's walkthrough {walk} does not win")
    return objective, first, True


def _read_meta(meta_path: Path, path: Path) -> dict:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(
            f"TextWorld game meta {meta_path} is unreadable ({e}); delete it and its game file "
            "to regenerate"
        ) from None
    return {**meta, "path": str(path)}


def alfworld_games(directory: str | None, split_dir: str) -> list[Path]:
    """ALFWorld's games of one split (``<directory>/<split_dir>/**/*.tw-pddl``, sorted): the
    data is a download (ALFWorld's ``alfworld-download``, json_2.1.1), declared by its local
    path, never fetched here."""
    if not directory:
        raise UserError(
            "TextWorld family alfworld: set task.params.alfworld_dir to a local copy of "
            "ALFWorld's json_2.1.1 games (a download: `alfworld-download` writes it to "
            "$ALFWORLD_DATA/json_2.1.1); nothing is downloaded here"
        )
    d = Path(directory).expanduser() / split_dir
    if not d.is_dir():
        raise UserError(
            f"TextWorld family alfworld: {d} is not a directory; task.params.alfworld_dir must "
            f"hold ALFWorld's json_2.1.1 folders (train, valid_seen, valid_unseen), with "
            f"'{split_dir}' among them"
        )
    games = sorted(d.rglob("*.tw-pddl"))
    if not games:
        raise UserError(f"TextWorld family alfworld: no *.tw-pddl game under {d}")
    return games


# ------------------------------------------------------------------ playing


_PROMPT_TAIL = re.compile(r"\n*>\s*$")


def clean(text: str) -> str:
    """The game's feedback without the interpreter's ``>`` prompt, the status line (room and
    score, e.g. ``-= Kitchen =-0/1``) glued to it, and runs of blank lines."""
    text = text or ""
    text = re.sub(r">\s+-= [^\n]*=-\s*\d+/\d+\s*$", "", text)
    text = _PROMPT_TAIL.sub("", text.rstrip())
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


@dataclass
class StepOut:
    observation: str
    valid_actions: list[str]
    score: float
    max_score: float
    won: bool
    lost: bool
    done: bool


class TwGame:
    """One game being played (``textworld.start``): :meth:`reset`, :meth:`step`."""

    def __init__(self, path: str):
        textworld = require_textworld()
        if str(path).endswith(".tw-pddl"):
            import importlib.util

            if importlib.util.find_spec("fast_downward") is None:
                raise UserError(
                    f"TextWorld: {path} is an ALFWorld (PDDL) game; playing it needs the "
                    "package fast-downward-textworld (TextWorld's PDDL backend), not installed"
                )
        infos = textworld.EnvInfos(
            admissible_commands=True,
            score=True,
            max_score=True,
            won=True,
            lost=True,
            description=True,
            objective=True,
            feedback=True,
        )
        self.path = str(path)
        import warnings

        try:
            with warnings.catch_warnings():
                # jericho: "not fully supported. Score, move, change detection will be disabled"
                # (its own score reading; TextWorld's TWInform7 wrapper gives the score)
                warnings.filterwarnings("ignore", message=".*is not fully supported.*")
                self.env = textworld.start(self.path, request_infos=infos)
        except OSError as e:
            raise UserError(f"TextWorld: cannot start game {path}: {e}") from None

    def _out(self, gs, done: bool, text: str) -> StepOut:
        return StepOut(
            observation=text,
            valid_actions=[a for a in (gs.admissible_commands or [])],
            score=float(gs.score or 0),
            max_score=float(gs.max_score or 0),
            won=bool(gs.won),
            lost=bool(gs.lost),
            done=bool(done),
        )

    def reset(self) -> tuple[str, StepOut]:
        """(objective, first observation: the starting room's description)."""
        import warnings

        with warnings.catch_warnings():  # jericho's, as in __init__ (textworld ignores it too)
            warnings.filterwarnings("ignore", message=".*is not fully supported.*")
            gs = self.env.reset()
        return str(gs.objective or "").strip(), self._out(gs, False, clean(gs.description))

    def step(self, action: str) -> StepOut:
        gs, _, done = self.env.step(action)
        return self._out(gs, done, clean(gs.feedback))

    def close(self) -> None:
        try:
            self.env.close()
        except Exception:  # noqa: BLE001
            pass


def first_observation(path: str) -> tuple[str, StepOut]:
    g = TwGame(path)
    try:
        return g.reset()
    finally:
        g.close()


__all__ = [
    "FAMILIES",
    "TEST_SEED0",
    "GameSpec",
    "StepOut",
    "TwGame",
    "alfworld_games",
    "clean",
    "first_observation",
    "game_file",
    "games_root",
    "generate",
    "require_textworld",
]
