"""Threads where the worker and the search API share a host: together no more than the cores."""

import pytest

from console.localcluster import shared_host_worker_threads


@pytest.mark.parametrize(("cores", "worker"), [(1, 1), (2, 1), (4, 3), (16, 15)])
def test_the_worker_leaves_the_search_api_one_core(cores, worker):
    assert shared_host_worker_threads(cores) == worker
    assert worker + 1 <= max(cores, 2)  # the API's one thread per request beside it
