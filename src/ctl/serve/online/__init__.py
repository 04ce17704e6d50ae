"""``ctl serve``: an artifact answering scoring requests over HTTP, swapped for newer ones without a pause.

Built on FastAPI and uvicorn, one process: :mod:`.app` (routes), :mod:`.schema` (the request and
answer), :mod:`.scoring` (a request through the offline encoder and graph of ``ctl score``),
:mod:`.state` (the model served and its one-reference swap), :mod:`.watcher` (the published
folder, reloads), :mod:`.admission` (the bound on requests in flight), :mod:`.metrics`
(Prometheus) and :mod:`.cli` (the command). See ``docs/serving.md``.
"""
