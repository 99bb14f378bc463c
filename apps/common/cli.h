// Conventions shared by every needle-* tool: options, logging, model resolution, exit codes.
#pragma once
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <string>

#include "util/result.h"

namespace needle::app {

// Exit codes, the same for every tool (documented in each --help).
enum ExitCode : int {
  kOk = 0,
  kRuntimeError = 1,  // something failed while running (I/O error, disk full, ...)
  kBadInput = 2,      // bad arguments or bad input data (one-line reason on stderr)
};

constexpr const char* kExitCodesHelp =
    "Exit codes: 0 success, 1 runtime failure (I/O, disk full), 2 bad input or usage.";

struct CommonOptions {
  std::string model;       // -m/--model, falls back to $NEEDLE_MODEL, then the shipped default
  int threads = 0;         // -t/--threads, 0 = number of cores
  int verbosity = 0;       // -v (repeatable) raises, -q lowers
  bool quiet = false;
};

// Adds -t/--threads, -v/--verbose, -q/--quiet; `with_model` also adds -m/--model.
void add_common_options(CLI::App& app, CommonOptions& opt, bool with_model = true);
// Sets up logging to stderr from the options. Call after parsing.
void init_logging(const CommonOptions& opt);
// Resolves the model path: -m, then NEEDLE_MODEL, then data/needle-default.needle next to the
// install (or source tree). Error with a clear message when none exists.
Result<std::string> resolve_model(const CommonOptions& opt);
int resolved_threads(const CommonOptions& opt);

// Prints "<tool>: error: <msg>" on one line to stderr and returns `code`.
int fail(const std::string& tool, const std::string& msg, int code = kBadInput);

// Runs CLI11 parsing with the shared exit-code conventions; returns -1 to continue.
int parse(CLI::App& app, int argc, char** argv);

}  // namespace needle::app
