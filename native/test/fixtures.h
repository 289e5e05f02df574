// Locating the committed test fixtures (test/fixtures/golden: golden model
// weights and reference input/output pairs, see its README.md).
#pragma once

#include <string>

namespace fovea::test {

// The golden fixture directory: $FOVEA_FIXTURES when set (that directory
// itself), otherwise the first test/fixtures/golden found walking up from the
// current directory, so the tests run from the repo root, a build directory
// or the device machine's copy alike. Throws Failure when neither exists.
std::string golden_dir();

// golden_dir() + "/" + file.
std::string golden_path(const std::string & file);

}  // namespace fovea::test
