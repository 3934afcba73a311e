"""telescope.proto"""
