"""``python -m kolors.recipe --out DIR [...]``: train the built-in model (see :mod:`kolors.recipe.run`)."""

from .run import main

if __name__ == "__main__":
    raise SystemExit(main())
