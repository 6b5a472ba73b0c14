"""Give every summary row written before rows carried provenance its own, recovered from git history.

    python benchmarks/backfill_provenance.py          # fills rows that lack "provenance"; never rewrites one

For each such row, the versions of its results file are read from ``git log`` oldest first; the
first version in which the row's numbers appear is the run that measured them, and that version's
own record (commit, dirty flag, command, data sha256, threads) becomes the row's provenance. This
matters where a script merged earlier rows into its file and restamped the whole file with the
latest run (``ablation.py`` did): the row then gets the commit of the run that really measured it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = ROOT / "benchmarks" / "results" / "summary.json"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, check=True).stdout


def _versions(path: str) -> list[tuple[str, dict]]:
    """(commit, parsed file) for every committed version of ``path``, oldest first."""
    out = []
    for commit in reversed(_git("log", "--format=%H", "--", path).split()):
        try:
            out.append((commit, json.loads(_git("show", f"{commit}:{path}"))))
        except (subprocess.CalledProcessError, json.JSONDecodeError):
            continue
    return out


def _numbers(payload: dict, row: dict) -> list:
    """Candidate records inside one version of a results file that can hold the row's metrics."""
    found = []
    for key in ("variants", "settings"):
        if isinstance(payload.get(key), dict):
            found += list(payload[key].values())
    return found + [payload]


def _contains(record, metrics: dict) -> bool:
    text = json.dumps(record)
    return all(json.dumps(v) in text for k, v in metrics.items() if isinstance(v, float) and k.startswith("test_"))


def recovered(row: dict, versions: list[tuple[str, dict]]) -> dict:
    for commit, payload in versions:
        if any(_contains(record, row["metrics"]) for record in _numbers(payload, row)):
            git = payload.get("git") or (payload.get("last_run") or {}).get("git") or {}
            machine = payload.get("machine") or {}
            return {"commit": git.get("commit"), "dirty": git.get("dirty"), "command": payload.get("command"),
                    "data_sha256": payload.get("data_sha256"), "precision": None, "threads": machine.get("torch_threads"),
                    "recovered_from": f"{row['results_file']} at commit {commit[:12]} (first version holding these numbers)"}
    return {"commit": None, "note": "no committed version of the results file holds these numbers"}


def main() -> None:
    rows = json.loads(SUMMARY.read_text())
    cache: dict[str, list] = {}
    filled = 0
    for row in rows:
        if row.get("provenance"):
            continue
        versions = cache.setdefault(row["results_file"], _versions(row["results_file"]))
        row["provenance"] = recovered(row, versions)
        filled += 1
    SUMMARY.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"filled provenance of {filled} row(s); rows already carrying one were left as they were")


if __name__ == "__main__":
    main()
