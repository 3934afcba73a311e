"""telescope.eval: quality and speed of embeddings and search plans, measured with kept libraries.

Uses telescope.embedder and telescope.index.
"""
