"""Build hook: ship the repository's ``conf/`` and ``pipelines/`` inside the package.

Everything else about the build is in ``pyproject.toml``. The files live once in git, at the top of the repository
where operators and the docs expect them; a wheel gets a copy at ``userbatch/conf/...`` and
``userbatch/pipelines/...``, which :mod:`userbatch.resources` finds when the package runs from an install rather
than a checkout. An editable install copies nothing: it runs from the checkout, whose files win anyway.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED = ("conf", "pipelines")  # keep in step with userbatch.resources.SHIPPED


class build_py_with_shipped_files(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in SHIPPED:
            src, dst = HERE / name, Path(self.build_lib) / "userbatch" / name
            if not src.is_dir():
                raise FileNotFoundError(f"{src} is missing: the wheel must ship it (an sdist needs it in MANIFEST.in)")
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


setup(cmdclass={"build_py": build_py_with_shipped_files})
