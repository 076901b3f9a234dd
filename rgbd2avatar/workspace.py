"""The subject workspace: one directory per person, every stage's inputs and outputs in it.

Layout::

    <subject>/
      manifest.json   what each stage last produced, from what, with which parameters
      recording/      the RGB-D sequence (capture.sequence format), from any source
      preprocess/     per-frame points and normals
      body_fit/       per-frame body pose and shape
      pina/           the PINA avatar: networks, refined poses, checkpoints
      meshes/         canonical and posed meshes (MISE)
      animation/      animated meshes / rigged glTF
      texture/        textured avatar, renders

The manifest records, per stage: input paths with SHA-256, parameters (plain JSON), the
rgbd2avatar version, output paths with SHA-256, and start/end times (ISO 8601, UTC). A stage is
up to date when all of those still hold (see :meth:`Workspace.stale_reason`), so a stage whose
outputs are current is skipped and a changed input, parameter, version or output re-runs it.

Paths in the manifest are relative to the workspace (POSIX separators) when inside it, absolute
otherwise; relative paths given to the API are relative to the workspace root, not the current
directory. A directory's hash covers every file below it (names and contents). File hashes are
cached in the manifest under their (size, mtime_ns, inode), so unchanged multi-GB recordings
are not re-read. One process at a time may record into a workspace.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import rgbd2avatar
from capture.files import TEMP_PREFIX, PathLike, sha256_file, write_json
from rgbd2avatar.errors import UserError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "rgbd2avatar-workspace"
MANIFEST_VERSION = 1
STAGES = ("recording", "preprocess", "body_fit", "pina", "meshes", "animation", "texture")
"""Stage names in pipeline order; each stage writes into the directory of the same name."""

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageRecord:
    """What one stage last produced.

    Attributes:
        inputs, outputs: manifest path → SHA-256 hex (a directory: hash of its file list).
        params: the stage's parameters, plain JSON.
        software_version: rgbd2avatar version that ran the stage.
        started, finished: ISO 8601 UTC times.
    """

    inputs: dict[str, str]
    params: dict[str, Any]
    software_version: str
    outputs: dict[str, str]
    started: str
    finished: str


class Workspace:
    """One subject's workspace (see the module docstring for the layout).

    Args:
        root: the subject directory; it must exist and hold ``manifest.json``
            (use :meth:`create` for a new subject).
        software_version: version recorded and compared; defaults to ``rgbd2avatar.__version__``.
    Raises:
        UserError: ``root`` is not a workspace, or its manifest is corrupt.
    """

    def __init__(self, root: PathLike, *, software_version: str | None = None) -> None:
        self.root = Path(root).absolute()
        self.software_version = software_version or rgbd2avatar.__version__
        if not self.root.is_dir():
            raise UserError(
                f"Subject workspace {self.root} does not exist; check the path or record a subject first."
            )
        if not self.manifest_path.is_file():
            raise UserError(
                f"{self.root} is not a subject workspace (no {MANIFEST}); pass a subject directory "
                "created by rgbd2avatar."
            )
        self._read_manifest()

    @classmethod
    def create(cls, root: PathLike, *, software_version: str | None = None) -> Workspace:
        """Open the workspace at ``root``, creating the directory and an empty manifest if needed."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        if not (root / MANIFEST).exists():
            write_json(root / MANIFEST, _empty_manifest())
        return cls(root, software_version=software_version)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def stage_dir(self, stage: str) -> Path:
        """The directory of ``stage``, created if missing."""
        _check_stage(stage)
        path = self.root / stage
        path.mkdir(exist_ok=True)
        return path

    def stage_record(self, stage: str) -> StageRecord | None:
        """What ``stage`` last recorded, or ``None`` if it never ran (or was invalidated)."""
        _check_stage(stage)
        entry = self._read_manifest()["stages"].get(stage)
        return None if entry is None else StageRecord(**entry)

    def stale_reason(
        self, stage: str, inputs: Iterable[PathLike] | None = None, params: Mapping[str, Any] | None = None
    ) -> str | None:
        """Why ``stage`` must run again, or ``None`` when it is up to date.

        Up to date means: the stage was recorded by this software version with the same
        parameters and the same set of inputs, every input still has its recorded hash, and every
        output exists with its recorded hash.

        Args:
            inputs: the inputs the stage would read now; ``None`` = the recorded ones.
            params: the parameters it would use now; ``None`` = the recorded ones.
        Returns:
            a short reason such as ``"parameters changed: iterations"``, or ``None``.
        """
        record = self.stage_record(stage)
        if record is None:
            return "never run"
        if record.software_version != self.software_version:
            return f"made by rgbd2avatar {record.software_version}, this is {self.software_version}"
        if params is not None and _json_safe(params) != record.params:
            return "parameters changed: " + ", ".join(_changed_keys(record.params, _json_safe(params)))
        if inputs is not None and {self.manifest_key(path) for path in inputs} != set(record.inputs):
            return "a different set of inputs"
        with self._hasher() as hasher:
            return _first_mismatch(hasher, record.inputs, "input") or _first_mismatch(
                hasher, record.outputs, "output"
            )

    def is_up_to_date(self, stage: str, inputs: Iterable[PathLike], params: Mapping[str, Any]) -> bool:
        """True when ``stage`` need not run again for these inputs and parameters."""
        return self.stale_reason(stage, inputs, params) is None

    def record(
        self,
        stage: str,
        inputs: Iterable[PathLike],
        params: Mapping[str, Any],
        outputs: Iterable[PathLike],
        *,
        started: float | None = None,
    ) -> StageRecord:
        """Record a finished stage in the manifest (written atomically).

        Args:
            inputs, outputs: files or directories (all must exist).
            params: JSON-able parameters (paths are stored as strings).
            started: ``time.time()`` when the stage began; default now.
        """
        _check_stage(stage)
        finished = time.time()
        hasher = self._hasher()
        record = StageRecord(
            inputs=_existing_hashes(hasher, map(self.manifest_key, inputs)),
            params=_json_safe(params),
            software_version=self.software_version,
            outputs=_existing_hashes(hasher, map(self.manifest_key, outputs)),
            started=_iso(finished if started is None else started),
            finished=_iso(finished),
        )
        manifest = self._read_manifest()
        manifest["stages"][stage] = asdict(record)
        manifest["hash_cache"] = _pruned_cache(hasher.cache, manifest["stages"].values())
        write_json(self.manifest_path, manifest)
        return record

    def invalidate(self, stage: str) -> None:
        """Forget what ``stage`` recorded, so it runs again (its files are left in place)."""
        _check_stage(stage)
        manifest = self._read_manifest()
        if manifest["stages"].pop(stage, None) is not None:
            write_json(self.manifest_path, manifest)

    def resolve(self, key: str) -> Path:
        """The file or directory a manifest path names."""
        return self.root / key

    def manifest_key(self, path: PathLike) -> str:
        """Manifest path of ``path``: relative POSIX inside the workspace, absolute outside."""
        absolute = Path(os.path.normpath(self.root / path))
        if absolute.is_relative_to(self.root):
            return absolute.relative_to(self.root).as_posix()
        return absolute.as_posix()

    def _read_manifest(self) -> dict[str, Any]:
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UserError(
                f"The workspace manifest {self.manifest_path} is unreadable ({error}); restore it, or delete "
                "it and start the subject again."
            ) from None
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise UserError(f"{self.manifest_path} is not an rgbd2avatar manifest; pass a subject directory.")
        return manifest

    def _hasher(self) -> _CachedHasher:
        """A hasher using (and, on exit, saving) the manifest's hash cache."""
        return _CachedHasher(self, self._read_manifest().get("hash_cache", {}))


