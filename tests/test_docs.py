"""The docs build strictly, and the README / results tables are what summary.json gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_mkdocs_builds_strictly(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site" / "results" / "index.html").exists()


def test_readme_and_results_tables_equal_the_generator_output():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import readme_tables
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    for path, expected in readme_tables.outputs().items():
        assert path.read_text() == expected, f"{path.name} is stale: run python benchmarks/readme_tables.py"


def test_the_readme_first_screen_is_short():
    head = (REPO / "README.md").read_text().split("## Documentation")[0]
    assert head.count("\n") < 60 and head.count("<!-- results:start -->") == 1
    table = head.split("<!-- results:start -->")[1].split("<!-- results:end -->")[0]
    assert 3 <= table.strip().count("\n") - 1 <= 12  # header + separator + at most 12 rows
