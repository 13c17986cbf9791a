"""The README's example queries run against the real schema, so the docs cannot rot."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from storage.history import HistoryStore
from storage.query import QueryEngine

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLES = re.findall(r"\| `(SELECT[^`]*)` \|", README.read_text())


def test_the_readme_has_examples() -> None:
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize("sql", EXAMPLES)
def test_example_runs(sql: str, tmp_path: Path) -> None:
    with HistoryStore(tmp_path / "h.duckdb") as store:
        result = QueryEngine(store.connection, timeout_s=10, max_rows=100).run(sql)
    assert result.columns
