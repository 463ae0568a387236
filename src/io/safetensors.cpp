// Validating safetensors reader and deterministic writer (see safetensors.hpp).
#include "kvbits/safetensors.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "kvbits/status.hpp"

namespace kvbits {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;
// Root object -> tensor object -> shape array: anything nested deeper is not a safetensors
// header, and refusing it early keeps hostile input from building deep trees.
constexpr int kMaxJsonDepth = 2;
constexpr const char* kMetadataKey = "__metadata__";

[[noreturn]] void corrupt(const std::string& what) {
  fail(StatusCode::corrupt_data, "safetensors: " + what);
}

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Multiplies with an overflow check; false when a * b does not fit in 64 bits.
bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

bool dtype_from_name(const std::string& s, DType* out) {
  if (s == "F32") *out = DType::f32;
  else if (s == "F16") *out = DType::f16;
  else if (s == "BF16") *out = DType::bf16;
  else return false;
  return true;
}

const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
  }
  fail(StatusCode::invalid_argument, "safetensors: unknown dtype " + std::to_string(int(t)));
}

// Parses the header, refusing duplicate keys (nlohmann would silently keep the last one) and
// nesting deeper than a safetensors header has.
json parse_header_json(const uint8_t* begin, const uint8_t* end) {
  std::vector<std::set<std::string>> keys_per_object;
  json::parser_callback_t guard = [&](int depth, json::parse_event_t event, json& value) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth > kMaxJsonDepth) corrupt("header JSON is nested too deeply");
        if (event == json::parse_event_t::object_start) keys_per_object.emplace_back();
        break;
      case json::parse_event_t::object_end: keys_per_object.pop_back(); break;
      case json::parse_event_t::key: {
        const std::string& key = value.get_ref<const std::string&>();
        if (!keys_per_object.back().insert(key).second) corrupt("duplicate key '" + key + "' in header");
        break;
      }
      default: break;
    }
    return true;
  };
  try {
    return json::parse(begin, end, guard);
  } catch (const json::exception& e) {
    corrupt(std::string("header is not valid JSON: ") + e.what());
  }
}

uint64_t as_u64(const json& v, const std::string& what) {
  if (!v.is_number_unsigned()) corrupt(what + " must be a non-negative integer");
  return v.get<uint64_t>();
}

struct Entry {
  std::string name;
  TensorView view;
  uint64_t begin = 0, end = 0;
};

Entry parse_tensor_entry(const std::string& name, const json& desc, uint64_t data_size) {
  const std::string where = "tensor '" + name + "'";
  if (name.empty()) corrupt("empty tensor name");
  if (!desc.is_object()) corrupt(where + ": entry must be an object");
  for (const auto& item : desc.items())
    if (item.key() != "dtype" && item.key() != "shape" && item.key() != "data_offsets")
      corrupt(where + ": unknown field '" + item.key() + "'");
  if (!desc.contains("dtype") || !desc.contains("shape") || !desc.contains("data_offsets"))
    corrupt(where + ": needs dtype, shape and data_offsets");

  const json& dtype = desc["dtype"];
  if (!dtype.is_string()) corrupt(where + ": dtype must be a string");
  Entry e;
  e.name = name;
  const std::string dtype_str = dtype.get<std::string>();
  if (!dtype_from_name(dtype_str, &e.view.dtype))
    fail(StatusCode::unsupported, "safetensors: " + where + " has dtype " + dtype_str +
                                      "; only F32, F16 and BF16 are supported");

  const json& shape = desc["shape"];
  if (!shape.is_array()) corrupt(where + ": shape must be an array");
  uint64_t numel = 1;
  for (const json& d : shape) {
    const uint64_t n = as_u64(d, where + ": shape entry");
    if (!checked_mul(numel, n, &numel)) corrupt(where + ": element count overflows");
    e.view.shape.push_back(n);
  }
  uint64_t bytes = 0;
  if (!checked_mul(numel, dtype_size(e.view.dtype), &bytes)) corrupt(where + ": byte count overflows");

  const json& offsets = desc["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) corrupt(where + ": data_offsets must be [begin, end]");
  e.begin = as_u64(offsets[0], where + ": data_offsets[0]");
  e.end = as_u64(offsets[1], where + ": data_offsets[1]");
  if (e.begin > e.end) corrupt(where + ": data_offsets begin > end");
  if (e.end > data_size)
    corrupt(where + ": data_offsets end " + std::to_string(e.end) + " is past the data section (" +
            std::to_string(data_size) + " bytes)");
  if (e.end - e.begin != bytes)
    corrupt(where + ": data_offsets span " + std::to_string(e.end - e.begin) + " bytes, but shape and dtype need " +
            std::to_string(bytes));
  e.view.bytes = size_t(bytes);
  return e;
}

std::map<std::string, std::string> parse_metadata(const json& meta) {
  if (!meta.is_object()) corrupt("__metadata__ must be an object");
  std::map<std::string, std::string> out;
  for (const auto& item : meta.items()) {
    if (!item.value().is_string()) corrupt("__metadata__ value of '" + item.key() + "' must be a string");
    out.emplace(item.key(), item.value().get<std::string>());
  }
  return out;
}

void check_no_overlap(const std::vector<Entry>& all) {
  std::vector<const Entry*> entries;
  for (const Entry& e : all) entries.push_back(&e);
  std::sort(entries.begin(), entries.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  const Entry* prev = nullptr;  // last entry that occupies bytes
  for (const Entry* e : entries) {
    if (e->begin == e->end) continue;  // empty tensors occupy nothing
    if (prev && e->begin < prev->end)
      corrupt("tensors '" + prev->name + "' and '" + e->name + "' overlap");
    prev = e;
  }
}

}  // namespace

uint64_t TensorView::numel() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;  // validated not to overflow when parsed
  return n;
}

