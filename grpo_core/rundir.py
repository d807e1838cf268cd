"""Run directories whose contents can be trusted after an edit, a crash or a second writer.

- Identity: ``run.json`` holds the hash of the run's training config (the resolved config less
  ``meta``, ``eval``, ``workflow`` and where/how fast it runs: ``run.results_dir``,
  ``run.output_dir``, ``run.threads``; values equal to the defaults do not count, so a new option
  with a default leaves runs valid). Resuming a directory whose hash differs is refused, naming
  the keys that differ; ``fresh`` (``grpo train --fresh``) or ``if_changed="replace"`` (the
  Snakemake rule) move the old directory aside to ``<parent>/.replaced/<name>-<UTC time>`` and
  start over. Directories written before run.json existed are identified by their config.yaml.
- Lock: one writer per directory (``RunLock``, an flock on ``<parent>/.<name>.lock`` holding
  pid and host; the kernel drops it when the holder dies, so a dead holder's file is reused).
- Checkpoints: training state is JSON (step, RNG, sampler, scheduler) + safetensors (tensors)
  in ``checkpoint/training_state/`` (:func:`save_state` / :func:`load_state`; nothing is
  unpickled). A save writes
  ``checkpoint.tmp`` and marks it complete (``COMPLETE``) before the renames; :func:`recover`
  finishes an interrupted save from the complete copy.
- metrics.jsonl must hold one row per step below the checkpoint's step (:func:`check_metrics`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import torch

from grpo_core.errors import UserError

RUN_FILE = "run.json"
COMPLETE = "COMPLETE"  # written last into checkpoint.tmp: the copy is whole
# training state: its own subdirectory, so the checkpoint's *.safetensors are the model's
STATE_DIR = "training_state"
STATE_JSON = f"{STATE_DIR}/state.json"  # + state.safetensors; FSDP: optimizer_rank<r>.*
LEGACY_STATE = "training_state.pt"  # pickled state of older versions (read with weights_only)
# what a run directory may hold; anything else (a user's notes) does not make it "used"
RUN_FILES = (
    RUN_FILE,
    "config.yaml",
    "metrics.jsonl",
    "curve.jsonl",
    "checkpoint",
    "checkpoint.tmp",
    "checkpoint.old",
    "eval",
    "train.done",
)
NOT_TRAINING = {
    "meta": True,
    "eval": True,
    "workflow": True,
    "base": True,  # the base's name: its settings are in the resolved values
    "run": {"results_dir": True, "output_dir": True, "threads": True},
}


# ------------------------------------------------------------------------------ identity


def training_config(cfg, full: bool = False) -> dict:
    """The part of a resolved config that decides what training produces (see the module doc):
    the values that differ from the defaults (what the hash covers), or ``full``: all of them
    (what run.json shows and error messages compare)."""
    d = cfg.model_dump(mode="json", exclude_defaults=not full, exclude=NOT_TRAINING)
    d["reproduction"], d["profile"] = cfg.reproduction, cfg.profile
    specs = reward_model_specs(cfg)
    if specs:  # what the rewards' trained reward models were trained with
        d["reward_model_specs"] = specs
    return d


def reward_model_specs(cfg) -> dict:
    """The resolved specs (config/reward_models/<name>.yaml) of the workflow-trained reward
    models that the run's rewards name (reward ``reward_model`` with params.name): an edited
    spec changes the reward, so it changes the run's identity too."""
    from grpo_core.config import project_root
    from grpo_core.reward_models import load_spec

    names = sorted(
        {
            str(t.params["name"])
            for t in cfg.rewards
            if t.name == "reward_model" and t.params.get("name")
        }
    )
    d = project_root() / "config" / "reward_models"
    # a name without a spec: None (the trainer's check of the RM's directory says what is missing)
    return {
        n: load_spec(n, d).model_dump(mode="json") if (d / f"{n}.yaml").exists() else None
        for n in names
    }


