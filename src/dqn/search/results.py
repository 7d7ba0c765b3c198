"""What an Optuna search leaves when its command ends: the study's trials as trials.csv and trials.md,
Optuna's optimisation history and param importances as PNG, and the best trial on the study's parent run.

Written after every command into its sweep folder, so a resumed or shared study's latest files cover all
its trials. The configs' seed-level comparison is `dqn.report.sweep_report`'s report, which the sweep callback adds.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Param, Run  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from dqn.config import first_line  # noqa: E402
from dqn.search.study import INTERRUPTED, SCORES, Search  # noqa: E402
from dqn.search.trial import PRUNED  # noqa: E402
from dqn.tables import markdown_table, write_csv  # noqa: E402

log = logging.getLogger("dqn")
ARTIFACTS = "search"  # the parent run's folder for these files
FEW = 3  # fewer COMPLETE trials than this, and the answer says its pick is weak


def write_results(
    study: optuna.Study, search: Search, out_dir: Path, mlflow: tuple[MlflowClient, Run] | None
) -> list[Path]:
    """Write the files into `out_dir`, log them and the best trial to the parent run; return the files."""
    trials = study.get_trials(deepcopy=False)
    rows = [trial_row(trial, search) for trial in trials]
    best = best_trial(study)
    answer = evidence(trials, best, search)
    files = [
        write_csv(rows, out_dir / "trials.csv", list(rows[0]) if rows else ["number"]),
        write_markdown(rows, answer, search, out_dir / "trials.md"),
    ]
    files += plots(study, out_dir)
    log.log(logging.WARNING if weak(trials) else logging.INFO, "%s", answer)
    if mlflow is not None:
        client, parent = mlflow
        client.set_tag(parent.info.run_id, "search_answer", answer)
        if best is not None:
            client.set_tag(parent.info.run_id, "best_trial", str(best.number))
            client.set_tag(parent.info.run_id, "best_params", json.dumps(best.params))
            log_best_params(client, parent.info.run_id, best)
            client.log_metric(parent.info.run_id, "best_value", best.value, step=len(trials))
        for path in files:
            client.log_artifact(parent.info.run_id, str(path), ARTIFACTS)
    return files


def log_best_params(client: MlflowClient, run_id: str, best: FrozenTrial) -> None:
    """The pick as the parent's params (`best.lr`, ...), where the UI's Parameters tab and run comparison show it.

    MLflow keeps a param's first value: when a later command on the same study moves the best, the params
    keep the earlier pick and the `best_params` tag (and `best_trial`) hold the current one."""
    logged = client.get_run(run_id).data.params
    params = [Param(f"best.{key}", str(value)) for key, value in best.params.items() if f"best.{key}" not in logged]
    if params:
        client.log_batch(run_id, params=params)


def evidence(trials: list[FrozenTrial], best: FrozenTrial | None, search: Search) -> str:
    """The search's answer and what it rests on, in one line: "best: lr=0.0015, batch_size=256 (trial 5,
    3 seeds, mean 233.0); 2 of 8 trials completed, 6 pruned", with a warning when few trials completed."""
    state = Counter(t.state for t in trials if t.state.is_finished() and INTERRUPTED not in t.user_attrs)
    tally = f"{state[TrialState.COMPLETE]} of {sum(state.values())} trials completed, {state[TrialState.PRUNED]} pruned"
    if state[TrialState.FAIL]:
        tally += f", {state[TrialState.FAIL]} failed"
    if best is None:
        return f"best: none yet; {tally}"
    params = ", ".join(f"{name}={_cell(value)}" for name, value in best.params.items())
    line = f"best: {params} (trial {best.number}, {len(search.seeds)} seeds, mean {best.value:.1f}); {tally}"
    if weak(trials):
        line += f"; warning: the pick rests on fewer than {FEW} completed trials, a guess among few"
    return line


def weak(trials: list[FrozenTrial]) -> bool:
    """Whether the pick rests on fewer than FEW COMPLETE trials: the best of two is barely a comparison."""
    return sum(t.state == TrialState.COMPLETE for t in trials) < FEW


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The COMPLETE trial with the highest mean score; None before any."""
    try:
        return study.best_trial
    except ValueError:
        return None


def trial_row(trial: FrozenTrial, search: Search) -> dict[str, Any]:
    """One line of trials.csv: number, state, value, the params, the seeds' scores, where it was pruned."""
    attrs = trial.user_attrs
    notes = []
    if INTERRUPTED in attrs:
        notes.append(f"interrupted ({attrs[INTERRUPTED]}), queued again")
    if "rerun_of" in attrs:
        notes.append(f"rerun of trial {attrs['rerun_of']}")
    if "failed_seeds" in attrs:
        notes.append(f"failed seeds {attrs['failed_seeds']}")
    pruned = attrs.get(PRUNED, {})
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        **{name: trial.params.get(name) for name in search.space},
        "seed_scores": " ".join(f"{seed}:{score:.1f}" for seed, score in attrs.get(SCORES, {}).items()),
        "pruned_at_step": pruned.get("step"),
        "note": "; ".join(notes),
    }


def write_markdown(rows: list[dict[str, Any]], answer: str, search: Search, path: Path) -> Path:
    counts = {state.name: sum(row["state"] == state.name for row in rows) for state in TrialState}
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    lines = [
        f"# Study {search.study_name}",
        "",
        f"Sampler {search.settings.sampler}, pruner {search.settings.pruner}, {len(search.seeds)} seeds per trial "
        f"(value: the mean of their final_eval_return_mean), {search.n_trials} trials requested: {summary}.",
        "",
        answer[0].upper() + answer[1:] + ".",
        "",
    ]
    if rows:
        lines.append(markdown_table(list(rows[0]), [[_cell(value) for value in row.values()] for row in rows]))
    lines += ["", "![Optimisation history](optimization_history.png)", "", "![Importances](param_importances.png)"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Optuna's own figures (its matplotlib backend); one that Optuna cannot draw yet (importances need two
    COMPLETE trials that differ) is left out with a log line."""
    from optuna.visualization import matplotlib as figures

    drawn = []
    if not any(trial.state == TrialState.COMPLETE for trial in study.get_trials(deepcopy=False)):
        log.info("no COMPLETE trial yet: no optimisation history nor importances")
        return drawn
    for name, draw in (
        ("optimization_history.png", figures.plot_optimization_history),
        ("param_importances.png", figures.plot_param_importances),
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the matplotlib backend is "experimental"
                axes = draw(study)
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.savefig(out_dir / name, dpi=100, bbox_inches="tight")
            plt.close(figure)
            drawn.append(out_dir / name)
        except Exception as error:  # too few trials, a single value: Optuna says why
            log.info("%s not drawn: %s", name, first_line(error))
    return drawn
