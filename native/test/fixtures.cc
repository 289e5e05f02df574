#include "test/fixtures.h"

#include <cstdlib>
#include <filesystem>

#include "test/harness.h"

namespace fovea::test {

std::string golden_dir() {
    namespace fs = std::filesystem;
    if (const char * env = std::getenv("FOVEA_FIXTURES"); env != nullptr && *env != '\0') {
        if (!fs::is_directory(env)) throw Failure(std::string("FOVEA_FIXTURES=") + env + " is not a directory");
        return env;
    }
    std::error_code ec;
    fs::path dir = fs::current_path(ec);
    if (ec) throw Failure("cannot read the current directory: " + ec.message());
    for (;;) {
        fs::path candidate = dir / "test" / "fixtures" / "golden";
        if (fs::is_directory(candidate, ec)) return candidate.string();
        if (!dir.has_parent_path() || dir.parent_path() == dir) break;
        dir = dir.parent_path();
    }
    throw Failure("test/fixtures/golden not found above the current directory; set FOVEA_FIXTURES");
}

std::string golden_path(const std::string & file) { return golden_dir() + "/" + file; }

}  // namespace fovea::test
