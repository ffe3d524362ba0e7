#!/bin/bash
# session 14: the seeds' table at $1 (vector rmsnorm, q4 blas from 96 rows)
echo "$1" > COMMIT
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
SHARED=.gpu/shared PREBUILT=.gpu/prebuilt.tar.xz SEED_OUT=$OUT bash bench/seed-table.sh > $OUT/seed.log 2>&1; echo seed-rc=$?
cat $OUT/seed.log | tail -30
cd /tmp/seed-table && tar czf $OUT/logs.tgz *.log *.csv 2>/dev/null; ls $OUT
