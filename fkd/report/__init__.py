"""What a user looks at after a run: the out-of-fold error analysis (`fkd errors`), the run table (`fkd runs`), faces.
"""
