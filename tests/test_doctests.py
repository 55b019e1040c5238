"""The examples in theory's docstrings run and print what they say (``python -m doctest`` style).

Docstrings are the first documentation a researcher reads (``help(theory.spec)``); an
example that no longer runs is a defect like any other. Only theory is collected: its
examples are small and symbolic or quadrature-fast (seconds in all).
"""

import doctest
import importlib
import pkgutil

import pytest

import theory

MODULES = sorted(info.name for info in pkgutil.walk_packages(theory.__path__, "theory.")
                 if not info.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} fail; run python -c \"import doctest, {name} as m; doctest.testmod(m)\""
