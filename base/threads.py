"""The environment variables that cap a process's BLAS and OpenMP threads (set before torch or
numpy load their thread pools)."""

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
