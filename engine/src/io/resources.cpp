// Resource lookup (resources.h).
#include "mambascope/resources.h"

#include <unistd.h>

#include <cstdlib>
#include <string>
#include <system_error>
#include <vector>

#include "mambascope/error.h"

namespace mambascope {

namespace fs = std::filesystem;

static fs::path exe_dir() {
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    return ec ? fs::path() : exe.parent_path();
}

std::filesystem::path find_resource(std::string_view relative) {
    std::vector<fs::path> roots;
    if (const char* env = std::getenv("MAMBASCOPE_RESOURCES"); env && *env) roots.emplace_back(env);
    if (const fs::path dir = exe_dir(); !dir.empty()) {
        roots.push_back(dir / ".." / "share" / "mambascope");
        roots.push_back(dir / ".." / "resources");
        roots.push_back(dir / ".." / ".." / "resources");
    }
#ifdef MAMBASCOPE_SOURCE_RESOURCES_DIR
    roots.emplace_back(MAMBASCOPE_SOURCE_RESOURCES_DIR);
#endif
    std::string tried;
    for (const auto& root : roots) {
        const fs::path p = root / fs::path(std::string(relative));
        std::error_code ec;
        if (fs::exists(p, ec)) return p.lexically_normal();
        tried += "\n    " + p.lexically_normal().string();
    }
    throw Error("resource '" + std::string(relative) + "' not found; looked in:" + tried,
                "set MAMBASCOPE_RESOURCES to the folder that holds Mambascope's resources/");
}

}  // namespace mambascope
