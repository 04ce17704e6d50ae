"""Artifact I/O: atomic writes, integrity manifests, file locks, output checks, cache keys.

Every artifact is written under a temporary name in the same folder, fsynced, renamed over its
final name, and the folder is fsynced, so a crash never leaves a half file under a name a later
run trusts. A folder of several artifacts (a track) carries a ``manifest.json`` written last,
with every file's size and sha256, so that a truncated or missing file is detected before use.

Test hook: ``CTL_TEST_KILL_AT=<point>[#<n>]`` makes the process SIGKILL itself the n-th time (1
by default) it reaches the named point; :func:`crash_point` is the only reader of the variable.
Points: ``write:<file name>`` (data written and fsynced, not yet renamed), ``train-batch`` (after
a training batch, before its checkpoint), ``period-end`` (a period validated, before its
checkpoint). The tests of resumption use it; it is inert when the variable is unset.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock

from ctl.errors import CtlError, cut, shorten

KILL_AT_ENV = "CTL_TEST_KILL_AT"
MANIFEST_FILE = "manifest.json"
#: errno values that mean "this output location cannot take the artifact": refused in one line.
_OUTPUT_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded",
                  errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                  errno.EPERM: "operation not permitted"}

_crash_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process if ``CTL_TEST_KILL_AT`` names ``name`` and its count is reached (test hook)."""
    spec = os.environ.get(KILL_AT_ENV)
    if not spec:
        return
    point, _, count = spec.partition("#")
    if point != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's fsync makes the renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename_into_place(staging: Path, final: Path, writer: str) -> None:
    """Give a complete staging folder its final name (atomic on one file system) and make the rename
    durable; a folder that appeared there meanwhile was made by ``writer`` and is left as it is."""
    try:
        os.rename(staging, final)
    except OSError as exc:
        if final.exists():
            raise FileExistsError(f"{final}: {writer} created it meanwhile") from exc
        raise
    fsync_path(final.parent)


def output_error(exc: OSError, path: Path) -> CtlError | None:
    """A one-line refusal for an OSError that says the output location cannot be written, else None."""
    reason = _OUTPUT_ERRNOS.get(exc.errno) if exc.errno is not None else None
    if reason is None:
        return None
    return CtlError(f"cannot write {path}: {reason}; free space or choose a writable folder "
                    "(hydra.run.dir for runs, home= or CTL_HOME for the dataset and track cache)")


def write_synced(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Create ``path`` with what ``write(handle)`` writes, and fsync it (a staging file, renamed later)."""
    with open(path, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` atomically: ``write(handle)`` fills a temporary sibling, then it is synced and renamed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_synced(tmp, write)
        crash_point(f"write:{path.name}")
        os.replace(tmp, path)
        fsync_path(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        refusal = output_error(exc, path)
        if refusal is None:
            raise
        raise refusal from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_json(path: Path, obj: object) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_copy(source: Path, path: Path) -> Path:
    """Copy the finished file ``source`` to ``path`` atomically."""
    with open(source, "rb") as data:
        return atomic_write(path, lambda handle: shutil.copyfileobj(data, handle, 1 << 20))


def atomic_link(source: Path, path: Path) -> Path:
    """Make ``path`` another name of the finished file ``source`` (a hard link, renamed into place)."""
    source, path = Path(source), Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # a file system without hard links: copy instead
        shutil.copyfile(source, tmp)
        fsync_path(tmp)
    crash_point(f"write:{path.name}")
    os.replace(tmp, path)
    fsync_path(path.parent)
    return path


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporary files that a killed writer left in ``folder`` (never read by anyone)."""
    if folder.is_dir():
        for stale in folder.glob(".*.tmp-*"):
            stale.unlink(missing_ok=True)


# --- integrity manifests ------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_files(folder: Path, skip: tuple[str, ...]) -> list[str]:
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST_FILE and not p.name.startswith(".")
        and p.relative_to(folder).parts[0] not in skip
    )


def manifest_entries(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, dict]:
    """Every file of ``folder`` (except top-level entries in ``skip``) with its size and sha256, as a
    manifest's ``files`` records them (:func:`manifest_problem` checks them)."""
    folder = Path(folder)
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": file_sha256(folder / name)}
            for name in _manifest_files(folder, skip)}


def write_manifest(folder: Path, skip: tuple[str, ...] = ()) -> Path:
    """Record every file of ``folder`` (except top-level entries in ``skip``) with its size and sha256, last."""
    return atomic_write_json(Path(folder) / MANIFEST_FILE, {"files": manifest_entries(folder, skip)})


