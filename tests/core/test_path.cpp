// path_kind: what a user-given path names, and a path the system cannot inspect (a name
// too long, a loop of links) reported as an ssm::Error naming it by every loader that
// takes a path, never as a std::filesystem exception.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "ssm/core/path.hpp"
#include "ssm/io/checkpoint.hpp"
#include "ssm/io/config.hpp"
#include "ssm/train/init.hpp"
#include "test_util.hpp"

namespace test_path {

namespace fs = std::filesystem;

TEST_CASE("path_kind: missing, file, folder and other", "[path]") {
    const auto dir = ssm::test::scratch_dir("path-kind");
    std::ofstream(dir / "file") << "x";
    REQUIRE(::mkfifo((dir / "pipe").c_str(), 0600) == 0);
    CHECK(ssm::path_kind(dir / "absent") == ssm::PathKind::missing);
    CHECK(ssm::path_kind(dir / "file" / "below") == ssm::PathKind::missing);  // a file as a folder
    CHECK(ssm::path_kind(dir / "file") == ssm::PathKind::file);
    CHECK(ssm::path_kind(dir) == ssm::PathKind::folder);
    CHECK(ssm::path_kind(dir / "pipe") == ssm::PathKind::other);
    // A config that is a named pipe blocked the read; now it is refused by name.
    const auto msg = ssm::test::error_of([&] { (void)ssm::MambaConfig::load(dir / "pipe"); });
    CHECK(msg.find("pipe: not a regular file") != std::string::npos);
    fs::create_symlink(dir / "file", dir / "link");
    CHECK(ssm::path_kind(dir / "link") == ssm::PathKind::file);
    CHECK(ssm::path_exists(dir / "link"));
    CHECK_FALSE(ssm::is_folder(dir / "link"));
    CHECK(ssm::is_folder(dir));
    fs::remove_all(dir);
}

TEST_CASE("a path that cannot be inspected is an ssm::Error naming it in every loader", "[path]") {
    const auto dir = ssm::test::scratch_dir("path-bad");
    // A loop of links (ELOOP) and a name longer than the file system allows (ENAMETOOLONG):
    // the standard library's throwing queries raised std::filesystem_error for both.
    fs::create_symlink(dir / "b", dir / "a");
    fs::create_symlink(dir / "a", dir / "b");
    const fs::path paths_bad[] = {dir / "a", dir / std::string(300, 'n')};
    for (const auto& p : paths_bad) {
        INFO(p.string());
        const auto expect = [&](auto&& f) {
            const auto msg = ssm::test::error_of(f);
            INFO(msg);
            CHECK(msg.find(p.filename().string()) != std::string::npos);
            CHECK(msg.find("cannot inspect") != std::string::npos);
        };
        expect([&] { (void)ssm::path_kind(p); });
        expect([&] { (void)ssm::Checkpoint::open(p); });
        expect([&] { (void)ssm::MambaConfig::load(p); });
        expect([&] { (void)ssm::train::InitOptions::from_config(p, 1); });
    }
    // Inside a folder, the looping entry is met while looking for the checkpoint's files.
    fs::create_symlink(dir / "model.safetensors", dir / "model.safetensors.index.json");
    fs::create_symlink(dir / "model.safetensors.index.json", dir / "model.safetensors");
    const auto msg = ssm::test::error_of([&] { (void)ssm::Checkpoint::open(dir); });
    INFO(msg);
    CHECK(msg.find("model.safetensors") != std::string::npos);
    fs::remove_all(dir);
}

}  // namespace test_path
