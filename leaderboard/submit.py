"""Accepting result files into a leaderboard's results folder under content-addressed names.

The accepted files belong to a leaderboard repository, never to the installed package: the
default folder is ``./leaderboard/results`` of the working directory, and only when that folder
already exists (the command runs in a checkout of a leaderboard repository). Anywhere else the
caller must name the folder (``protobench submit --results-dir DIR``).

The files come from strangers (DESIGN.md, Results from strangers). An accepted file's name is
built only from a safe alphabet (``a-z``, ``0-9``, ``-``) and a hash of its bytes, never from a
raw field, and always lies directly inside the results folder. The bytes accepted are the bytes
validated: the source is read once (a regular file, at most the validator's byte limit), written
to a unique temporary file in the results folder, validated there, and linked to its final name,
which is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path

from protobench.leaderboard.identity import configuration_of
from protobench.leaderboard.ranking import MIN_EPISODES, episode_problem
from protobench.leaderboard.validate import MAX_FILE_BYTES, validate_file

CHECKOUT_RESULTS_DIR = Path("leaderboard", "results")
"""Where a leaderboard repository keeps its accepted files, relative to the repository root."""
NAME_PART_CHARS = 40
"""Longest slug of one part (benchmark, configuration, protocol) of an accepted file's name."""
DIGEST_CHARS = 16
"""Hex digits of the SHA-256 of the file's bytes at the end of an accepted file's name."""


class SubmissionError(ValueError):
    """A file that cannot be accepted, with the reasons."""


def slug(text: object, limit: int = NAME_PART_CHARS) -> str:
    """``text`` for a file name: lowercase, every run of characters outside ``a-z0-9`` one ``-``.

    No leading or trailing ``-``, at most ``limit`` characters, ``"x"`` when nothing is left
    (``"../../evil"`` -> ``"evil"``, ``"Proto Nét/2"`` -> ``"proto-n-t-2"``).
    """
    return re.sub(r"[^a-z0-9]+", "-", str(text)[: 4 * limit].lower())[:limit].strip("-") or "x"


def accepted_name(result: dict, content: bytes) -> str:
    """``<benchmark>__<configuration>__<protocol>__<sha256 of content, 16 hex>.json``, each part a :func:`slug`.

    The name matches ``[a-z0-9-]+(__[a-z0-9-]+){2}__[0-9a-f]{16}\\.json`` whatever the fields hold:
    the hash of the bytes makes it unique, the slugs only make it readable.
    """
    benchmark = result.get("benchmark", {})
    parts = (benchmark.get("name", "benchmark"), configuration_of(result), benchmark.get("protocol", result["kind"]))
    digest = hashlib.sha256(content).hexdigest()[:DIGEST_CHARS]
    return "__".join([*map(slug, parts), digest]) + ".json"


def default_results_dir(cwd: str | Path | None = None) -> Path | None:
    """``<cwd>/leaderboard/results`` when that folder exists, else None (the caller must name one).

    ``cwd`` defaults to the working directory; the returned path is relative when ``cwd`` is None.
    """
    folder = CHECKOUT_RESULTS_DIR if cwd is None else Path(cwd) / CHECKOUT_RESULTS_DIR
    return folder if folder.is_dir() else None


def read_regular_file(path: str | Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file at ``path``, read once; SubmissionError for anything else.

    Opened without blocking (a FIFO or device is refused, never waited on), checked to be a
    regular file on the open descriptor, and refused when it holds more than ``limit`` bytes.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as error:
        raise SubmissionError(f"{path}: cannot read: {error}") from None
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise SubmissionError(f"{path} is not a regular file")
        content = file.read(limit + 1)
    if len(content) > limit:
        raise SubmissionError(f"{path} is larger than {limit} bytes")
    return content


def _inside(folder: Path, name: str) -> Path:
    """``folder / name`` resolved, after checking that it lies directly inside the resolved ``folder``."""
    root = folder.resolve()
    target = (root / name).resolve()
    if target.parent != root:
        raise SubmissionError(f"refusing to write {name!r}: it would not lie inside {root}")
    return target


def _same_run(results_dir: Path, run_id: object) -> str | None:
    """The name of an accepted file in ``results_dir`` whose ``run.id`` is ``run_id``, or None."""
    for other in sorted(results_dir.glob("*.json")):
        try:
            if not other.is_file() or other.stat().st_size > MAX_FILE_BYTES:
                continue
            if json.loads(other.read_bytes())["run"]["id"] == run_id:
                return other.name
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _write_new(target: Path, content: bytes, path: str | Path) -> None:
    """Write ``content`` to ``target`` atomically, never replacing an existing file, after validating it there.

    The bytes go to a unique temporary file beside ``target`` (``tempfile.mkstemp``), which is
    validated again (so the accepted bytes are exactly validated bytes, even if ``path`` changed
    meanwhile) and then hard-linked to ``target``; the link fails if ``target`` exists. Where
    hard links are not supported the temporary file is renamed instead, after checking that
    ``target`` does not exist. The temporary file never remains.
    """
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".submit-", suffix=".partial")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        problems = validate_file(temporary)
        if problems:
            raise SubmissionError(f"{path} changed while it was submitted; the bytes read failed validation:\n  "
                                  + "\n  ".join(problems))
        try:
            os.link(temporary, target)
        except FileExistsError:
            raise SubmissionError(f"{path} is already accepted as {target}") from None
        except OSError:  # no hard links on this file system
            if target.exists():
                raise SubmissionError(f"{path} is already accepted as {target}") from None
            os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def submit(path: str | Path, results_dir: str | Path, min_episodes: int = MIN_EPISODES) -> Path:
    """Validate ``path`` and copy it into ``results_dir`` under :func:`accepted_name`; return the accepted path.

    Raises SubmissionError for an invalid file, for anything but a regular file, for a few-shot
    file with fewer than ``min_episodes`` test episodes (the leaderboard would not rank it), for a
    file whose bytes are already accepted, and for a file whose run id is already accepted under
    another name. ``results_dir`` is created when missing; nothing is written anywhere else, and
    no existing file is replaced. The returned path is ``results_dir / <name>``.
    """
    results_dir = Path(results_dir)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # checked before anything reads it: a FIFO would block
            raise SubmissionError(f"{path} is not a regular file")
    except OSError as error:
        raise SubmissionError(f"{path}: cannot read: {error}") from None
    problems = validate_file(path)
    if problems:
        raise SubmissionError(f"{path} failed validation:\n  " + "\n  ".join(problems))
    content = read_regular_file(path)
    result = json.loads(content)
    if (problem := episode_problem(result, min_episodes)) is not None:
        raise SubmissionError(f"{path}: {problem}")
    name = accepted_name(result, content)
    target = _inside(results_dir, name)
    if target.exists():
        raise SubmissionError(f"{path} is already accepted as {results_dir / name}")
    if results_dir.is_dir() and (other := _same_run(results_dir, result["run"]["id"])) is not None:
        raise SubmissionError(f"{path} has the run id of the accepted {other}; a run is accepted once")
    results_dir.mkdir(parents=True, exist_ok=True)
    _write_new(_inside(results_dir, name), content, path)
    return results_dir / name
