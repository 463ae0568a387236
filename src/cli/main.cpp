// kvbits — command-line tool: calibrate a bit plan, inspect it, verify it, evaluate quality.
#include <CLI/CLI.hpp>

#include <iostream>
#include <string>

#include "cli/commands.hpp"
#include "kvbits/status.hpp"
#include "kvbits_config.h"

int main(int argc, char** argv) {
  CLI::App app{"kvbits " KVB_VERSION_STRING " — low-bit KV-cache bit plans (Block-GTQ)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "kvbits " KVB_VERSION_STRING);
  kvbits::cli::CalibrateArgs cal;
  kvbits::cli::InspectArgs ins;
  kvbits::cli::VerifyArgs ver;
  kvbits::cli::EvalArgs evl;
  kvbits::cli::add_calibrate(app, cal);
  kvbits::cli::add_inspect(app, ins);
  kvbits::cli::add_verify(app, ver);
  kvbits::cli::add_eval(app, evl);
  evl.command_line = "kvbits";
  for (int i = 1; i < argc; ++i) evl.command_line += std::string(" ") + argv[i];
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (app.got_subcommand("calibrate")) return kvbits::cli::run_calibrate(cal);
    if (app.got_subcommand("inspect")) return kvbits::cli::run_inspect(ins);
    if (app.got_subcommand("verify")) return kvbits::cli::run_verify(ver);
    if (app.got_subcommand("eval")) return kvbits::cli::run_eval(evl);
  } catch (const kvbits::Error& e) {
    std::cerr << "kvbits: error (" << kvbits::status_name(e.code()) << "): " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "kvbits: error: " << e.what() << "\n";
    return 1;
  }
  return 2;
}
