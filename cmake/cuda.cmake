# cmake/cuda.cmake — the opt-in CUDA backend: `ssm::cuda` (the headers in include/ssm/cuda,
# CUDA runtime, cuBLAS) and its tests and benchmarks. Included from the top-level
# CMakeLists.txt after the tests are set up; does nothing unless -DSSM_BUILD_CUDA=ON.
#
# Assumes: targets `ssm` / `ssm::ssm` exist (same directory scope); SSM_BUILD_TESTS and
# SSM_BUILD_BENCHMARKS are defined; enable_testing() has run when tests are on.

get_filename_component(SSM_CUDA_ROOT "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)  # the repository

option(SSM_BUILD_CUDA "Build the CUDA backend's tests and benchmarks (needs nvcc, CUB, cuBLAS)" OFF)

# The device headers ship with the library whether or not this build compiles them.
if(TARGET ssm)
  file(GLOB SSM_CUDA_HEADERS CONFIGURE_DEPENDS "${SSM_CUDA_ROOT}/include/ssm/cuda/*.cuh")
  target_sources(ssm INTERFACE FILE_SET HEADERS BASE_DIRS "${SSM_CUDA_ROOT}/include" FILES ${SSM_CUDA_HEADERS})
endif()

if(SSM_BUILD_CUDA)
  # Defaults that must be in place before the language is enabled.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90 80 CACHE STRING "GPU architectures to compile for")
  endif()
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  if(NOT DEFINED CMAKE_CUDA_HOST_COMPILER AND CMAKE_CXX_COMPILER)
    set(CMAKE_CUDA_HOST_COMPILER "${CMAKE_CXX_COMPILER}")  # one ABI for .cpp and .cu objects
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  # CMake before 3.26 knows nvcc's flags only up to C++17 (nvcc has -std=c++20 since 12.0).
  if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION AND CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.0)
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  endif()
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  set(CMAKE_CUDA_EXTENSIONS OFF)

  # ---- ssm::cuda: what a program that includes <ssm/cuda/*.cuh> links ------------------
  add_library(ssm_cuda INTERFACE)
  add_library(ssm::cuda ALIAS ssm_cuda)
  target_link_libraries(ssm_cuda INTERFACE ssm::ssm CUDA::cudart CUDA::cublas)
  # Eigen (the host side of model.cuh and of the CPU library) under nvcc marks its functions
  # __host__ __device__ and needs --expt-relaxed-constexpr, as Eigen documents for CUDA.
  # 20012: nvcc notes that __host__ __device__ on Eigen's defaulted DenseStorage members is
  # ignored — about Eigen's headers only. (EIGEN_NO_CUDA is not an option: ssm::ScanOp is
  # __host__ __device__ and the CPU scan applies it to Eigen arrays.)
  target_compile_options(ssm_cuda INTERFACE
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr --diag-suppress=20012>)

  # ---- warnings as errors for the project's own CUDA targets -----------------------------
  # (ssm_project_options passes GCC flags unguarded by language, which nvcc rejects.)
  add_library(ssm_cuda_options INTERFACE)
  target_compile_options(ssm_cuda_options INTERFACE
    $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings -Xcompiler=-Wall,-Wextra,-Werror>
    # GCC 12's false -Wrestrict in libstdc++ string concatenation (GCC bug 105329), as in
    # ssm_project_options.
    $<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<CXX_COMPILER_ID:GNU>,$<VERSION_LESS:$<CXX_COMPILER_VERSION>,13>>:-Xcompiler=-Wno-restrict>
    # GCC's false "(may be) used uninitialized" inside its own AVX-512 intrinsics (the
    # `__Y = __Y` idiom of _mm512_undefined_*), reached through the CPU layers' AVX-512
    # kernels in the host code, as in ssm_project_options.
    $<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<CXX_COMPILER_ID:GNU>>:-Xcompiler=-Wno-maybe-uninitialized,-Wno-uninitialized>
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU,Clang>>:-Wall -Wextra -Wpedantic -Werror>
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU>>:-Wno-maybe-uninitialized -Wno-uninitialized>)

  if(SSM_BUILD_TESTS AND EXISTS "${SSM_CUDA_ROOT}/tests/cuda/CMakeLists.txt")
    add_subdirectory("${SSM_CUDA_ROOT}/tests/cuda" "${CMAKE_CURRENT_BINARY_DIR}/tests/cuda")
  endif()
  if(EXISTS "${SSM_CUDA_ROOT}/benchmarks/cuda/CMakeLists.txt")
    add_subdirectory("${SSM_CUDA_ROOT}/benchmarks/cuda" "${CMAKE_CURRENT_BINARY_DIR}/benchmarks/cuda")
  endif()

  # Every CUDA test and benchmark as one target: `--target ssm_cuda_all -j N` compiles them
  # side by side (with Makefiles, targets named one by one are built one after another).
  add_custom_target(ssm_cuda_all)
  foreach(t IN ITEMS ssm_test_cuda_ops ssm_test_cuda_model ssm_bench_cuda_scan ssm_bench_cuda_model)
    if(TARGET ${t})
      add_dependencies(ssm_cuda_all ${t})
    endif()
  endforeach()
endif()
