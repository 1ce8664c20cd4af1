"""The top layer: the `eduranker` command, the reranking endpoints' server, the local cluster and its demo.

It imports the foundation (`eduranker`) and the services (`producer`, `worker`); nothing below imports it.
"""
