// kvbits — reading and writing plan files: the public entry points of plan_format.hpp.
#include "kvbits/plan_format.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <new>
#include <system_error>

#include "kvbits/status.hpp"
#include "plan/plan_container.hpp"
#include "plan/plan_sections.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace kvbits {

namespace {

using FilePtr = std::unique_ptr<std::FILE, int (*)(std::FILE*)>;

[[noreturn]] void io_fail(const std::string& what, const std::string& path, int err) {
  fail(StatusCode::io_error, what + " '" + path + "': " + std::strerror(err));
}

}  // namespace

std::vector<uint8_t> serialize_plan(const Plan& plan) {
  plan.validate();
  return plan_file::write_container(plan_sections::encode_sections(plan));
}

Plan parse_plan(const uint8_t* data, size_t size) {
  try {
    Plan plan = plan_sections::decode_sections(plan_file::read_container(data, size, plan_sections::section_ids()));
    plan.validate();
    return plan;
  } catch (const std::bad_alloc&) {
    // Sizes are bounded before allocation; this is a genuinely full machine.
    fail(StatusCode::out_of_memory, "plan file: out of memory decoding a " + std::to_string(size) + "-byte plan");
  }
}

Plan load_plan_file(const std::string& path) {
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) fail(StatusCode::io_error, "plan: cannot read '" + path + "': " + ec.message());
  if (size > plan_file::kMaxFileSize)
    fail(StatusCode::out_of_memory, "plan: '" + path + "' is " + std::to_string(size) +
                                        " bytes, more than the format's limit of 2^31");
  FilePtr file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) io_fail("plan: cannot open", path, errno);
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  if (std::fread(bytes.data(), 1, bytes.size(), file.get()) != bytes.size())
    fail(StatusCode::io_error, "plan: short read on '" + path + "'");
  return parse_plan(bytes.data(), bytes.size());
}

void save_plan_file(const Plan& plan, const std::string& path) {
  const std::vector<uint8_t> bytes = serialize_plan(plan);  // an invalid plan never touches the disk
  const std::string tmp = path + ".tmp";
  {
    FilePtr file(std::fopen(tmp.c_str(), "wb"), &std::fclose);
    if (!file) io_fail("plan: cannot create", tmp, errno);
    bool ok = std::fwrite(bytes.data(), 1, bytes.size(), file.get()) == bytes.size() && std::fflush(file.get()) == 0;
    int err = ok ? 0 : errno;
#if defined(__unix__) || defined(__APPLE__)
    if (ok && ::fsync(fileno(file.get())) != 0) {  // the rename must not expose unwritten data
      ok = false;
      err = errno;
    }
#endif
    if (std::fclose(file.release()) != 0 && ok) {
      ok = false;
      err = errno;
    }
    if (!ok) {
      std::remove(tmp.c_str());
      io_fail("plan: cannot write", tmp, err ? err : EIO);
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    fail(StatusCode::io_error, "plan: cannot rename '" + tmp + "' to '" + path + "': " + ec.message());
  }
}

}  // namespace kvbits