class _CachedHasher:
    """SHA-256 of files and directories with a (size, mtime_ns, inode) → hash cache.

    Used as a context manager; on exit, new cache entries are saved to the manifest.
    """

    def __init__(self, workspace: Workspace, cache: dict[str, list]) -> None:
        self.workspace = workspace
        self.cache = dict(cache)
        self._changed = False

    def __enter__(self) -> _CachedHasher:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None and self._changed:
            self._save()

    def hash(self, key: str) -> str | None:
        """SHA-256 hex of the file or directory at manifest path ``key``; ``None`` if missing."""
        path = self.workspace.resolve(key)
        if path.is_dir():
            return self._hash_directory(path)
        if path.is_file():
            return self._hash_file(key, path)
        return None

    def _hash_file(self, key: str, path: Path) -> str:
        stat = path.stat()
        signature = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        cached = self.cache.get(key)
        if cached is not None and cached[:3] == signature:
            return cached[3]
        digest = sha256_file(path)
        self.cache[key] = [*signature, digest]
        self._changed = True
        return digest

    def _hash_directory(self, directory: Path) -> str:
        """Hash of the sorted (relative path, file hash) list of every file below ``directory``."""
        digest = hashlib.sha256()
        files = sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(TEMP_PREFIX))
        for path in files:
            file_hash = self._hash_file(self.workspace.manifest_key(path), path)
            digest.update(f"{path.relative_to(directory).as_posix()}\0{file_hash}\n".encode())
        return digest.hexdigest()

    def _save(self) -> None:
        """Save the cache; a read-only workspace just stays uncached."""
        manifest = self.workspace._read_manifest()
        manifest["hash_cache"] = self.cache
        try:
            write_json(self.workspace.manifest_path, manifest)
        except PermissionError:
            _log.debug("cannot write %s; file hashes stay uncached", self.workspace.manifest_path)


