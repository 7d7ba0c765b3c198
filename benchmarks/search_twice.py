"""Does a search reproduce? Compare the studies two runs of the same search command left, trial by trial.

Run the same command in two project folders (at once or one after the other), e.g.

    (cd /tmp/a && make -C ~/dqn search) & (cd /tmp/b && make -C ~/dqn search) & wait   # or python -m dqn.train ...
    .venv/bin/python benchmarks/search_twice.py sqlite:////tmp/a/mlruns/optuna.db sqlite:////tmp/b/mlruns/optuna.db

Prints one table row per trial (number, state, params, value, where it was pruned) for both, then whether
they are identical and both picks. Values are compared exactly: the same seeds train bit-identically.
"""

from __future__ import annotations

import argparse

import optuna


def trials(storage: str) -> tuple[str, list[tuple]]:
    """The storage's one study: its name and, per trial, what decides the search's answer."""
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    rows = [
        (t.number, t.state.name, dict(t.params), t.value, (t.user_attrs.get("pruned") or {}).get("step"))
        for t in study.trials
    ]
    return summary.study_name, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", help="Optuna storage URL of the first run's study")
    parser.add_argument("second", help="Optuna storage URL of the second run's study")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (name_a, rows_a), (name_b, rows_b) = trials(args.first), trials(args.second)
    print(f"studies: {name_a} / {name_b}\n")
    print("| trial | state | params | value | pruned at | same in both |")
    print("|---|---|---|---|---|---|")
    for a, b in zip(rows_a, rows_b, strict=False):
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in a[2].items())
        value = "-" if a[3] is None else f"{a[3]:.2f}"
        print(f"| {a[0]} | {a[1]} | {params} | {value} | {a[4] or '-'} | {'yes' if a == b else 'NO: ' + str(b)} |")
    picks = [
        max((r for r in rows if r[1] == "COMPLETE"), key=lambda r: r[3], default=None) for rows in (rows_a, rows_b)
    ]
    print(f"\nidentical: {rows_a == rows_b} ({len(rows_a)} and {len(rows_b)} trials)")
    for label, pick in zip(("first", "second"), picks, strict=True):
        print(f"{label} pick: {'none' if pick is None else f'trial {pick[0]} {pick[2]} value {pick[3]:.2f}'}")


if __name__ == "__main__":
    main()
