"""Old home of the task registry, kept so ``attnbench.bench.tasks.register_task`` (and its submodules) still import.

The tasks now live in :mod:`attnbench.tasks`, a peer of :mod:`attnbench.variants`.
"""

import sys

from attnbench.tasks import *  # noqa: F403  (this shim re-exports the package's public names)
from attnbench.tasks import __all__  # noqa: F401  (so `from attnbench.bench.tasks import *` matches)

# `import attnbench.bench.tasks.base` and friends resolve to the very same modules, not second copies
for _name, _module in list(sys.modules.items()):
    if _name.startswith("attnbench.tasks."):
        sys.modules["attnbench.bench.tasks." + _name.removeprefix("attnbench.tasks.")] = _module