def _first_mismatch(hasher: _CachedHasher, recorded: Mapping[str, str], kind: str) -> str | None:
    """A reason naming the first recorded path whose current hash differs, or ``None``."""
    for key, digest in recorded.items():
        current = hasher.hash(key)
        if current is None:
            return f"{kind} missing: {key}"
        if current != digest:
            return f"{kind} changed: {key}"
    return None


def _existing_hashes(hasher: _CachedHasher, keys: Iterable[str]) -> dict[str, str]:
    """Manifest path → hash for ``keys``; ValueError if one does not exist."""
    hashes = {key: hasher.hash(key) for key in keys}
    missing = [key for key, digest in hashes.items() if digest is None]
    if missing:
        raise ValueError(f"cannot record missing files: {', '.join(missing)}")
    return hashes


def _pruned_cache(cache: dict[str, list], records: Iterable[Mapping[str, Any]]) -> dict[str, list]:
    """Cache entries for files that some record's inputs or outputs name or contain."""
    roots = {key for record in records for key in (*record["inputs"], *record["outputs"])}
    return {key: entry for key, entry in cache.items() if any(_within(key, root) for root in roots)}


def _within(key: str, root: str) -> bool:
    return key == root or key.startswith(root.rstrip("/") + "/")


def _changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Sorted top-level keys whose values differ between two parameter dicts."""
    return sorted(key for key in old.keys() | new.keys() if old.get(key, ...) != new.get(key, ...))


def _json_safe(params: Mapping[str, Any]) -> dict[str, Any]:
    """A plain-JSON copy of ``params``: paths become strings, tuples lists; TypeError otherwise."""
    return json.loads(json.dumps(dict(params), allow_nan=False, sort_keys=True, default=_path_to_str))


def _path_to_str(value: Any) -> str:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"stage parameter of type {type(value).__name__} is not JSON-serialisable: {value!r}")


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def _empty_manifest() -> dict[str, Any]:
    return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "stages": {}, "hash_cache": {}}
