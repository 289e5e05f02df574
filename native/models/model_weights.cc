#include "models/model_weights.h"

#include <cmath>
#include <mutex>
#include <set>
#include <sstream>

#include "core/error.h"
#include "io/json.h"
#include "io/safetensors.h"

namespace fovea::models {

using io::JsonValue;

namespace {

[[noreturn]] void fail_weights(const std::string & message) { throw Error(ErrorCode::Weights, message); }

std::string quoted(const std::string & s) { return "\"" + s + "\""; }

const JsonValue & empty_object() {
    static const JsonValue v = JsonValue::parse("{}", "empty config");
    return v;
}

// Integral and exactly representable (a double holds every integer up to 2^53).
bool integral(const JsonValue & v, int64_t & out) {
    if (v.is_integer()) {
        out = v.as_integer();
        return true;
    }
    if (v.kind() != JsonValue::Kind::Number) return false;
    const double d = v.as_number();
    if (std::trunc(d) != d || std::fabs(d) > 9007199254740992.0) return false;
    out = int64_t(d);
    return true;
}

const char * const kArchitectures[] = {"deepmask", "sharpmask", "multipathnet"};

std::string expected(const char * want, const JsonValue & v) {
    return std::string("expected ") + want + ", found " + JsonValue::kind_name(v.kind());
}

std::string bad_element(size_t i, const JsonValue & v, const char * want) {
    return "element " + std::to_string(i) + " is " + JsonValue::kind_name(v.kind()) + ", not " + want;
}

}  // namespace

// ---------------------------------------------------------------------------
// Config

Config::Config() : node_(&empty_object()), where_("config") {}

Config::Config(std::shared_ptr<const JsonValue> root, const JsonValue * node, std::string where, std::string path)
    : root_(std::move(root)), node_(node), where_(std::move(where)), path_(std::move(path)) {}

Config Config::parse(const std::string & json, const std::string & where) {
    auto root = std::make_shared<const JsonValue>(JsonValue::parse(json, where));
    if (root->kind() != JsonValue::Kind::Object) {
        fail_weights(where + ": the config is " + JsonValue::kind_name(root->kind()) + ", not a JSON object");
    }
    const JsonValue * node = root.get();
    return Config(std::move(root), node, where, std::string());
}

std::string Config::key_path(const std::string & key) const { return path_.empty() ? key : path_ + "." + key; }

void Config::fail(const std::string & key, const std::string & message) const {
    fail_weights(where_ + ": key " + quoted(key_path(key)) + ": " + message);
}

bool Config::has(const std::string & key) const {
    const JsonValue * v = node_->find(key);
    return v && !v->is_null();
}

const JsonValue & Config::get(const std::string & key) const {
    const JsonValue * v = node_->find(key);
    if (!v || v->is_null()) fail(key, "missing");
    return *v;
}

double Config::number(const std::string & key) const {
    const JsonValue & v = get(key);
    if (v.kind() != JsonValue::Kind::Number) fail(key, expected("a number", v));
    return v.as_number();
}

int64_t Config::integer(const std::string & key) const {
    const JsonValue & v = get(key);
    int64_t out = 0;
    if (!integral(v, out)) {
        if (v.kind() != JsonValue::Kind::Number) fail(key, expected("an integer", v));
        std::ostringstream found;
        found.precision(17);  // %.17g: 2.5, not to_string's 2.500000
        found << v.as_number();
        fail(key, "expected an integer, found " + found.str());
    }
    return out;
}

bool Config::boolean(const std::string & key) const {
    const JsonValue & v = get(key);
    if (v.kind() != JsonValue::Kind::Bool) fail(key, expected("a boolean", v));
    return v.as_bool();
}

std::string Config::string(const std::string & key) const {
    const JsonValue & v = get(key);
    if (v.kind() != JsonValue::Kind::String) fail(key, expected("a string", v));
    return v.as_string();
}

const std::vector<JsonValue> & Config::array(const std::string & key) const {
    const JsonValue & v = get(key);
    if (v.kind() != JsonValue::Kind::Array) fail(key, expected("an array", v));
    return v.items();
}

std::vector<double> Config::numbers(const std::string & key) const {
    std::vector<double> out;
    const auto & items = array(key);
    for (size_t i = 0; i < items.size(); i++) {
        if (items[i].kind() != JsonValue::Kind::Number) {
            fail(key, bad_element(i, items[i], "a number"));
        }
        out.push_back(items[i].as_number());
    }
    return out;
}

std::vector<int64_t> Config::integers(const std::string & key) const {
    std::vector<int64_t> out;
    const auto & items = array(key);
    for (size_t i = 0; i < items.size(); i++) {
        int64_t v = 0;
        if (!integral(items[i], v)) fail(key, "element " + std::to_string(i) + " is not an integer");
        out.push_back(v);
    }
    return out;
}

std::vector<std::string> Config::strings(const std::string & key) const {
    std::vector<std::string> out;
    const auto & items = array(key);
    for (size_t i = 0; i < items.size(); i++) {
        if (items[i].kind() != JsonValue::Kind::String) {
            fail(key, bad_element(i, items[i], "a string"));
        }
        out.push_back(items[i].as_string());
    }
    return out;
}

Config Config::object(const std::string & key) const {
    const JsonValue & v = get(key);
    if (v.kind() != JsonValue::Kind::Object) fail(key, expected("an object", v));
    return Config(root_, &v, where_, key_path(key));
}

std::vector<Config> Config::objects(const std::string & key) const {
    std::vector<Config> out;
    const auto & items = array(key);
    for (size_t i = 0; i < items.size(); i++) {
        if (items[i].kind() != JsonValue::Kind::Object) {
            fail(key, bad_element(i, items[i], "an object"));
        }
        out.push_back(Config(root_, &items[i], where_, key_path(key) + "[" + std::to_string(i) + "]"));
    }
    return out;
}

// ---------------------------------------------------------------------------
// ModelWeights

struct ModelWeights::State {
    std::string path;
    io::SafetensorsFile file;
    Config config;
    std::string architecture;
    // Tensors handed out by get(); guarded because get() is const and a
    // model may be built on any thread.
    mutable std::mutex mutex;
    mutable std::set<std::string> used;
};

ModelWeights ModelWeights::open(const std::string & path) {
    io::SafetensorsFile file = [&] {
        try {
            return io::SafetensorsFile::open(path);
        } catch (const Error & e) {
            if (e.code() != ErrorCode::Weights) throw;
            // Name the file once: the reader's open errors already do.
            const std::string message = e.what();
            fail_weights(message.find(path) == std::string::npos ? path + ": " + message : message);
        }
    }();
    const auto & meta = file.metadata();
    auto it = meta.find(kConfigKey);
    if (it == meta.end()) fail_weights(path + ": no model config (__metadata__[\"" + std::string(kConfigKey) + "\"])");
    Config config = Config::parse(it->second, path + ": " + kConfigKey);

    const int64_t version = config.integer("format_version");
    if (version != kFormatVersion) {
        fail_weights(path + ": format_version " + std::to_string(version) + " is not supported (fovea reads " +
             std::to_string(kFormatVersion) + ")");
    }
    std::string arch = config.string("architecture");
    bool known = false;
    for (const char * a : kArchitectures) known = known || arch == a;
    if (!known) {
        fail_weights(path + ": unknown architecture " + quoted(arch) + " (fovea knows deepmask, sharpmask, multipathnet)");
    }

    auto state = std::shared_ptr<State>(new State{path, std::move(file), std::move(config), std::move(arch), {}, {}});
    return ModelWeights(std::move(state));
}

const Config & ModelWeights::config() const { return state_->config; }
std::string ModelWeights::architecture() const { return state_->architecture; }
const std::string & ModelWeights::path() const { return state_->path; }

bool ModelWeights::has(const std::string & name) const { return state_->file.find(name) != nullptr; }

Shape ModelWeights::shape(const std::string & name) const {
    const io::SafetensorsEntry * e = state_->file.find(name);
    if (!e) fail_weights(state_->path + ": missing tensor " + quoted(name));
    return e->shape;
}

Tensor ModelWeights::get(const std::string & name) const {
    const io::SafetensorsEntry * e = state_->file.find(name);
    if (!e) fail_weights(state_->path + ": missing tensor " + quoted(name));
    using D = io::SafetensorsDType;
    if (e->dtype != D::F32 && e->dtype != D::F16 && e->dtype != D::BF16 && e->dtype != D::F64) {
        fail_weights(state_->path + ": tensor " + quoted(name) + " is " + io::safetensors_dtype_name(e->dtype) +
             ", weights must be floating point (F32)");
    }
    Tensor t = state_->file.load(*e);
    // A NaN or infinite weight would only show up later as NaN scores.
    const float * v = t.f32();
    for (int64_t i = 0; i < t.numel(); i++) {
        if (!std::isfinite(v[i])) {
            fail_weights(state_->path + ": tensor " + quoted(name) + " has a non-finite value at element " +
                         std::to_string(i));
        }
    }
    // Weights are read-only from here on, so backends may keep packed
    // copies of them (Tensor::derived).
    t.mark_constant();
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->used.insert(name);
    return t;
}

Tensor ModelWeights::get(const std::string & name, const Shape & expected) const {
    const Shape actual = shape(name);
    if (actual != expected) {
        fail_weights(state_->path + ": tensor " + quoted(name) + " has shape " + shape_str(actual) +
                     ", the model expects " + shape_str(expected));
    }
    return get(name);
}

std::vector<std::string> ModelWeights::names() const {
    std::vector<std::string> out;
    for (const auto & e : state_->file.tensors()) out.push_back(e.name);
    return out;
}

int64_t ModelWeights::parameter_count() const {
    int64_t n = 0;
    for (const auto & e : state_->file.tensors()) n += shape_numel(e.shape);
    return n;
}

void ModelWeights::check_all_used() const {
    std::vector<std::string> unused;
    {
        std::lock_guard<std::mutex> lock(state_->mutex);
        for (const auto & e : state_->file.tensors()) {
            if (!state_->used.count(e.name)) unused.push_back(e.name);
        }
    }
    if (unused.empty()) return;
    // Name the first few; a wholly wrong file would otherwise give a huge message.
    const size_t shown = std::min<size_t>(unused.size(), 10);
    std::string list;
    for (size_t i = 0; i < shown; i++) list += (i ? ", " : "") + quoted(unused[i]);
    if (shown < unused.size()) list += ", ... (" + std::to_string(unused.size() - shown) + " more)";
    fail_weights(state_->path + ": " + std::to_string(unused.size()) + " tensor(s) not used by the " +
                 state_->architecture + " model: " + list);
}

}  // namespace fovea::models
