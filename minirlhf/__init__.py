"""minirlhf: RLHF from scratch in pure NumPy, every derivative checked, every claim measured.

Start with ``Tensor`` (the autograd engine), ``minirlhf.autograd.functional`` (imported as
``F``) and ``minirlhf.autograd.gradcheck``; ``python -m minirlhf --help`` lists the
command-line stages.
"""

from minirlhf.autograd import functional, ops
from minirlhf.autograd.memory import reuse_freed_memory
from minirlhf.autograd.tensor import Tensor, is_grad_enabled, no_grad, unbroadcast

reuse_freed_memory()  # see minirlhf/memory.py: a large speed-up where page faults are costly

__version__ = "0.1.0"
__all__ = ["Tensor", "no_grad", "is_grad_enabled", "unbroadcast", "ops", "functional"]
