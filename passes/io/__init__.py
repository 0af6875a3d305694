"""Files, written once and read back safely: the one place for atomic writes and JSON round trips.

Both packages use these (``passes`` is the lower layer, so they live here): ``atomic.py`` (atomic files and
folders, stale temporaries), ``owned.py`` (folders leap-fx owns, their SHA-256 marker), ``jsondata.py``
(JSON files, ``JsonDataclass``).

- ``atomic_path(path)`` / ``atomic_dir(path)``: a temporary file (directory) next to ``path`` that
  replaces it on success and is removed on failure, so a reader sees the old one or the new one,
  never half of one. They get the mode a plain ``open()`` / ``mkdir`` would give (umask), so every
  file of a run shares one mode. A temporary is locked (``flock``) while it is written, so
  ``clean_stale`` removes only what a killed writer left.
- ``owned_dir(path)`` / ``check_file_target(path)``: what every writer of the API goes through. A folder
  is written only if it is new, empty, or one leap-fx wrote (its marker ``leap-fx-files.json`` lists
  every file with its SHA-256, and nothing else is in it); a file only where no directory is. Anything
  else is refused naming the path; nothing that is not ours is moved or deleted. ``dir_changes``
  compares a folder with its marker (what ``load_slim`` verifies).
- ``write_json`` / ``write_text`` / ``read_json`` / ``read_jsonl``: errors name the file.
- ``JsonDataclass``: ``to_dict`` / ``from_dict`` (unknown keys and wrong types are refused, naming
  the field) / ``to_json`` / ``from_json`` for the configs, the Plan and the reports.
"""
from passes.io.atomic import (
    atomic_dir,
    atomic_path,
    check_file_target,
    clean_stale,
    quiet_logger,
    sha256_file,
    write_text,
)
from passes.io.jsondata import (
    JsonDataclass,
    jsonable,
    read_json,
    read_jsonl,
    write_json,
)
from passes.io.owned import (
    MARKER,
    check_dir_target,
    dir_changes,
    owned_dir,
    written_files,
)

__all__ = ["MARKER", "JsonDataclass", "atomic_dir", "atomic_path", "check_dir_target", "check_file_target",
           "clean_stale", "dir_changes", "jsonable", "owned_dir", "quiet_logger", "read_json", "read_jsonl",
           "sha256_file", "write_json", "write_text", "written_files"]
