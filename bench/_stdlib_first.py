"""Keep the standard library ahead of this folder on ``sys.path``.

Issue 14 names its benchmark ``bench/queue.py``. Python puts a script's own folder first on ``sys.path``, so for every
``python bench/<name>.py`` that file would shadow the standard library's ``queue`` (which grpc, concurrent.futures and
logging import). Each script imports this module first; it moves the folder to the end of the path, where sibling
modules are still found but never ahead of the standard library.
"""

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_ours = [p for p in sys.path if Path(p or ".").resolve() == _HERE]
sys.path[:] = [p for p in sys.path if p not in _ours] + _ours
