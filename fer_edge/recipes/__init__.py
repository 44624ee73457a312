"""Recipes side: one file per published-table row, run end to end (convert, then bench).

It sits above the convert and bench sides, which it drives, and below the shell: nothing but
fer_edge/cli.py imports it. recipe.py parses and runs a recipe, cv.py runs a `cv:` recipe's
subject-independent k-fold, cli.py is the `fer-edge recipe` command.
"""

from fer_edge.recipes.recipe import (Recipe, convert_config, load_recipe, parse_recipe, recipe_name, resolve_data,
                                     run_recipe, scaled_epochs)

__all__ = ["Recipe", "convert_config", "load_recipe", "parse_recipe", "recipe_name", "resolve_data", "run_recipe",
           "scaled_epochs"]
