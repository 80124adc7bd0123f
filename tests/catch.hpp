// tests/catch.hpp — one include for Catch2 v2 (Debian) and v3 alike. v2's single header is
// taken whenever one is on the include path (v3 has none), so a v2 copy given to the build
// wins over a v3 installed in the system folders.
#pragma once
#if __has_include(<catch2/catch.hpp>)
#include <catch2/catch.hpp>
#else
#include <catch2/catch_all.hpp>
#endif
