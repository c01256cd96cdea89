"""adamx: AdamX and the beta2_hat_t schedule family, AdaX, Lion and SophiaG for PyTorch."""

from . import schedules
from .adamx import AdamX
from .adax import AdaX
from .convert import convert_state_dict
from .lion import Lion
from .param_groups import decay_param_groups
from .paths import active_path, fused_supported
from .registry import OPTIMIZERS, create_optimizer
from .schedules import register_beta2_schedule
from .sophia import SophiaG, gnb_hessian_update, sampled_cross_entropy

__all__ = [
    "OPTIMIZERS",
    "AdaX",
    "AdamX",
    "Lion",
    "active_path",
    "fused_supported",
    "SophiaG",
    "convert_state_dict",
    "create_optimizer",
    "decay_param_groups",
    "gnb_hessian_update",
    "register_beta2_schedule",
    "sampled_cross_entropy",
    "schedules",
]
__version__ = "0.1.0"
