"""The built-in ``file`` connector: a source that reads or tails local files, and a sink that
appends to them exactly once. ``plugin`` registers both; ``config`` holds their config models.
"""
