"""The run directory: what a run writes to ``--out``, and the rules for reusing it.

- **Ours only.** A run records the entries it owns in ``leap-fx-run.json`` (the run manifest). Nothing
  else in ``--out`` is ever deleted or written over; an entry with one of our names that the manifest
  does not list (the user's own ``train/``, ``slim/``, ...) makes the run refuse the folder. A folder
  of an older leap-fx (a valid ``options.json``, no manifest) counts as a run whose entries are ours.
- **One run at a time.** ``.leap-fx.lock`` is held with ``fcntl.flock`` for the whole run: a second
  process on the same ``--out`` (new, ``--overwrite`` or ``--resume``) is refused with the holder's pid.
- **--overwrite keeps the old run until the new one is complete.** The old run's entries are moved
  into ``.leap-fx-previous/`` and deleted only when the new run has written its report. If the new run
  fails with nothing to resume, its entries are removed and the old run is moved back; if it left
  checkpoints, both stay (``--resume`` continues the new one, ``--overwrite`` drops it again).
- **--resume** continues a run with the same options (``RESUME_FREE`` fields may differ); a complete
  run returns its report (refused if its ``model.onnx`` / ``slim/`` went missing); a folder without a
  run says so and starts a new one. Temporary files a killed run left behind are deleted first.
- A new run that fails (or is interrupted: Ctrl-C) before it has anything to resume leaves ``--out`` as
  it found it, so the same command is not refused the next time; a run killed outright before its first
  checkpoint (nothing to resume, no report) is taken over by the next run without ``--overwrite``.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import sys
import time
from typing import Optional

from leap_fx.run.fingerprint import KEY as CONTENT
from leap_fx.run.fingerprint import check_same_content, run_content
from passes.io import owned_dir, read_json, write_json

ARTIFACTS = ("report.json", "options.json", "model.onnx", "density.png", "curves.png", "structure.png", "slim",
             "tokenizer", "train", "teacher", "model.failed.onnx", "model.opt.onnx", "model.int8.onnx",
             "model.int8.failed.onnx", "model.uncompacted.onnx")
SIDECARS = ("model.failed.onnx", "model.opt.onnx")  # a rejected / optimized graph beside model.onnx
MANIFEST, LOCK, PREVIOUS = "leap-fx-run.json", ".leap-fx.lock", ".leap-fx-previous"
NAMES = ARTIFACTS + (MANIFEST,)
CHECKPOINTS = (os.path.join("train", "checkpoint.pt"), os.path.join("teacher", "checkpoint.pt"))
REQUIRED_WHEN_COMPLETE = ("model.onnx", "slim")
# options that may differ between a run and its --resume (they do not change results)
RESUME_FREE = ("out", "overwrite", "resume", "verbose", "threads", "cache_dir", "use_cache",
               "keep_checkpoints", "continue_anyway")


def _note(msg: str) -> None:
    print(f"[leap-fx] {msg}", file=sys.stderr, flush=True)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def owned(out: str) -> Optional[list[str]]:
    """Names in ``out`` that a leap-fx run wrote, or None when ``out`` holds no run of ours."""
    man = os.path.join(out, MANIFEST)
    if os.path.isfile(man):
        entries = read_json(man, "run manifest")
        entries = entries.get("entries") if isinstance(entries, dict) else None
        if not isinstance(entries, list):
            raise ValueError(f"run manifest {man} is damaged (no list of entries); restore it, or delete the "
                             f"run yourself")
        entries = entries + [MANIFEST]  # the manifest is ours by definition
        if "model.onnx" in entries:  # what `leap-fx export` writes beside the run's model.onnx is the run's too
            entries += list(SIDECARS)
    elif _legacy_options(out):
        entries = list(ARTIFACTS)
    else:
        return None
    return [e for e in dict.fromkeys(entries) if e in NAMES and os.path.lexists(os.path.join(out, e))]


def _legacy_options(out: str) -> bool:
    path = os.path.join(out, "options.json")
    if not os.path.isfile(path):
        return False
    try:
        d = read_json(path, "options file")
    except ValueError:
        return False
    return isinstance(d, dict) and "target_density" in d and "method" in d


def foreign(out: str, ours: Optional[list[str]]) -> list[str]:
    """Entries named like ours that no run of ours wrote (the user's files: never touched)."""
    return [n for n in NAMES if os.path.lexists(os.path.join(out, n)) and n not in (ours or [])]


def temporaries(out: str) -> list[str]:
    """Half-written entries a killed run leaves: ``.<artifact>.*`` (atomic writes' temp names)."""
    if not os.path.isdir(out):
        return []
    return sorted(f for f in os.listdir(out) if any(f.startswith(f".{n}.") for n in NAMES))


class RunDir:
    """``--out`` of one run: ``check()`` (read only), ``open()`` (lock + prepare), ``finish()`` /
    ``fail()`` (keep, roll back or swap), ``close()`` (unlock). See the module doc for the rules."""

    def __init__(self, out: str, opts):
        self.out, self.opts = os.path.abspath(out), opts
        self.created_dir, self.fresh, self.fd = False, False, None

    # -- before anything is touched ------------------------------------------------------------------
    def check(self) -> Optional[list[str]]:
        """Refuse what ``open()`` would refuse, without writing anything; returns the run's entries."""
        out = self.out
        if os.path.exists(out) and not os.path.isdir(out):
            raise ValueError(f"--out {out!r} is a file, not a directory: choose a directory path")
        self._not_in_use()
        ours = owned(out) if os.path.isdir(out) else None
        alien = foreign(out, ours)
        if alien:
            raise ValueError(f"--out {out} holds {', '.join(alien)}, which no leap-fx run wrote there: leap-fx "
                             f"never deletes or writes over files it did not write; choose another --out")
        if ours is not None and not self.opts.resume and not self.opts.overwrite and not self.abandoned(ours):
            if "report.json" in ours:
                state, resume = "complete", "--resume to return its report"
            else:
                state, resume = "unfinished, with checkpoints", "--resume to continue it from its last checkpoint"
            raise ValueError(f"output directory {out} already holds a leap-fx run ({state}: {', '.join(ours)}): pass "
                             f"--overwrite to replace it, {resume}, or choose another --out")
        if ours is not None and self.opts.resume:
            self._same_options()
        return ours

    def abandoned(self, ours: list[str]) -> bool:
        """A run that stopped (killed) before its first checkpoint and report: nothing in it can be resumed or
        returned, so a new run takes its place without --overwrite (none set aside by --overwrite waits)."""
        return ("report.json" not in ours and MANIFEST in ours and not self.resumable()
                and not os.path.exists(os.path.join(self.out, PREVIOUS)))

    def _not_in_use(self) -> None:
        """Probe the lock (shared, released at once): a running run there is named before anything else."""
        path = os.path.join(self.out, LOCK)
        if self.fd is not None or not os.path.isfile(path):
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._in_use(fd) from None
        finally:
            os.close(fd)

    def _in_use(self, fd: int) -> ValueError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "?"
        return ValueError(f"--out {self.out} is in use by another leap-fx run ({holder}); wait for it to "
                          f"finish, or choose another --out")

    def _same_options(self) -> None:
        previous = os.path.join(self.out, "options.json")
        if not os.path.isfile(previous):
            raise ValueError(f"{self.out} has no options.json, so it cannot be resumed: pass --overwrite "
                             f"to start over there, or choose another --out")
        saved = read_json(previous, "options file")
        try:
            before = type(self.opts).from_dict(saved).to_dict()
        except (ValueError, TypeError) as err:
            raise ValueError(f"options file {previous} is not valid ({err}): pass --overwrite to start over "
                             f"there, or choose another --out") from None
        now = self.opts.to_dict()
        diff = sorted(k for k in now if k not in RESUME_FREE and before.get(k) != now[k])
        if diff:
            raise ValueError(f"{self.out} holds a run with different options ({', '.join(diff)}): resume with "
                             f"the same options, or pass --overwrite / another --out")
        check_same_content(saved.get(CONTENT), run_content(self.opts), self.out)  # data / model files unchanged

    # -- the lock and the layout ---------------------------------------------------------------------
    def lock(self) -> None:
        """Take ``.leap-fx.lock`` (created with ``--out`` if needed); refuse if another process holds it."""
        try:
            if not os.path.isdir(self.out):
                os.makedirs(self.out)
                self.created_dir = True
            fd = os.open(os.path.join(self.out, LOCK), os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise ValueError(f"--out {self.out}: cannot write there ({err.strerror}); choose a writable "
                             f"directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            err = self._in_use(fd)
            os.close(fd)
            raise err from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self.fd = fd

    def open(self) -> Optional[dict]:
        """Lock, check again under the lock, prepare. Returns the report of a complete run on ``--resume``."""
        self.lock()
        ours = self.check()
        if self.opts.resume and ours is None:
            _note(f"--resume: {self.out} holds no leap-fx run, so there is nothing to resume: starting a new run")
        for name in temporaries(self.out) if ours is not None else []:  # a killed run's half-written files
            _remove(os.path.join(self.out, name))
        if self.opts.resume and ours is not None:
            return self._resumed(ours)
        if ours is not None and not self.opts.overwrite and not self.opts.resume:  # abandoned(): nothing to keep
            for name in ours:
                _remove(os.path.join(self.out, name))
        elif ours is not None:  # --overwrite
            self._set_aside(ours)
        self.fresh = True
        write_json(os.path.join(self.out, MANIFEST), {"format": "leap-fx-run", "version": 1, "complete": False,
                                                     "entries": list(NAMES)})
        write_json(os.path.join(self.out, "options.json"), {**self.opts.to_dict(), CONTENT: run_content(self.opts)})
        return None

    def _resumed(self, ours: list[str]) -> Optional[dict]:
        if not os.path.isfile(os.path.join(self.out, MANIFEST)):  # a run of an older leap-fx: adopt it
            write_json(os.path.join(self.out, MANIFEST), {"format": "leap-fx-run", "version": 1,
                                                         "complete": "report.json" in ours, "entries": ours})
        report = os.path.join(self.out, "report.json")
        if not os.path.isfile(report):
            return None
        missing = [n for n in REQUIRED_WHEN_COMPLETE if not os.path.exists(os.path.join(self.out, n))]
        if missing:
            raise ValueError(f"the run in {self.out} is complete but {', '.join(missing)} is missing; re-create "
                             f"model.onnx with `leap-fx export {os.path.join(self.out, 'slim')} --out "
                             f"{os.path.join(self.out, 'model.onnx')}`, or run again with --overwrite")
        self._drop_previous()
        return read_json(report, "report")

    def _set_aside(self, ours: list[str]) -> None:
        """Move the old run into ``.leap-fx-previous``, its manifest last: a ``.leap-fx-previous`` without
        a manifest is an aside a kill interrupted, finished here; one with a manifest holds an older run,
        kept unless ours is complete (then ours replaces it)."""
        prev = os.path.join(self.out, PREVIOUS)
        whole = os.path.isfile(os.path.join(prev, MANIFEST))
        if whole and "report.json" not in ours:  # an unfinished overwrite: the complete run aside stays
            for name in ours:
                _remove(os.path.join(self.out, name))
            return
        if whole:
            shutil.rmtree(prev)
        os.makedirs(prev, exist_ok=True)
        for name in sorted(ours, key=lambda n: n == MANIFEST):
            os.replace(os.path.join(self.out, name), os.path.join(prev, name))
        if not os.path.isfile(os.path.join(prev, MANIFEST)):  # a run of an older leap-fx: mark it whole
            write_json(os.path.join(prev, MANIFEST), {"format": "leap-fx-run", "version": 1, "entries": ours})

    def _drop_previous(self) -> None:
        prev = os.path.join(self.out, PREVIOUS)
        if os.path.isdir(prev):
            shutil.rmtree(prev)

    # -- the end ------------------------------------------------------------------------------------------
    def finish(self) -> None:
        """The report is written: the run is complete, an old run set aside by --overwrite goes."""
        ours = owned(self.out) or []
        write_json(os.path.join(self.out, MANIFEST), {"format": "leap-fx-run", "version": 1, "complete": True,
                                                     "entries": ours})
        self._drop_previous()

    def resumable(self) -> bool:
        return any(os.path.isfile(os.path.join(self.out, c)) for c in CHECKPOINTS)

    def fail(self) -> str:
        """After an error: roll a new run back unless it left checkpoints; returns what was kept."""
        prev = os.path.join(self.out, PREVIOUS)
        if not self.fresh or self.fd is None:
            return ""
        if self.resumable():
            kept = f" ({self.out} keeps this run's checkpoints: --resume continues it"
            if os.path.isdir(prev):
                kept += f"; the previous run stays in {prev} until a run there completes"
            return kept + ")"
        for name in (owned(self.out) or []) + temporaries(self.out):
            _remove(os.path.join(self.out, name))
        if os.path.isdir(prev):  # the manifest first: while entries move, the ones in --out are claimed
            for name in sorted(os.listdir(prev), key=lambda n: n != MANIFEST):
                os.replace(os.path.join(prev, name), os.path.join(self.out, name))
            os.rmdir(prev)
            return f" (no checkpoint yet: the previous run in {self.out} was restored)"
        return f" (no checkpoint yet: --out {self.out} was left as it was)"

    def close(self) -> None:
        if self.fd is None:
            return
        try:
            gone = owned(self.out) is None
        except ValueError:  # a damaged manifest: reported by check(), the lock file stays
            gone = False
        if gone:  # no run here (refused, or rolled back): leave no trace
            os.remove(os.path.join(self.out, LOCK))
            if self.created_dir and not os.listdir(self.out):
                os.rmdir(self.out)
        os.close(self.fd)
        self.fd = None


def save_tokenizer(tokenizer, path: str) -> str:
    """The run's ``tokenizer/``, written atomically with its file list (``passes.io.owned_dir``)."""
    with owned_dir(path, "tokenizer folder") as tmp:
        tokenizer.save_pretrained(tmp)
    return path