SafetensorsFile SafetensorsFile::load(const std::string& path) {
  // A directory opens as a stream too, and then reports a nonsense size.
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    fail(StatusCode::io_error, "safetensors: '" + path + "' is not a readable regular file");
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail(StatusCode::io_error, "safetensors: cannot open '" + path + "'");
  const std::streamoff size = in.tellg();
  if (size < 0) fail(StatusCode::io_error, "safetensors: cannot size '" + path + "'");
  std::vector<uint8_t> bytes;
  try {
    bytes.resize(static_cast<size_t>(size));
  } catch (const std::bad_alloc&) {
    fail(StatusCode::out_of_memory, "safetensors: cannot hold '" + path + "' (" + std::to_string(size) + " bytes)");
  }
  in.seekg(0);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), size))
    fail(StatusCode::io_error, "safetensors: cannot read '" + path + "'");
  try {
    return parse(std::move(bytes));
  } catch (const Error& e) {
    fail(e.code(), std::string(e.what()) + " (file '" + path + "')");
  }
}

SafetensorsFile SafetensorsFile::parse(std::vector<uint8_t> bytes) {
  if (bytes.size() < 8) corrupt("file of " + std::to_string(bytes.size()) + " bytes has no header length");
  const uint64_t header_len = read_le64(bytes.data());
  if (header_len > kMaxHeaderBytes) corrupt("header length " + std::to_string(header_len) + " exceeds 100 MB");
  if (header_len > bytes.size() - 8)
    corrupt("header length " + std::to_string(header_len) + " exceeds the " + std::to_string(bytes.size() - 8) +
            " bytes after it");
  const size_t data_begin = 8 + size_t(header_len);
  const json header = parse_header_json(bytes.data() + 8, bytes.data() + data_begin);
  if (!header.is_object()) corrupt("header must be a JSON object");

  SafetensorsFile file;
  const uint64_t data_size = bytes.size() - data_begin;
  std::vector<Entry> entries;
  for (const auto& item : header.items()) {
    if (item.key() == kMetadataKey) file.metadata_ = parse_metadata(item.value());
    else entries.push_back(parse_tensor_entry(item.key(), item.value(), data_size));
  }
  check_no_overlap(entries);

  // Keep only the data section, so it starts at the allocation's (max_align_t) alignment
  // whatever the header length; tensor pointers are then as aligned as their offsets.
  bytes.erase(bytes.begin(), bytes.begin() + std::ptrdiff_t(data_begin));
  file.bytes_ = std::move(bytes);
  for (Entry& e : entries) {
    e.view.data = file.bytes_.data() + e.begin;
    file.tensors_.emplace(e.name, std::move(e.view));
  }
  return file;
}

const TensorView& SafetensorsFile::tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail(StatusCode::not_found, "safetensors: no tensor named '" + name + "'");
  return it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorToWrite*> sorted;
  for (const auto& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->name < b->name; });

  json header = json::object();
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (size_t i = 0; i < sorted.size(); ++i) {
    const TensorToWrite& t = *sorted[i];
    const std::string where = "safetensors: tensor '" + t.name + "'";
    if (t.name.empty() || t.name == kMetadataKey) fail(StatusCode::invalid_argument, where + ": reserved or empty name");
    if (i > 0 && sorted[i - 1]->name == t.name) fail(StatusCode::invalid_argument, where + ": duplicate name");
    uint64_t numel = 1, bytes = 0;
    for (uint64_t d : t.shape)
      if (!checked_mul(numel, d, &numel)) fail(StatusCode::invalid_argument, where + ": element count overflows");
    if (!checked_mul(numel, dtype_size(t.dtype), &bytes) || offset + bytes < offset)
      fail(StatusCode::invalid_argument, where + ": byte count overflows");
    if (bytes != 0 && t.data == nullptr) fail(StatusCode::null_pointer, where + ": data is null");
    header[t.name] = {{"dtype", safetensors_dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    sizes.push_back(bytes);
    offset += bytes;
  }
  if (!metadata.empty()) header[kMetadataKey] = metadata;  // std::map: already sorted

  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    fail(StatusCode::invalid_argument, std::string("safetensors: cannot encode header: ") + e.what());
  }
  // Pad with spaces (valid JSON whitespace) so the data section starts 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');

  uint8_t len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = uint8_t(uint64_t(text.size()) >> (8 * i));

  // Write a sibling temp file and rename it over the target: a failed write never leaves a
  // half-written dump under the final name.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(StatusCode::io_error, "safetensors: cannot create '" + tmp + "'");
    out.write(reinterpret_cast<const char*>(len_bytes), 8);
    out.write(text.data(), std::streamsize(text.size()));
    for (size_t i = 0; i < sorted.size(); ++i)
      if (sizes[i] != 0) out.write(static_cast<const char*>(sorted[i]->data), std::streamsize(sizes[i]));
    out.flush();
    if (!out) {
      out.close();
      std::remove(tmp.c_str());
      fail(StatusCode::io_error, "safetensors: write to '" + tmp + "' failed");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    fail(StatusCode::io_error, "safetensors: cannot rename '" + tmp + "' to '" + path + "'");
  }
}

}  // namespace kvbits
