"""Sphinx configuration for pysketch.

Build (as CI does)::

    python -m sphinx -W --keep-going -q -b html docs docs/_build/html

Run the examples of every page (and of the docstrings on the API pages)::

    python -m sphinx -b doctest docs docs/_build/doctest
"""

import os
import sys

# No GPU on documentation builders: CUDA kernels must compile against Numba's
# simulator, which is chosen when numba is first imported. Keep this line
# above anything that may import numba (pysketch, autodoc, doctest).
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import pysketch  # noqa: E402

project = "pysketch"
author = "the pysketch developers"
copyright = "the pysketch developers"  # noqa: A001
release = pysketch.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
default_role = "code"

# -- autodoc / autosummary ---------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types

# -- numpydoc ----------------------------------------------------------------
# Class pages list their members through the autosummary class template
# (docs/_templates/autosummary/class.rst), not numpydoc's member tables.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# numpydoc prefixes every citation label defined in a docstring with a hash of
# the object's name, so the same ``.. [CCF02]`` in two module docstrings never
# clashes. A reference to a label that its own docstring does not define (for
# example ``[SIL24]_`` in ``CountSketch.desketch``) resolves to the global
# citation of that label in references.rst.
numpydoc_citation_re = r"[\w-]+"
numpydoc_xref_param_type = False

# -- doctest -----------------------------------------------------------------
# Plain ``>>>`` blocks are tested too (the default); every page imports what
# it uses itself, so only numpy is set up globally.
doctest_global_setup = """
import os
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
import numpy as np
"""

# -- HTML --------------------------------------------------------------------
html_theme = "alabaster"
html_static_path = []
html_theme_options = {
    "description": "Sketches for communication-efficient distributed training",
    "fixed_sidebar": True,
}
