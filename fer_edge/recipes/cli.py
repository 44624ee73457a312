"""`fer-edge recipe FILE`: the command; the work is in fer_edge.recipes.recipe (and .cv for `cv:` recipes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from fer_edge.recipes.recipe import convert_config, load_recipe, recipe_name, resolve_data, run_recipe

HELP = (
    "Run a recipe from converters/ end to end: fine-tune (or convert a model file), export fp32/int8, bench "
    "on the held-out split, write the results-table row benchmarks/results/<table>/<recipe>.json.\n\n"
    "[bold]Examples[/]\n\n"
    "[cyan]fer-edge recipe converters/fer2013_mobilenet_best.yaml[/]\n\n"
    "[cyan]fer-edge recipe converters/fer2013_mobilenet_v2.yaml --budget-scale 0.25[/] (a quarter of the epochs)\n\n"
    "[cyan]fer-edge recipe converters/fer2013_mobilenet_best.yaml --from-convert runs/my-run[/] (bench an existing "
    "convert output, no training)\n\n"
    "[cyan]fer-edge recipe converters/ckplus_cv.yaml[/] (a `cv:` recipe: subject-independent k-fold)\n\n"
    "Data paths in recipes are relative to the shared folder (--shared, default ../shared)."
)


def register(app) -> None:
    import typer

    @app.command("recipe", help=HELP, no_args_is_help=True)
    def recipe_cmd(
        recipe: Path = typer.Argument(..., help="Recipe file (YAML or TOML), e.g. converters/fer2013_mobilenet_best.yaml"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Working folder (default runs/recipes/<recipe>)."),
        budget_scale: float = typer.Option(1.0, "--budget-scale", help="Multiply both epoch budgets by F "
                                           "(each phase that runs keeps >= 1 epoch)."),
        from_convert: Optional[Path] = typer.Option(None, "--from-convert", help="Bench this existing `fer-edge "
                                                    "convert` output folder instead of training."),
        results: Optional[Path] = typer.Option(None, "--results", help="Folder for the row JSON (default "
                                               "benchmarks/results/<table>)."),
        shared: Optional[Path] = typer.Option(None, "--shared", help="Folder the recipe's data path is relative "
                                              "to (default $FER_EDGE_SHARED or ../shared)."),
        folds: Optional[int] = typer.Option(None, "--folds", help="cv recipes: run only the first N folds "
                                            "(to size a run); finished folds are kept and skipped on rerun."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Validate the recipe and print the convert "
                                     "settings it resolves to; run nothing."),
    ) -> None:
        if dry_run:
            r = load_recipe(recipe)
            cfg = convert_config(r, resolve_data(r, shared), Path(out or Path("runs") / "recipes" / recipe_name(recipe))
                                 / "convert", budget_scale) if r.model is not None else None
            print(json.dumps({"recipe": r.model_dump(mode="json"),
                              "convert": cfg.model_dump(mode="json") if cfg else None}, indent=2))
            return
        run_recipe(recipe, out=out, budget_scale=budget_scale, from_convert=from_convert, results=results,
                   shared=shared, folds=folds)
