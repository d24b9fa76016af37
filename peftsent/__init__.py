"""peftsent: parameter-efficient fine-tuning of encoders for sentiment classification.

The public API is imported lazily so ``python -m peftsent.<verb> --help`` stays instant.
"""

from __future__ import annotations

__version__ = "0.2.0"

_API = {
    "load_recipe": "peftsent.recipe",
    "Recipe": "peftsent.recipe",
    "RecipeError": "peftsent.errors",
    "PeftsentError": "peftsent.errors",
    "evaluate": "peftsent.eval",
}
# train / merge / compare live in modules of the same name: ``from peftsent.train import train``.

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'peftsent' has no attribute {name!r}")
