"""Moved to analytics.reaper (the reaper writes the trail of calls whose worker died).

Kept only for gateway/logwriter.py's import of ``WORKER_LOST`` until it names analytics.reaper;
then this file goes.
"""

from analytics.reaper import WORKER_LOST

__all__ = ["WORKER_LOST"]
