"""The User Batch facility: whether and when a run starts, as whom, and what it is charged.

The queue and ledger (``ledger``, ``models``, ``accounting``: allocations, reservations, charges), the service
(``service``: submit, cancel, rerun, export, tokens), the REST API (``api``) and its client (``client``), the
worker that launches runs as their owners (``worker``, ``accounts``, ``isolation``, ``storage``, ``runapi``), run
kinds (``run_kinds``: template, script, workflow; plug-ins add more), templates and SQL workflows. *Where* a run
executes — the runners and the cluster schedulers' configuration — is :mod:`userbatch.cluster`.
"""
