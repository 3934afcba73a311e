"""telescope.server: the gRPC service (telescope.v1 Collections, Points, Search, Embed), its auth, health and
reflection, and the Python client.

Uses telescope.index, telescope.embedder and telescope.pipelines; the CLI (``telescope serve``) only parses
options and calls ``TelescopeServer``.
"""
