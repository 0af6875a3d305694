"""The machine leap-fx runs on: thread counts and OpenMP waiting (``threads.py``), the device
(``device.py``), the cache root (``cache.py``), progress lines for long loops (``progress.py``).
Names load lazily: the CLI reads ``threads`` before torch may be imported."""
from importlib import import_module

_EXPORTS = {"cache_root": "leap_fx.env.cache", "cache_path": "leap_fx.env.cache",
            "choose_device": "leap_fx.env.device", "Progress": "leap_fx.env.progress",
            "choose_threads": "leap_fx.env.threads", "prefer_passive_waiting": "leap_fx.env.threads"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'leap_fx.env' has no attribute {name!r}")
