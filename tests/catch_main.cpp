// The test runner's main, for Catch2 v2 and v3.
#if __has_include(<catch2/catch.hpp>)  // v2 first, as in tests/catch.hpp
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#else
#include <catch2/catch_session.hpp>
#endif

int main(int argc, char* argv[]) { return Catch::Session().run(argc, argv); }
