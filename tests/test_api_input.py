"""What the reranking endpoint refuses before any model runs (a table over the pure decision), and a
request by resource ids where the router was given no lookup. No server, no model."""

import pytest
from fastapi import HTTPException

from eduranker.api.router import Limits, _resolve, problem_of
from eduranker.api.schemas import RerankRequest

LIMITS = Limits(max_documents=3, max_text_chars=10)


@pytest.mark.parametrize(
    "request_fields,problem",
    [
        ({"query": "plants", "documents": ["a", "b"]}, None),
        ({"query": "plants", "documents": []}, None),  # nothing to rank: an empty answer, not an error
        ({"query": "plants", "resource_ids": ["r1"]}, None),
        ({"query": "", "documents": ["a"]}, "the query is empty"),
        ({"query": " \t\n", "documents": ["a"]}, "the query is empty"),
        ({"query": "plants"}, "give either documents or resource_ids"),
        ({"query": "plants", "documents": ["a"], "resource_ids": ["r"]}, "give either documents or resource_ids"),
        ({"query": "plants", "documents": ["a"] * 4}, "4 documents: at most 3 per request"),
        ({"query": "plants", "resource_ids": ["r"] * 4}, "4 documents: at most 3 per request"),
        ({"query": "x" * 11, "documents": ["a"]}, "the query has 11 characters: at most 10"),
        ({"query": "plants", "documents": ["a", "y" * 11]}, "document 1 has 11 characters: at most 10"),
        ({"query": "plants", "documents": ["y" * 10]}, None),  # the clip itself is allowed
    ],
)
def test_what_a_request_is_refused_for(request_fields, problem):
    assert problem_of(RerankRequest(**request_fields), LIMITS) == problem


def test_resource_ids_without_a_lookup_are_refused_with_a_reason():
    with pytest.raises(HTTPException) as refused:
        _resolve(None, ["r1"], LIMITS)
    assert (
        refused.value.status_code == 422 and refused.value.detail == "this API has no resource lookup: send documents"
    )


def test_resource_texts_are_clipped_and_unknown_ids_named():
    assert _resolve(lambda ids: ["t" * 20 for _ in ids], ["r1"], LIMITS) == ["t" * 10]
    with pytest.raises(HTTPException) as refused:
        _resolve(lambda ids: [None, "text"], ["gone", "r2"], LIMITS)
    assert refused.value.detail == "unknown resource ids: gone"
