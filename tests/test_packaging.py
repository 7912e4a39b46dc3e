"""A regular, non-editable install works on its own.

The repository is installed once (module-scoped fixture) with
``pip install --no-deps --no-build-isolation --no-index --target <tmp>/site``: the installed
setuptools builds it and nothing is downloaded. Every check then runs ``python`` with
``PYTHONPATH=<tmp>/site`` from an empty folder elsewhere, so neither the checkout nor the editable
install can supply ``protobench``; the first test proves it.

The source is a copy of the checkout without its build outputs (``build/``, ``*.egg-info``,
caches): a build writes ``build/`` and ``*.egg-info`` next to ``pyproject.toml``, and copying
keeps the checkout untouched and concurrent test runs apart.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL_SECONDS = 60
NOT_SOURCE = shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
                                    ".hypothesis", ".benchmarks", "runs", "*.partial")
REPOSITORY_FOLDERS = ("benchmarks", "leaderboard", "continual", "fewshot")  # installed only as protobench.<name>
TINY_SUITE = """\
name = "tiny"
description = "a tiny budget"
benchmarks = ["digits-heldout"]
seeds = [0]
tests = [{ n_way = 5, n_shot = 1, n_query = 5, episodes = 600 }]  # the leaderboard minimum, so submit accepts it

[[methods]]
label = "protonet"
method = "protonet"
train = { n_way = 5, n_shot = 1, n_query = 5, episodes = 5 }
"""


@dataclass(frozen=True)
class Install:
    site: Path  # the --target folder
    work: Path  # an empty working directory outside the checkout
    env: dict[str, str]
    seconds: float  # how long pip took

    def python(self, *args: str, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """``python <args>`` against this install, from ``cwd`` (default: ``work``); output captured."""
        return subprocess.run([sys.executable, *args], cwd=cwd or self.work, env=self.env, capture_output=True,
                              text=True, timeout=timeout)


def _snapshot(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its modification time (ns): to show nothing was written there."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Install:
    base = tmp_path_factory.mktemp("packaging")
    source, site, work = base / "source", base / "site", base / "work"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    work.mkdir()
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--disable-pip-version-check", "--quiet", "--target", str(site), str(source)],
                          capture_output=True, text=True, timeout=10 * INSTALL_SECONDS)
    seconds = time.monotonic() - start
    assert done.returncode == 0, f"pip install failed:\n{done.stdout}\n{done.stderr}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(site)
    env.pop("WORLD_SIZE", None)
    return Install(site, work, env, seconds)


def test_install_is_quick_and_is_what_python_imports(install):
    assert install.seconds < INSTALL_SECONDS
    done = install.python("-c", "import protobench, protobench.benchmarks.cli as cli; "
                                "print(protobench.__file__); print(cli.__file__)")
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        assert Path(line).is_relative_to(install.site), f"imported {line}, not the install in {install.site}"


def test_install_holds_only_the_protobench_namespace(install):
    top_level = {p.name for p in install.site.iterdir()} - {"bin"}  # bin/: the console script
    assert not top_level & set(REPOSITORY_FOLDERS), f"generic top-level packages installed: {sorted(top_level)}"
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"protobench"}
    assert [name for name in top_level if name.endswith(".dist-info")] == ["protobench-" + _version(install)
                                                                          + ".dist-info"]
    assert (install.site / "protobench" / "benchmarks" / "suites" / "quick.toml").is_file()


def test_install_holds_every_module_of_the_checkout(install):
    """Every ``.py`` file of the repository's folders is installed (a subpackage missing from
    pyproject's ``packages`` list would otherwise be supplied by an editable install and go unseen)."""
    checkout = {f"{folder}/{p.relative_to(ROOT / folder)}" for folder in (*REPOSITORY_FOLDERS, "protobench")
                for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts}
    installed = {str(p.relative_to(install.site / "protobench")) for p in (install.site / "protobench").rglob("*.py")}
    installed = {name if name.split("/")[0] in REPOSITORY_FOLDERS else f"protobench/{name}" for name in installed}
    assert sorted(checkout - installed) == [], "modules missing from the install: add their package to pyproject"


def _version(install: Install) -> str:
    done = install.python("-c", "import protobench; print(protobench.__version__)")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_version_from_the_install(install):
    expected = f"protobench {_version(install)}\n"
    by_module = install.python("-m", "protobench", "--version")
    assert (by_module.returncode, by_module.stdout) == (0, expected), by_module.stderr
    script = subprocess.run([str(install.site / "bin" / "protobench"), "--version"], cwd=install.work,
                            env=install.env, capture_output=True, text=True, timeout=60)
    assert (script.returncode, script.stdout) == (0, expected), script.stderr


def test_ls_lists_the_packaged_suites(install):
    done = install.python("-m", "protobench", "ls")
    assert done.returncode == 0, done.stderr
    suites = done.stdout.split("benchmarks:")[0].splitlines()
    names = {line.split()[0] for line in suites if line.startswith("  ") and not line.startswith("    ")}
    assert {"quick", "omniglot"} <= names, done.stdout


@pytest.fixture(scope="module")
def tiny_results(install) -> list[Path]:
    (install.work / "tiny.toml").write_text(TINY_SUITE)
    out = install.site.parent / "runs"
    done = install.python("-m", "protobench", "run", "tiny.toml", "--out", str(out), "--quiet")
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return sorted(out.glob("*.json"))


def test_run_writes_valid_result_files(install, tiny_results):
    assert len(tiny_results) == 1
    result = json.loads(tiny_results[0].read_text())
    assert result["benchmark"]["name"] == "digits-heldout" and result["episodes"]["n"] == 600
    done = install.python("-m", "protobench", "validate", *map(str, tiny_results))
    assert done.returncode == 0 and "INVALID" not in done.stdout, done.stdout


def test_submit_outside_the_checkout(install, tiny_results):
    before = _snapshot(install.site)
    accepted = install.site.parent / "accepted"
    done = install.python("-m", "protobench", "submit", str(tiny_results[0]), "--results-dir", str(accepted))
    assert done.returncode == 0, done.stderr
    assert [p.read_bytes() for p in accepted.glob("*.json")] == [tiny_results[0].read_bytes()]

    empty = install.site.parent / "elsewhere"  # no leaderboard/results here: --results-dir is required
    empty.mkdir()
    done = install.python("-m", "protobench", "submit", str(tiny_results[0]), cwd=empty)
    assert done.returncode == 2 and "--results-dir is required" in done.stderr, done.stderr
    assert list(empty.iterdir()) == []
    assert _snapshot(install.site) == before, "submit wrote inside the installed package"


TINY_CONTINUAL_SUITE = """\
name = "tiny-continual"
kind = "continual"
benchmarks = ["split-digits"]
seeds = [0]

[[methods]]
label = "ft"
method = "finetune"
params = { epochs = 1 }
"""


def test_a_continual_suite_runs_from_the_install(install):
    (install.work / "tiny-continual.toml").write_text(TINY_CONTINUAL_SUITE)
    out = install.site.parent / "runs-continual"
    done = install.python("-m", "protobench", "run", "tiny-continual.toml", "--out", str(out), "--quiet")
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    (path,) = out.glob("*.json")
    result = json.loads(path.read_text())
    assert result["kind"] == "continual" and len(result["evidence"]["accuracy_matrix"]) == 5
    done = install.python("-m", "protobench", "validate", str(path))
    assert done.returncode == 0, done.stdout
