// The CUDA tests' runner: with no usable CUDA device it says so and exits 77, which CTest
// (SKIP_RETURN_CODE 77) reports as skipped rather than passed or failed.
#if __has_include(<catch2/catch.hpp>)  // v2 first, as in tests/catch.hpp
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#else
#include <catch2/catch_session.hpp>
#endif

#include <cuda_runtime_api.h>

#include <cstdio>

int main(int argc, char* argv[]) {
    int devices = 0;
    const cudaError_t status = cudaGetDeviceCount(&devices);
    if (status != cudaSuccess || devices == 0) {
        std::printf("SKIPPED: no CUDA device (cudaGetDeviceCount: %s)\n",
                    status != cudaSuccess ? cudaGetErrorString(status) : "0 devices");
        std::fflush(stdout);
        return 77;
    }
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
        std::printf("CUDA device 0: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    return Catch::Session().run(argc, argv);
}
