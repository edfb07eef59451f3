"""Serving an ImageAPI over HTTP (``python -m pe_lightning serve``; docs/serving.md).

* :mod:`.protocol`: the wire format (npz bodies, JSON metadata), shared with the clients;
* :mod:`.server`: the ``serve`` subcommand and :func:`~.server.build_server` (LitServe);
* :mod:`.litapi`: the LitServe ``LitAPI`` and the endpoints (imports litserve).

The client is :class:`pe_lightning.apis.RemoteImageAPI`.
"""