def manifest_problem(folder: Path, every_file: bool = False, unlisted: tuple[str, ...] = ()) -> str | None:
    """What is wrong with ``folder`` against its manifest (missing, truncated, altered file), or None.

    An entry that is absolute, holds ``..`` or a link, or otherwise leaves ``folder`` is a problem
    (nothing outside the folder is read). With ``every_file`` (a folder that may come from someone
    else) every file in ``folder`` must be listed, except the manifest and the top-level names in
    ``unlisted``.
    """
    folder = Path(folder)
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        return f"{MANIFEST_FILE} is missing (the folder was never finished)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError) as exc:
        return f"{MANIFEST_FILE} cannot be read ({cut(str(exc))})"
    if not isinstance(files, dict):
        return f"{MANIFEST_FILE}: files must be a mapping of file name to size and sha256, got {shorten(files)}"
    for name, expected in files.items():
        problem = _entry_problem(folder, name) or _record_problem(name, expected)
        if problem is not None:
            return problem
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != expected["bytes"]:
            return f"{name} has {size} bytes, the manifest says {expected['bytes']}"
        if file_sha256(path) != expected["sha256"]:
            return f"{name} differs from the file the manifest recorded (sha256 mismatch)"
    if every_file:
        for name in _every_file(folder):
            if name not in files and name not in (MANIFEST_FILE, *unlisted):
                return f"{shorten(name)} is not listed in {MANIFEST_FILE} (a file nobody vouched for)"
    return None


def _entry_problem(folder: Path, name: object) -> str | None:
    """Why the manifest entry ``name`` would be read from outside ``folder``, or None."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return f"{MANIFEST_FILE}: the entry {shorten(name)} is not a relative file name"
    parts = Path(name).parts
    if Path(name).is_absolute() or ".." in parts or "." in name.split("/"):
        return f"{MANIFEST_FILE}: the entry {shorten(name)} leaves the folder (absolute, or holds . or ..)"
    current = folder
    for part in parts:
        current = current / part
        if current.is_symlink():
            return f"{MANIFEST_FILE}: the entry {shorten(name)} passes through a link ({part})"
    if not (folder / name).resolve().is_relative_to(folder.resolve()):
        return f"{MANIFEST_FILE}: the entry {shorten(name)} leaves the folder"
    return None


def _record_problem(name: str, expected: object) -> str | None:
    if (not isinstance(expected, dict) or not isinstance(expected.get("bytes"), int)
            or not isinstance(expected.get("sha256"), str)):
        return f"{MANIFEST_FILE}: files.{shorten(name)} must be {{\"bytes\": int, \"sha256\": text}}, got {shorten(expected)}"
    return None


def _every_file(folder: Path) -> list[str]:
    """Every file and link under ``folder`` (links not followed), as names relative to it."""
    found = []
    for root, dirs, names in os.walk(folder):
        here = Path(root)
        links = [d for d in dirs if (here / d).is_symlink()]
        found += [str((here / n).relative_to(folder)) for n in [*names, *links]]
    return sorted(found)


def inside(folder: Path, name: str, what: str) -> Path:
    """``folder / name`` for a ``name`` taken from a file's content; refused when it would leave ``folder``."""
    folder, path = Path(folder), Path(folder) / name
    if Path(name).is_absolute() or ".." in Path(name).parts or not path.resolve().is_relative_to(folder.resolve()):
        raise CtlError(f"{what} would be {shorten(str(path))}, outside {folder}; refused")
    return path


# --- output locations ---------------------------------------------------------------------------


def check_writable(folder: Path, what: str) -> None:
    """Refuse up front a folder that cannot be created or written (read-only, no permission, full)."""
    folder = Path(folder).expanduser()
    probe = folder / f".ctl-write-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"ok")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        reason = (_OUTPUT_ERRNOS.get(exc.errno) if exc.errno is not None else None) or exc.strerror or str(exc)
        raise CtlError(f"{what} {folder} is not writable ({reason}); choose another folder or fix it") from None
    finally:
        probe.unlink(missing_ok=True)


def check_free_space(folder: Path, needed_bytes: int, what: str) -> None:
    """Refuse up front when the file system of ``folder`` has less free space than ``needed_bytes``."""
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise CtlError(f"{what} needs about {needed_bytes / 2**20:.1f} MiB in {folder} but only "
                       f"{free / 2**20:.1f} MiB are free; free space or choose another folder")


# --- locks and keys -----------------------------------------------------------------------------


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held while the block runs (other processes wait; a killed holder releases it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        yield


def stable_hash(obj: object, length: int = 12) -> str:
    """A short content hash of a JSON-able object (cache keys)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def derived_seed(seed: int, name: str) -> int:
    """A seed of its own for each named random stream, stable across runs and processes."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")
