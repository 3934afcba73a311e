"""telescope.cli"""
