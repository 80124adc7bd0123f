// tests/data_dir.cpp — where the bundled test data lies, the one path the unit tests
// are compiled with (see test_util.hpp).
#include <filesystem>

namespace ssm::test {
std::filesystem::path data_dir() { return SSM_TEST_DATA_DIR; }
}  // namespace ssm::test
