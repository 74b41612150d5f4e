"""Publishing into the serving layout (``serving.layout``) so TF Serving never sees a partial model.

A version is copied into a hidden staging folder beside the versions and renamed into
place, so it appears whole or not at all (rename is atomic on local and POSIX filesystems;
on object stores such as gs:// it is a copy, see README). Old versions are renamed out of
sight before they are deleted, for the same reason. ``push`` does a whole push under a lock
on the serving root: it sweeps what killed pushes left behind, publishes (or sees that the
model is already the newest version), prunes, and rewrites ``models.config``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import layout
from serving.layout import MODELS_CONFIG_FILE, list_versions

__all__ = [
    "MODELS_CONFIG_FILE",
    "PushResult",
    "list_versions",
    "prune_versions",
    "publish_lock",
    "publish_version",
    "push",
    "sweep_stale",
    "write_models_config",
]

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".incoming-"  # a version being copied
RETIRED_PREFIX = ".retired-"  # a pruned version being deleted
LOCK_FILE = ".publish.lock"  # in the serving root; held for a whole push
_CONFIG_TEMP_PREFIX = f".{MODELS_CONFIG_FILE}."
_TEMP_PREFIXES = (STAGING_PREFIX, RETIRED_PREFIX, _CONFIG_TEMP_PREFIX)
# Without a lock (object stores), leftovers are only swept once this old.
_UNLOCKED_STALE_SECONDS = 3600
DEFAULT_LOCK_TIMEOUT_SECONDS = 600.0

# Version number -> {path relative to the version: text}: files added to a version before it
# is published (the model card), so they appear with it, whole.
ExtraFiles = Callable[[int], dict[str, str]]


def _write_text(path: str, text: str) -> None:
    if layout.is_remote(path):
        gfile = layout._gfile()
        gfile.makedirs(os.path.dirname(path))
        with gfile.GFile(path, "w") as f:
            f.write(text)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


@dataclasses.dataclass
class PushResult:
    """What one push did."""

    version: int  # The version now newest: the one published, or the identical one found.
    destination: str
    published: bool  # False: the model was byte-identical to the newest version already.
    removed_versions: list[int]
    swept: list[str]  # Leftovers of killed pushes that were deleted.
    not_versions: list[str]  # Integer folders without a SavedModel, left in place.
    models_config: str
    # MODEL_DIR/exports/VERSION when exports were published (or already there), else "".
    exports_destination: str = ""
    exports_published: list[str] = dataclasses.field(default_factory=list)  # file names


def _rename(source: str, target: str) -> None:
    """Renames without replacing a non-empty target (raises OSError / tf OpError then)."""
    if layout.is_remote(source):
        layout._gfile().rename(source, target, overwrite=False)
    else:
        os.rename(source, target)


@contextlib.contextmanager
def publish_lock(
    serving_root: str, timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS
) -> Iterator[bool]:
    """Holds ``SERVING_ROOT/.publish.lock`` (an flock) for one push; yields whether it locked.

    The kernel releases the lock when its holder dies, so a killed push never blocks the
    next one, and whatever a push finds in staging while holding it is a dead push's
    leftover. Object stores have no locks: there it yields False and pushes rely on the
    atomic rename of ``publish_version`` alone. Waits up to ``timeout`` seconds, then raises
    TimeoutError naming the lock file and its holder.
    """
    if layout.is_remote(serving_root):
        yield False
        return
    os.makedirs(serving_root, exist_ok=True)
    path = os.path.join(serving_root, LOCK_FILE)
    with open(path, "a+") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    lock.seek(0)
                    holder = lock.read().strip() or "unknown"
                    raise TimeoutError(
                        f"another push ({holder}) has held {path} for more than {timeout:g} s; "
                        "wait for it to finish, or stop it"
                    ) from None
                time.sleep(0.05)
        try:
            lock.seek(0)
            lock.truncate()
            lock.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
            lock.flush()
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _age_seconds(path: str) -> float:
    if layout.is_remote(path):
        return time.time() - layout._gfile().stat(path).mtime_nsec / 1e9
    return time.time() - os.lstat(path).st_mtime


def sweep_stale(folder: str, locked: bool) -> list[str]:
    """Deletes leftovers of killed pushes in ``folder``; returns their paths.

    Staging folders (``.incoming-*``), versions being pruned (``.retired-*``) and
    half-written configs (``.models.config.*``). Holding the publish lock, every one is a
    dead push's; without it (object stores) only those untouched for an hour are.
    """
    removed = []
    for name in sorted(layout.list_dir(folder)):
        if not name.startswith(_TEMP_PREFIXES):
            continue
        path = os.path.join(folder, name)
        try:
            if not locked and _age_seconds(path) < _UNLOCKED_STALE_SECONDS:
                continue
            if layout.is_dir(path):
                layout.remove_tree(path)
            elif layout.is_remote(path):
                layout._gfile().remove(path)
            else:
                os.remove(path)
        except FileNotFoundError:
            continue  # Another sweeper got there first.
        removed.append(path)
    return removed


def publish_version(
    saved_model_dir: str,
    model_dir: str,
    max_attempts: int = 100,
    extra_files: ExtraFiles | None = None,
) -> int:
    """Copies ``saved_model_dir`` to ``model_dir/<next integer version>`` atomically.

    The next version is one more than the highest integer name, complete version or not,
    so a folder someone left without a SavedModel never blocks a push. If another pusher takes
    that number first, the rename fails and the next number is tried, up to
    ``max_attempts`` times. The staging copy is always removed, also when the copy fails
    (a full disk). ``extra_files`` are written into the staging copy for the version number
    about to be tried, so they are there the moment the version appears. Returns the
    published version.
    """
    if not layout.has_saved_model(saved_model_dir):
        raise FileNotFoundError(f"{saved_model_dir} holds no saved_model.pb")
    if layout.is_remote(model_dir):
        layout._gfile().makedirs(model_dir)
    else:
        os.makedirs(model_dir, exist_ok=True)
    staging = os.path.join(model_dir, f"{STAGING_PREFIX}{uuid.uuid4().hex}")
    last_error = "no attempt made"
    try:
        try:
            layout.copy_tree(saved_model_dir, staging)
        except OSError as err:
            raise OSError(
                err.errno,
                f"copying {saved_model_dir} into {model_dir} failed, nothing was published "
                f"and the partial copy was removed: {err.strerror or err}",
            ) from err
        for _ in range(max_attempts):
            taken = [layout.version_number(name) for name in layout.list_dir(model_dir)]
            version = max((n for n in taken if n is not None), default=0) + 1
            target = os.path.join(model_dir, str(version))
            for relative, text in (extra_files(version) if extra_files else {}).items():
                _write_text(os.path.join(staging, relative), text)
            try:
                _rename(staging, target)
            except Exception as err:  # noqa: BLE001 - OSError, or tf OpError on object stores
                if not layout.exists(staging):
                    raise
                last_error = f"{type(err).__name__}: {err}"
                logger.warning("version %d was taken while pushing (%s); retrying", version, err)
                continue
            return version
        raise RuntimeError(
            f"could not publish a new version under {model_dir}: {max_attempts} version "
            f"numbers were taken by concurrent pushes (last: {last_error})"
        )
    finally:
        layout.remove_tree(staging)


def exports_to_publish(exports_dir: str) -> list[str]:
    """The files of an exporter output that are published: the exports that passed the
    gate (top level; refused ones lie in ``refused/``), labels.txt and the report."""
    names = [*layout.EXPORT_FILES.values(), layout.EXPORT_LABELS_FILE, layout.EXPORT_REPORT_FILE]
    return [name for name in names if layout.exists(os.path.join(exports_dir, name))]


def stage_exports(exports_dir: str, model_dir: str) -> tuple[str, list[str]] | None:
    """Copies the publishable exports into a hidden staging folder of MODEL_DIR/exports/.

    Returns (staging folder, file names), or None when no export passed the gate. A copy that
    fails removes the staging folder and raises OSError saying nothing was published.
    """
    names = exports_to_publish(exports_dir)
    if not any(name in names for name in layout.EXPORT_FILES.values()):
        return None
    root = layout.exports_root(model_dir)
    staging = os.path.join(root, f"{STAGING_PREFIX}{uuid.uuid4().hex}")
    try:
        if layout.is_remote(root):
            gfile = layout._gfile()
            gfile.makedirs(staging)
            for name in names:
                gfile.copy(os.path.join(exports_dir, name), os.path.join(staging, name))
        else:
            os.makedirs(staging)
            for name in names:
                shutil.copyfile(os.path.join(exports_dir, name), os.path.join(staging, name))
    except OSError as err:
        layout.remove_tree(staging)
        raise OSError(
            err.errno,
            f"copying the exports {exports_dir} into {root} failed, nothing was published "
            f"and the partial copy was removed: {err.strerror or err}",
        ) from err
    return staging, names


def prune_exports(model_dir: str) -> list[int]:
    """Deletes MODEL_DIR/exports/N for every N that is no longer a version; returns them.

    Renamed out of sight first, as pruned versions are, so nobody reads a half-deleted one.
    """
    root = layout.exports_root(model_dir)
    versions = layout.scan_versions(model_dir)
    removed = []
    for number, path in sorted(layout.integer_folders(root).items()):
        if number in versions:
            continue
        retired = os.path.join(root, f"{RETIRED_PREFIX}{number}-{uuid.uuid4().hex}")
        _rename(path, retired)
        layout.remove_tree(retired)
        removed.append(number)
    return removed


def prune_versions(model_dir: str, keep: int) -> list[int]:
    """Deletes all but the newest ``keep`` versions; returns the deleted ones.

    Each is first renamed to a hidden ``.retired-*`` name, so a server never sees a
    half-deleted version under an integer name.
    """
    if keep < 1:
        raise ValueError("keep must be at least 1")
    versions = layout.scan_versions(model_dir)
    removed = sorted(versions)[:-keep]
    for version in removed:
        retired = os.path.join(model_dir, f"{RETIRED_PREFIX}{version}-{uuid.uuid4().hex}")
        _rename(versions[version], retired)
        layout.remove_tree(retired)
    return removed


def write_models_config(serving_root: str, base_path_in_server: str = "") -> str:
    """Writes ``SERVING_ROOT/models.config`` listing every model folder that has versions.

    ``base_path_in_server`` is where TF Serving sees SERVING_ROOT (e.g. ``/models`` inside
    the tensorflow/serving container); empty means SERVING_ROOT itself. Written to a hidden
    temporary file and renamed, so TF Serving never reads half a config. Returns its path.
    """
    config = model_server_config_pb2.ModelServerConfig()
    base = base_path_in_server or serving_root
    for name in sorted(layout.list_dir(serving_root)):
        if not name.startswith(".") and list_versions(os.path.join(serving_root, name)):
            model = config.model_config_list.config.add()
            model.name = name
            model.base_path = os.path.join(base, name)
            model.model_platform = "tensorflow"
    path = os.path.join(serving_root, MODELS_CONFIG_FILE)
    temp = os.path.join(serving_root, f"{_CONFIG_TEMP_PREFIX}{uuid.uuid4().hex}.tmp")
    text = text_format.MessageToString(config)
    if layout.is_remote(serving_root):
        gfile = layout._gfile()
        with gfile.GFile(temp, "w") as f:
            f.write(text)
        gfile.rename(temp, path, overwrite=True)
    else:
        with open(temp, "w") as f:
            f.write(text)
        os.replace(temp, path)
    return path


def push(
    saved_model_dir: str,
    model_dir: str,
    keep: int,
    base_path_in_server: str = "",
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS,
    extra_files: ExtraFiles | None = None,
    extra_file_names: tuple[str, ...] = (),
    exports_dir: str | None = None,
) -> PushResult:
    """One whole push of ``saved_model_dir`` into ``model_dir`` (SERVING_ROOT/MODEL_NAME).

    Under the serving root's publish lock: sweeps leftovers of killed pushes, publishes the
    model as the next version unless it is byte-identical to the newest one (then nothing
    is published: a re-run with nothing changed must not push a copy and push a real
    rollback version out of the ``keep`` window), prunes to ``keep`` versions and rewrites
    ``models.config``. Concurrent pushes wait for each other. ``extra_files`` (named
    ``extra_file_names``, which the byte-identical check ignores: a card differs in its date)
    are added to a published version, see ``publish_version``.

    ``exports_dir`` (a ModelExporter output) adds the exports that passed its gate as
    MODEL_DIR/exports/VERSION/, staged before the version is published and renamed into
    place after it, so both appear whole, and a failed copy of either publishes nothing.
    Exports of pruned versions are pruned with them.
    """
    model_dir = model_dir.rstrip("/")
    serving_root = os.path.dirname(model_dir)
    with publish_lock(serving_root, lock_timeout) as locked:
        swept = (
            sweep_stale(model_dir, locked)
            + sweep_stale(serving_root, locked)
            + sweep_stale(layout.exports_root(model_dir), locked)
        )
        if swept:
            logger.warning("Removed leftovers of killed pushes: %s", ", ".join(swept))
        versions = layout.scan_versions(model_dir)
        not_versions = [
            path
            for number, path in sorted(layout.integer_folders(model_dir).items())
            if number not in versions
        ]
        if not_versions:
            logger.warning(
                "Not versions (no saved_model.pb), left in place and numbered past: %s. TF "
                "Serving's 'all' policy would try to load them; remove them.",
                ", ".join(not_versions),
            )
        newest = max(versions) if versions else None
        staged = stage_exports(exports_dir, model_dir) if exports_dir else None
        exports_destination, exports_published = "", []
        try:
            if newest is not None and layout.same_tree(
                saved_model_dir, versions[newest], ignore=extra_file_names
            ):
                version, published = newest, False
                logger.info(
                    "Model is byte-identical to the newest version %s: nothing published",
                    versions[newest],
                )
            else:
                version = publish_version(saved_model_dir, model_dir, extra_files=extra_files)
                published = True
            if staged is not None:
                exports_destination = layout.exports_path(model_dir, version)
                if layout.exists(exports_destination):
                    # The unchanged model's exports, published by the push that made it.
                    logger.info("Exports %s already published", exports_destination)
                else:
                    _rename(staged[0], exports_destination)
                    exports_published = staged[1]
        finally:
            if staged is not None:
                layout.remove_tree(staged[0])
        removed = prune_versions(model_dir, keep)
        prune_exports(model_dir)
        config_path = write_models_config(serving_root, base_path_in_server)
    return PushResult(
        version=version,
        destination=os.path.join(model_dir, str(version)),
        published=published,
        removed_versions=removed,
        swept=swept,
        not_versions=not_versions,
        models_config=config_path,
        exports_destination=exports_destination,
        exports_published=exports_published,
    )
