// parallel_for covers [0, n) exactly once at any thread count and rethrows errors.
#include <atomic>
#include <vector>

#include "ssm/core/threads.hpp"
#include "test_util.hpp"

namespace test_threads {

TEST_CASE("parallel_for visits every index exactly once", "[threads]") {
    const ssm::test::MultiThreadCheck threaded("parallel_for at 2, 3 and 8 threads");
    for (int threads : {1, 2, 3, 8}) {
        ssm::set_num_threads(threads);
        for (ssm::index n : {0, 1, 2, 7, 100, 1001}) {
            std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
            ssm::parallel_for(n, 1, [&](ssm::index b, ssm::index e) {
                for (ssm::index i = b; i < e; ++i) hits[static_cast<std::size_t>(i)]++;
            });
            for (auto& h : hits) REQUIRE(h.load() == 1);
        }
    }
    ssm::set_num_threads(0);
    threaded.verify();
    CHECK(ssm::num_threads() >= 1);
}

TEST_CASE("parallel_for rethrows an ssm::Error from a worker", "[threads]") {
    const ssm::test::MultiThreadCheck threaded("parallel_for rethrowing at 2 threads");
    ssm::set_num_threads(2);
    const auto msg = ssm::test::error_of([] {
        ssm::parallel_for(100, 1, [](ssm::index b, ssm::index e) {
            if (e == 100) ssm::fail("worker failed at ", b);
        });
    });
    ssm::set_num_threads(0);
    threaded.verify();
    CHECK(msg.find("worker failed") != std::string::npos);
    CHECK(ssm::test::error_of([] { ssm::set_num_threads(-1); }).find("-1") != std::string::npos);
}

}  // namespace test_threads
