#!/bin/bash
# The comparison sweeps of issue 12, one after the other, on one core.
cd /work/wt/table1
export OMP_NUM_THREADS=1
TB=.venv/bin/torchbloop
OUT=docs/results/comparison
ALL="bloop mixed pcgrad dynamic_barrier agem mgda cosine_gating gradvac metabalance original_dynamic_barrier"
t() { echo "== $(date -u +%T) $*"; /usr/bin/time -f "wall %e s, user %U s, sys %S s" nice -n 5 "$@"; echo "== $(date -u +%T) rc=$?"; }
t $TB run smooth_mlp_mnist --budget default --methods mixed --lams 0 --seeds 0 1 2 --out $OUT
t $TB run smooth_mlp_mnist --budget default --methods $ALL --lams 0.001 0.01 0.0316 0.1 0.316 1 --seeds 0 1 2 --out $OUT
t $TB run quadratic --budget smoke --methods mixed --lams 0 --seeds 0 1 2 --out $OUT
t $TB run quadratic --budget smoke --methods $ALL --lams 0.001 0.01 0.1 1 10 100 --seeds 0 1 2 --out $OUT
echo DONE
