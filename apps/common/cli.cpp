#include "common/cli.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <thread>

namespace needle::app {

void add_common_options(CLI::App& app, CommonOptions& opt, bool with_model) {
  if (with_model)
    app.add_option("-m,--model", opt.model,
                   "Model file (.needle); default: $NEEDLE_MODEL, then the shipped default model");
  app.add_option("-t,--threads", opt.threads, "Worker threads (default: number of cores)")
      ->check(CLI::Range(0, 1024));
  app.add_flag("-v,--verbose", opt.verbosity, "More log output on stderr (repeatable)");
  app.add_flag("-q,--quiet", opt.quiet, "Only errors on stderr");
  app.footer(kExitCodesHelp);
}

void init_logging(const CommonOptions& opt) {
  // A write past `ulimit -f` then fails with EFBIG (reported, temp file removed) instead of
  // killing the process with SIGXFSZ.
  std::signal(SIGXFSZ, SIG_IGN);
  auto logger = spdlog::stderr_color_mt("needle");
  logger->set_pattern("%^[%l]%$ %v");
  spdlog::set_default_logger(logger);
  if (opt.quiet)
    spdlog::set_level(spdlog::level::err);
  else if (opt.verbosity >= 2)
    spdlog::set_level(spdlog::level::trace);
  else if (opt.verbosity == 1)
    spdlog::set_level(spdlog::level::debug);
  else
    spdlog::set_level(spdlog::level::info);
}

static std::filesystem::path exe_dir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path() : p.parent_path();
}

Result<std::string> resolve_model(const CommonOptions& opt) {
  if (!opt.model.empty()) return opt.model;
  if (const char* env = std::getenv("NEEDLE_MODEL"); env && *env) return std::string(env);
  // Shipped default: <prefix>/share/needle/needle-default.needle, or the source tree's data/.
  std::filesystem::path dir = exe_dir();
  for (auto cand : {dir / "../share/needle/needle-default.needle",
                    dir / "../../data/needle-default.needle",
                    std::filesystem::path(NEEDLE_SOURCE_DIR) / "data/needle-default.needle"}) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(cand, ec)) return cand.lexically_normal().string();
  }
  return make_error(
      "no model given and no default model found: pass -m MODEL.needle or set NEEDLE_MODEL "
      "(data/needle-default.needle is not present in this build)");
}

int resolved_threads(const CommonOptions& opt) {
  if (opt.threads > 0) return opt.threads;
  unsigned n = std::thread::hardware_concurrency();
  return n ? (int)n : 1;
}

int fail(const std::string& tool, const std::string& msg, int code) {
  fmt::print(stderr, "{}: error: {}\n", tool, msg);
  return code;
}

int parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "{}: error: {}\n", app.get_name(), e.what());
    return kBadInput;
  }
  return -1;
}

}  // namespace needle::app
