"""PCGrad against TorchJD's (an independent implementation of Yu et al., 2020); skipped when
TorchJD is not installed (extra ``bench``). The MGDA cross-check is in ``test_mgda.py``.

TorchJD aggregates the rows of a Jacobian symmetrically; with the rows ``g_main`` and
``lam * g_aux`` its PCGrad is ``pi(g_main; g_aux) + lam * pi(g_aux; g_main)`` on conflict and
the plain sum otherwise, which is torchbloop's lam-weighted PCGrad (a projection does not
depend on the scale of the vector projected onto).
"""

from __future__ import annotations

import pytest
import torch

from torchbloop import PCGrad


@pytest.mark.parametrize("scale", [1e-10, 1.0, 1e15])
@pytest.mark.parametrize("conflict", [True, False])
@pytest.mark.parametrize("lam", [0.1, 1.0, 7.0])
def test_pcgrad_equals_torchjd(scale: float, conflict: bool, lam: float) -> None:
    aggregation = pytest.importorskip("torchjd.aggregation")
    gen = torch.Generator().manual_seed(int(lam * 10) + conflict)
    g_main = torch.randn(11, generator=gen, dtype=torch.float64) * scale
    g_aux = torch.randn(11, generator=gen, dtype=torch.float64) * scale * 3.0
    if (float(g_main @ g_aux) < 0) != conflict:
        g_aux = -g_aux
    w = torch.nn.Parameter(torch.zeros(11, dtype=torch.float64))
    ours = PCGrad([w], lam=lam).combine([g_main], [g_aux])[0]
    theirs = aggregation.PCGrad()(torch.stack([g_main, lam * g_aux]))
    assert ours is not None
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12 * float(theirs.norm()))
