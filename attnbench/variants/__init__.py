"""Built-in attention variants: one module per family, each class registers itself on import.

Every module in this package is imported here, so adding a family is adding a file.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
