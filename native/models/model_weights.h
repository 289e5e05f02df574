// A model weight file: safetensors tensors (tools/reference/NAMING.md) plus
// the model config, a JSON document stored as a string in
// __metadata__["fovea.config"]. Models read both through this class; every
// problem with the file is Error(ErrorCode::Weights) with a message that names
// the file and the tensor or config key.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace fovea::io {
class JsonValue;
}

namespace fovea::models {

// The model config from __metadata__["fovea.config"]: a parsed JSON value.
// Every accessor throws Error(ErrorCode::Weights) naming the key path when the
// key is missing or has the wrong type. A key whose value is null counts as
// missing (the reference writes Python None as null, e.g. "image_pad").
class Config {
  public:
    // An empty object (has() is false for every key).
    Config();

    bool has(const std::string & key) const;
    double number(const std::string & key) const;
    int64_t integer(const std::string & key) const;  // must be integral
    bool boolean(const std::string & key) const;
    std::string string(const std::string & key) const;
    std::vector<double> numbers(const std::string & key) const;
    std::vector<int64_t> integers(const std::string & key) const;
    std::vector<std::string> strings(const std::string & key) const;
    Config object(const std::string & key) const;                // nested object
    std::vector<Config> objects(const std::string & key) const;  // array of objects

    // Parses `json` (a whole JSON object); `where` prefixes error messages.
    static Config parse(const std::string & json, const std::string & where);

    // Throws Error(Weights) "<where>: key "<path.key>": <message>", for a
    // value that has the right type but is out of range or inconsistent.
    [[noreturn]] void fail(const std::string & key, const std::string & message) const;

  private:
    Config(std::shared_ptr<const io::JsonValue> root, const io::JsonValue * node, std::string where,
           std::string path);
    const io::JsonValue & get(const std::string & key) const;
    const std::vector<io::JsonValue> & array(const std::string & key) const;
    std::string key_path(const std::string & key) const;

    std::shared_ptr<const io::JsonValue> root_;  // keeps node_ alive
    const io::JsonValue * node_;
    std::string where_;  // "<file>: fovea.config"
    std::string path_;   // of node_ inside the document ("" at the top)
};

class ModelWeights {
  public:
    static constexpr const char * kConfigKey = "fovea.config";
    static constexpr int64_t kFormatVersion = 1;

    // safetensors + config; Error(Weights) on anything wrong: unreadable file,
    // missing or non-JSON config, config not an object, format_version not 1,
    // architecture missing or not one fovea knows.
    static ModelWeights open(const std::string & path);

    const Config & config() const;
    std::string architecture() const;  // config "architecture"
    bool has(const std::string & name) const;
    // float32 (F16/BF16/F64 tensors are converted); Error(Weights) if missing
    // or not a floating-point tensor. Marks the tensor as used.
    Tensor get(const std::string & name) const;
    // + exact shape check, message names tensor and both shapes.
    Tensor get(const std::string & name, const Shape & expected) const;
    // In file order.
    std::vector<std::string> names() const;
    Shape shape(const std::string & name) const;  // without loading; Error(Weights) if missing
    int64_t parameter_count() const;               // sum of numel of all tensors
    const std::string & path() const;
    // Error(Weights) listing tensors in the file that no model layer used
    // (catches naming drift).
    void check_all_used() const;

  private:
    struct State;
    explicit ModelWeights(std::shared_ptr<State> state) : state_(std::move(state)) {}
    std::shared_ptr<State> state_;
};

}  // namespace fovea::models