def config_hash(cfg) -> str:
    blob = json.dumps(training_config(cfg), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def diff_keys(old: dict, new: dict, n: int = 3) -> str:
    """'key: old -> new' for the first ``n`` differing keys (the run's name first)."""
    a, b = _flat(old), _flat(new)
    keys = sorted(
        (k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>")),
        key=lambda k: (k not in ("reproduction", "profile"), k),  # the run's name first
    )
    parts = [
        f"{k}: {json.dumps(a.get(k, '<absent>'))} -> {json.dumps(b.get(k, '<absent>'))}"
        for k in keys[:n]
    ]
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return "; ".join(parts) + more


def read_identity(out: Path) -> tuple[str, dict] | None:
    """(hash, training config) of the run in ``out``: run.json, else (older runs) config.yaml;
    None when neither exists; (UNREADABLE + why, {}) when the file cannot be read."""
    rf = out / RUN_FILE
    if rf.exists():
        try:
            d = json.loads(rf.read_text())
            return str(d["config_hash"]), dict(d["training_config"])
        except (ValueError, KeyError, TypeError) as e:
            return f"{UNREADABLE}{rf} is damaged ({type(e).__name__}: {e})", {}
    cy = out / "config.yaml"
    if cy.exists():
        from grpo_core.config import load_saved_config

        try:
            c = load_saved_config(cy)
        except UserError as e:
            return f"{UNREADABLE}{cy} does not load ({str(e).splitlines()[0]})", {}
        return config_hash(c), training_config(c, full=True)
    return None


UNREADABLE = "unreadable:"


def write_identity(out: Path, cfg) -> None:
    d = {
        "config_hash": config_hash(cfg),
        "reproduction": cfg.reproduction,
        "profile": cfg.profile,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "training_config": training_config(cfg, full=True),
    }
    write_atomic(out / RUN_FILE, json.dumps(d, indent=1, sort_keys=True) + "\n")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def used(out: Path) -> bool:
    return out.exists() and any((out / n).exists() for n in RUN_FILES)


def move_aside(out: Path) -> Path:
    """Rename ``out`` to <parent>/.replaced/<name>-<UTC time> (outside the runs/*/seed* globs)."""
    base = out.parent / ".replaced" / f"{out.name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    dest, i = base, 1
    while dest.exists():
        dest, i = base.with_name(f"{base.name}.{i}"), i + 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(out, dest)
    return dest


def prepare(out: Path, cfg, fresh: bool = False, if_changed: str = "error", log=print) -> str:
    """Make ``out`` safe to train ``cfg`` in (call under its RunLock). Returns "new" or "resume".

    fresh: move any earlier run aside. if_changed="error": a run of another config is refused;
    "replace": it is moved aside. A run of the same config is resumed (or, finished, left as is)."""
    out = Path(out)
    if not used(out):
        return "new"
    if fresh:
        log(f"--fresh: moved the earlier run {out} aside to {move_aside(out)}")
        return "new"
    ident = read_identity(out)
    new_hash = config_hash(cfg)
    if ident is None or ident[0] != new_hash:
        if ident is None:
            what = "a run whose config is unknown (no run.json or config.yaml)"
        elif ident[0].startswith(UNREADABLE):
            what = f"a run whose config cannot be read ({ident[0][len(UNREADABLE) :]})"
        else:
            diff = diff_keys(ident[1], training_config(cfg, full=True)) or "hash " + ident[0]
            what = f"a run of another config ({diff})"
        if if_changed == "replace":
            log(f"{out} held {what}: moved it aside to {move_aside(out)}; starting fresh")
            return "new"
        raise UserError(
            f"{out} holds {what}; it is not resumed: rerun with --fresh to move it aside to "
            f"{out.parent / '.replaced'}/ and start over, or give another --out"
        )
    recover(out / "checkpoint", log)
    return "resume"


def finished_step(out: Path, cfg) -> int | None:
    """The checkpoint's step when ``out`` holds a finished run of this very config (checked
    without loading a model, so a rerun of a finished run costs nothing); else None."""
    out = Path(out)
    ck = out / "checkpoint"
    if not used(out) or not (ck / STATE_JSON).exists() or (ck.parent / "checkpoint.tmp").exists():
        return None
    ident = read_identity(out)
    if ident is None or ident[0] != config_hash(cfg):
        return None
    try:
        step = int(json.loads((ck / STATE_JSON).read_text())["step"])
    except (ValueError, KeyError, TypeError, OSError):
        return None
    return step if step >= cfg.train.steps else None


# ------------------------------------------------------------------------------ locks


class RunLock:
    """An exclusive lock on a directory: flock on ``<parent>/.<name>.lock`` (pid, host inside).
    A second holder gets a UserError naming the first; the kernel releases the lock when its
    holder exits or dies, so a stale file left by a killed process is simply taken over."""

    def __init__(self, target: Path | str, what: str = "run directory"):
        self.target = Path(target)
        t = self.target.resolve()  # ("." or "run/" name the directory itself)
        self.path = t.parent / f".{t.name}.lock"
        self.what = what
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        if self.fd is not None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create {self.path.parent}: {e.strerror}") from None
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise UserError(f"cannot create the lock file {self.path}: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)  # a filesystem without locks: go on unlocked
                    print(f"warning: cannot lock {self.path} ({e.strerror}); not locked")
                    return self
                holder = _holder(fd)
                os.close(fd)
                raise UserError(
                    f"{self.what} {self.target} is in use by {holder} (lock {self.path}); wait "
                    "for it to finish or stop it - two writers would mix their results"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed the file as we opened it: take the new one
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _holder(fd: int) -> str:
    try:
        d = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {d['pid']} on {d['host']}"
    except (ValueError, KeyError, OSError):
        return "another process"


# ------------------------------------------------------------------------------ checkpoints


def is_complete(ck: Path) -> bool:
    """A checkpoint directory is whole: its save finished (marker), or, written by an older
    version, it holds its training state under the final name."""
    return (ck / COMPLETE).exists()


def recover(ck: Path, log=print) -> None:
    """Finish a save that was interrupted between writing checkpoint.tmp and the renames:
    a complete checkpoint.tmp is the newest checkpoint; else checkpoint.old is the last one."""
    tmp, old = ck.with_name(ck.name + ".tmp"), ck.with_name(ck.name + ".old")
    if tmp.exists() and is_complete(tmp):
        if ck.exists():
            os.replace(ck, old)
        os.replace(tmp, ck)
        log(f"warning: {ck}: finished an interrupted checkpoint save (from {tmp.name})")
    elif not ck.exists() and old.exists():
        os.replace(old, ck)
        log(f"warning: {ck}: restored the previous checkpoint (from {old.name})")
    if ck.exists():
        for d in (tmp, old):
            if d.exists():
                shutil.rmtree(d)


def check_state_present(ck: Path) -> None:
    if not ck.exists():
        return
    if not (ck / STATE_JSON).exists() and not (ck / LEGACY_STATE).exists():
        raise UserError(
            f"{ck}: {STATE_JSON} is missing, so the run cannot resume exactly (the weights alone "
            "do not hold the step, optimizer, sampler or RNG state); restore it, or start over "
            "with --fresh (moves the run aside)"
        )


def fsync_dir_files(d: Path) -> None:
    for p in d.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def mark_complete(d: Path, step: int) -> None:
    fsync_dir_files(d)
    write_atomic(d / COMPLETE, json.dumps({"step": step}) + "\n")


# ------------------------------------------------------------------------------ state files
# A state tree (dicts, lists, tuples, numbers, strings, None, tensors, numpy arrays) is stored
# as JSON with tensors in one safetensors file; tuples, numpy values and non-string dict keys
# are tagged, so loading gives back exactly what was saved.


def _encode(x: Any, tensors: dict, path: str) -> Any:
    import numpy as np

    if isinstance(x, torch.Tensor):
        name = f"t{len(tensors)}"
        local = x.to_local() if hasattr(x, "to_local") else x  # an FSDP shard: this rank's part
        tensors[name] = local.detach()
        return {"__tensor__": name}
    if isinstance(x, np.generic):  # (before float: np.float64 is a float)
        return {"__npscalar__": x.item(), "dtype": str(x.dtype)}
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, np.ndarray):
        return {"__ndarray__": x.tolist(), "dtype": str(x.dtype), "shape": list(x.shape)}
    if isinstance(x, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(x)]}
    if isinstance(x, list):
        return [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(x)]
    if isinstance(x, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in x):
            return {k: _encode(v, tensors, f"{path}.{k}") for k, v in x.items()}
        return {
            "__items__": [
                [_encode(k, tensors, path), _encode(v, tensors, f"{path}.{k}")]
                for k, v in x.items()
            ]
        }
    raise TypeError(f"training state {path}: cannot store a {type(x).__name__}")


def _decode(x: Any, tensors: dict) -> Any:
    import numpy as np

    if isinstance(x, list):
        return [_decode(v, tensors) for v in x]
    if not isinstance(x, dict):
        return x
    if "__tensor__" in x:
        return tensors[x["__tensor__"]]
    if "__ndarray__" in x:
        return np.array(x["__ndarray__"], dtype=x["dtype"]).reshape(x["shape"])
    if "__npscalar__" in x:
        return np.dtype(x["dtype"]).type(x["__npscalar__"])
    if "__tuple__" in x:
        return tuple(_decode(v, tensors) for v in x["__tuple__"])
    if "__items__" in x:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in x["__items__"]}
    return {k: _decode(v, tensors) for k, v in x.items()}


def save_state(obj: Any, stem: Path) -> None:
    """``stem``.json + ``stem``.safetensors (the tensors, if any)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(obj, tensors, stem.name)
    seen: set[int] = set()
    for k, t in tensors.items():  # CPU copies only where needed (no doubling of GPU memory)
        if t.device.type != "cpu":
            t = t.cpu()
        elif t.numel() and (t.untyped_storage().data_ptr() in seen or not t.is_contiguous()):
            t = t.contiguous().clone()  # safetensors refuses tensors that share memory
        if t.numel():
            seen.add(t.untyped_storage().data_ptr())
        tensors[k] = t
    stem.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(stem.with_suffix(".safetensors")))
    with open(stem.with_suffix(".json"), "w") as f:
        json.dump(tree, f)


def load_state(stem: Path) -> Any:
    from safetensors.torch import load_file

    tensors = load_file(str(stem.with_suffix(".safetensors")))
    return _decode(json.loads(stem.with_suffix(".json").read_text()), tensors)


def load_legacy_state(path: Path) -> Any:
    """A training_state.pt of an older version, read with ``weights_only=True`` (no code runs)
    and an allow-list of the numpy types the samplers' state holds."""
    import numpy as np

    mult = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed = [np.ndarray, np.dtype, mult._reconstruct, mult.scalar]
    allowed += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, weights_only=True)


