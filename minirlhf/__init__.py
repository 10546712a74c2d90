"""minirlhf: RLHF from scratch in pure NumPy, every derivative checked, every claim measured.

Start with ``Tensor`` (the autograd engine), ``minirlhf.functional`` (imported as ``F``) and
``minirlhf.gradcheck``; ``python -m minirlhf --help`` lists the command-line stages.
"""

from minirlhf import functional, ops
from minirlhf.tensor import Tensor, is_grad_enabled, no_grad, unbroadcast

__version__ = "0.1.0"
__all__ = ["Tensor", "no_grad", "is_grad_enabled", "unbroadcast", "ops", "functional"]
