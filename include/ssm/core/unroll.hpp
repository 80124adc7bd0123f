// ssm/core/unroll.hpp — SSM_UNROLL(n): unrolled loops for the CPU kernels' register tiles
// (GCC's pragma; clang reads it too). nvcc's front end, which reads these headers in CUDA
// programs as well, does not know the pragma; there the loops stay rolled.
#pragma once

#if defined(__CUDACC__)
#define SSM_UNROLL(n)
#else
#define SSM_PRAGMA(x) _Pragma(#x)
#define SSM_UNROLL(n) SSM_PRAGMA(GCC unroll n)
#endif
