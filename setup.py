"""Ship the profiles (config/profiles/) and the reproductions (reproductions/) inside the wheel.

They live at the top of the checkout, outside the grpo_core package, so package-data cannot name
them: a non-editable build copies them to grpo_core/_data/{config/profiles,reproductions}/, which
grpo_core.config.project_root() falls back to when no checkout is found. Editable installs read
the checkout itself and copy nothing. Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED = {  # source folder (relative to the checkout) -> file patterns copied
    "config/profiles": ["*.yaml"],
    "config/reward_models": ["*.yaml"],
    "reproductions": ["*/reproduction.yaml", "*/README.md"],
}


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = Path(self.build_lib) / "grpo_core" / "_data"
        shutil.rmtree(dest, ignore_errors=True)  # no stale copies from an earlier build
        for folder, patterns in SHIPPED.items():
            src = HERE / folder
            if not src.is_dir():
                raise SystemExit(f"setup.py: {src} is missing; build from a full checkout")
            for pat in patterns:
                for f in sorted(src.glob(pat)):
                    target = dest / folder / f.relative_to(src)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, target)


setup(cmdclass={"build_py": BuildPyWithData})
