"""The method-table entries of the six Table-1 methods (interface A), as proposed for
``torchbloop.methods.METHODS``. Until they are in the table, ``test_table_suite`` runs the
surgeons' contract suite on them through these entries.

``hyperparameters`` lists what the experiments' sweeps set today (``lam``, ``rho``): the other
settings (``weighted``, GradVac's ``beta``, MetaBalance's ``r``/``beta``, the barrier's
``alpha``/``beta``/``lower_bound``) keep their defaults there. MetaBalance and the original
barrier have no ``lam``, so a ``lam`` grid runs them once per value with the same settings.
"""

from __future__ import annotations

from torchbloop.functional.mgda import MAX_OBJECTIVES
from torchbloop.methods import MethodInfo
from torchbloop.surgeons.agem import AGEM
from torchbloop.surgeons.cosine_gating import CosineGating
from torchbloop.surgeons.gradvac import GradVac
from torchbloop.surgeons.metabalance import MetaBalance
from torchbloop.surgeons.mgda import MGDA
from torchbloop.surgeons.original_dynamic_barrier import OriginalDynamicBarrier

ENTRIES = (
    MethodInfo(
        name="agem",
        label="A-GEM",
        colour="tab:orange",
        factory=AGEM,
        hyperparameters=("lam",),
        max_aux=1,
        description=(
            "the aux gradient without the part that would slow the main loss down "
            "(Chaudhry et al., 2019; main protected)"
        ),
    ),
    MethodInfo(
        name="mgda",
        label="MGDA",
        colour="tab:cyan",
        factory=MGDA,
        hyperparameters=("lam",),
        max_aux=MAX_OBJECTIVES - 1,
        description=(
            "the min-norm point of the gradients: no loss increases, no priority "
            "(Desideri, 2012; Sener and Koltun, 2018)"
        ),
    ),
    MethodInfo(
        name="cosine_gating",
        label="Cosine gating",
        colour="tab:pink",
        factory=CosineGating,
        hyperparameters=("lam",),
        max_aux=1,
        description="the aux gradient used only when it agrees with the main one (Du et al., 2018)",
    ),
    MethodInfo(
        name="gradvac",
        label="GradVac",
        colour="tab:brown",
        factory=GradVac,
        hyperparameters=("lam",),
        max_aux=1,
        description=(
            "the aux gradient turned toward the main one up to a learnt target cosine "
            "(Wang et al., 2021)"
        ),
    ),
    MethodInfo(
        name="metabalance",
        label="MetaBalance",
        colour="tab:olive",
        factory=MetaBalance,
        hyperparameters=(),
        max_aux=1,
        description=(
            "the aux gradient rescaled, tensor by tensor, toward the main one's magnitude "
            "(He et al., 2022)"
        ),
    ),
    MethodInfo(
        name="original_dynamic_barrier",
        label="Dynamic Barrier (original)",
        colour="tab:gray",
        factory=OriginalDynamicBarrier,
        hyperparameters=(),
        max_aux=1,
        description=(
            "descend on the aux loss while a barrier keeps the main loss decreasing "
            "(Gong, Liu and Liu, 2021; needs a lower bound of the main loss)"
        ),
    ),
)
