"""MLflow run searches by exact tag values, never by pasting text into a filter string.

A search folder like `/home/o'neil/runs` or a name like `it's` broke every f-string filter (`tags.x = '{value}'`).
MLflow's filter grammar has no escape character: a literal is quoted with `'` or with `"`, so a value containing one
kind is quoted with the other, and a value containing both has no literal at all. `runs_where` therefore sends the
clauses it can write and checks every value again here, so the answer is exact for any value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PAGE_SIZE = 1000  # the most MLflow returns per search_runs page


def literal(value: str) -> str | None:
    """`value` as an MLflow filter literal, or None when it holds both quote kinds (no literal can express it)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def tag_filter(tags: Mapping[str, str], status: str | None = None) -> str:
    """`tags.`k` = 'v' and ...` for every tag whose value has a literal, plus the run status if given."""
    clauses = [f"tags.`{key}` = {lit}" for key, value in tags.items() if (lit := literal(value)) is not None]
    if status is not None:
        clauses.append(f"attributes.status = {literal(status)}")
    return " and ".join(clauses)


def runs_where(client: Any, experiment_ids: list[str], tags: Mapping[str, str], status: str | None = None,
               **search_kwargs: Any) -> list[Any]:
    """Every run of `experiment_ids` whose tags equal `tags` exactly (and whose status is `status`), all pages."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, tag_filter(tags, status), max_results=PAGE_SIZE,
                                  page_token=token, **search_kwargs)
        runs += [r for r in page if all(r.data.tags.get(k) == v for k, v in tags.items())
                 and (status is None or r.info.status == status)]
        token = page.token
        if not token:
            return runs