# ------------------------------------------------------------------------------ metrics


def check_metrics(path: Path, step: int, log=print) -> list[str]:
    """The lines of metrics.jsonl for steps 0..step-1 (in order, one each); lines after them
    (written after the last checkpoint, or a line cut off by a kill) are dropped with a
    warning. A bad line among the needed ones is a UserError naming file:line."""
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    keep: list[str] = []
    cut = len(lines)
    for i, ln in enumerate(lines):
        if len(keep) == step:
            cut = i
            break
        if not ln.strip():
            continue
        try:
            row = json.loads(ln)
            got = row.get("step") if isinstance(row, dict) else None
        except ValueError:
            row, got = None, None
        if got != len(keep):
            what = "not a JSON metrics row" if row is None else f"has step {got!r}"
            raise UserError(
                f"{path}:{i + 1}: {what}, where the row of step {len(keep)} belongs (the "
                f"checkpoint is at step {step} and needs rows 0..{step - 1}); repair or delete "
                "that line, or start over with --fresh"
            )
        keep.append(ln)
    if len(keep) < step:
        have = f"rows for steps 0..{len(keep) - 1}" if keep else "no rows"
        raise UserError(
            f"{path}: holds {have} but the checkpoint is at step {step}; the missing rows "
            "cannot be recovered: restore the file or start over with --fresh"
        )
    rest = [(i, ln) for i, ln in enumerate(lines[cut:], cut + 1) if ln.strip()]
    bad = [i for i, ln in rest if not _is_row(ln)]
    if bad:
        log(
            f"warning: {path}: dropped {len(rest)} line(s) after step {step - 1} (written after "
            f"the last checkpoint; unreadable from line {bad[0]})"
        )
    return keep


def _is_row(ln: str) -> bool:
    try:
        return isinstance(json.loads(ln), dict)
    except ValueError:
        return False


def check_curve(path: Path, step: int, log=print) -> tuple[list[str], set[int]]:
    """The rows of curve.jsonl (held-out curve points, eval.curve) at steps <= ``step`` (the
    resumed checkpoint's), one per step, and their steps. Rows after it (evaluated after the
    last checkpoint), repeats and unreadable lines are dropped with a warning: the resumed run
    evaluates those steps again."""
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    keep: list[str] = []
    steps: set[int] = set()
    dropped = 0
    for ln in lines:
        if not ln.strip():
            continue
        try:
            row = json.loads(ln)
            s = row.get("step") if isinstance(row, dict) else None
        except ValueError:
            s = None
        if not isinstance(s, int) or s > step or s in steps:
            dropped += 1
            continue
        keep.append(ln)
        steps.add(s)
    if dropped:
        log(f"warning: {path}: dropped {dropped} curve row(s) after step {step} or unreadable")
    return keep, steps
