"""telescope.server"""
